"""The paper architectures: where each teacher is split and how its student heads are shaped.

Everything architecture-specific lives in one `Architecture` record per model, so adding a model
means adding one record (the manual: how-to, adding an architecture). A record describes two kinds of
student head: HND's bottleneck head at `split_module` (also GHND's, which distills `ghnd_stages` too)
and, where one is designed, an Entropic Student head (`entropic`) with its own split module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models as tv_models


def _densenet_pre_classifier(x: torch.Tensor) -> torch.Tensor:
    # DenseNet applies ReLU and global pooling functionally between `features` and `classifier`.
    return torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(x, 1)


def _inception_transform_input(x: torch.Tensor) -> torch.Tensor:
    # torchvision's ImageNet Inception-v3 expects inputs re-normalized from ImageNet mean/std to
    # mean 0.5 / std 0.5 (its `transform_input=True`); the teacher head keeps doing so after the split.
    channels = [
        x[:, index : index + 1] * (std / 0.5) + (mean - 0.5) / 0.5
        for index, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    ]
    return torch.cat(channels, 1)


@dataclass(frozen=True)
class DecoderLayout:
    """Decoder convolutions as (out_channels, kernel, stride, padding) plus the final average pool."""

    convs: tuple[tuple[int, int, int, int], ...]
    pool_kernel: int
    pool_stride: int


@dataclass(frozen=True)
class EntropicLayout:
    """An Entropic Student head: encoder convs (each followed by GDN1) down to the latent, the latent
    conv, decoder convs (each followed by inverse GDN1) and the output conv back to the teacher's
    tensor at `split_module`. Convs are bias-free, given as (out_channels, kernel, stride, padding);
    the latent and output convs as (kernel, stride, padding), their channels being the latent's and
    `split_channels`. `distillation_stages`: the later teacher stages stage 1 also distills."""

    split_module: str
    split_channels: int
    encoder_convs: tuple[tuple[int, int, int, int], ...]
    latent_conv: tuple[int, int, int]
    decoder_convs: tuple[tuple[int, int, int, int], ...]
    output_conv: tuple[int, int, int]
    distillation_stages: tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    """One teacher architecture and the bottleneck-injected student built on it.

    `stages` lists the teacher's modules by their torchvision names in forward order; the teacher head
    runs them up to and including `split_module`, the tail the rest. `pre_ops` are the functional
    operations torchvision's forward applies right before a stage (e.g. flatten before `fc`).
    `ghnd_stages` are the tail stages whose outputs GHND distills besides the split tensor (the
    authors' torchdistill configs); `entropic` is the Entropic Student head, None where none is designed.
    """

    name: str
    builder: Callable[..., nn.Module]
    stages: tuple[str, ...]
    split_module: str
    split_channels: int
    encoder_first_padding: int
    encoder_pool_padding: int
    decoder: DecoderLayout
    input_size: int
    resize_size: int
    pre_ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    builder_kwargs: dict = field(default_factory=dict)
    # Applied before the first stage when the torchvision teacher has `transform_input=True`.
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ghnd_stages: tuple[str, ...] = ()
    entropic: EntropicLayout | None = None

    @property
    def head_stages(self) -> tuple[str, ...]:
        return self.stages_through(self.split_module)

    @property
    def tail_stages(self) -> tuple[str, ...]:
        return self.stages_after(self.split_module)

    def stages_through(self, module: str) -> tuple[str, ...]:
        """The stages up to and including `module` (a head split there)."""
        return self.stages[: self.stages.index(module) + 1]

    def stages_after(self, module: str) -> tuple[str, ...]:
        """The stages after `module` (the tail of a split there)."""
        return self.stages[self.stages.index(module) + 1 :]


_DENSENET_STAGES = tuple(
    f"features.{name}"
    for name in (
        "conv0",
        "norm0",
        "relu0",
        "pool0",
        "denseblock1",
        "transition1",
        "denseblock2",
        "transition2",
        "denseblock3",
        "transition3",
        "denseblock4",
        "norm5",
    )
) + ("classifier",)

_DENSENET_DECODER = DecoderLayout(
    convs=((512, 2, 1, 1), (512, 2, 1, 1), (256, 2, 1, 0), (256, 2, 1, 0), (256, 2, 1, 0)),
    pool_kernel=2,
    pool_stride=2,
)


# Section 6 of the successors' reference: the Entropic Student's design (GDN1, strides down to the
# split) at HND's DenseNet split, stride 16: a 24 x 14 x 14 latent at 224, 24 x 2 x 2 at 32.
_DENSENET_ENTROPIC = EntropicLayout(
    split_module="features.transition2",
    split_channels=256,
    encoder_convs=((96, 5, 2, 2), (48, 5, 2, 2), (48, 5, 2, 2)),
    latent_conv=(5, 2, 2),
    decoder_convs=((512, 3, 1, 1), (256, 2, 1, 1)),
    output_conv=(2, 1, 0),
    distillation_stages=("features.transition3", "features.denseblock4"),
)

_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
_RESNET_DECODER = DecoderLayout(
    convs=((512, 2, 1, 1), (512, 2, 1, 1), (512, 2, 1, 0), (512, 2, 1, 0)),
    pool_kernel=2,
    pool_stride=1,
)
# The papers' ResNet-50 head (sc2bench FPBasedResNetBottleneck): it replaces the stem and layer1, so the
# split is after layer1 (256 x 56 x 56 at 224); ResNet-152's layer1 has the same output.
_RESNET_ENTROPIC = EntropicLayout(
    split_module="layer1",
    split_channels=256,
    encoder_convs=((96, 5, 2, 2), (48, 5, 2, 2)),
    latent_conv=(2, 1, 0),
    decoder_convs=((512, 2, 1, 1), (256, 2, 1, 0)),
    output_conv=(2, 1, 1),
    distillation_stages=("layer2", "layer3", "layer4"),
)


def _resnet(name: str, builder: Callable[..., nn.Module]) -> Architecture:
    # HND / GHND split after layer2 (512 x 28 x 28 at 224) with ResNet-152's decoder, for both depths
    return Architecture(
        name=name,
        builder=builder,
        stages=_RESNET_STAGES,
        split_module="layer2",
        split_channels=512,
        encoder_first_padding=3,
        encoder_pool_padding=1,
        decoder=_RESNET_DECODER,
        input_size=224,
        resize_size=256,
        pre_ops={"fc": _flatten},
        ghnd_stages=("layer3", "layer4"),
        entropic=_RESNET_ENTROPIC,
    )


def _densenet(name: str, builder: Callable[..., nn.Module]) -> Architecture:
    return Architecture(
        name=name,
        builder=builder,
        stages=_DENSENET_STAGES,
        split_module="features.transition2",
        split_channels=256,
        encoder_first_padding=3,
        encoder_pool_padding=1,
        decoder=_DENSENET_DECODER,
        input_size=224,
        resize_size=256,
        pre_ops={"classifier": _densenet_pre_classifier},
        # the last term is denseblock4's output, before norm5 (torchdistill's config)
        ghnd_stages=("features.transition3", "features.denseblock4"),
        entropic=_DENSENET_ENTROPIC,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "densenet169": _densenet("densenet169", tv_models.densenet169),
    "densenet201": _densenet("densenet201", tv_models.densenet201),
    "resnet50": _resnet("resnet50", tv_models.resnet50),
    "resnet152": _resnet("resnet152", tv_models.resnet152),
    "inception_v3": Architecture(
        name="inception_v3",
        builder=tv_models.inception_v3,
        stages=(
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
            "avgpool",
            "dropout",
            "fc",
        ),
        split_module="maxpool2",
        split_channels=192,
        encoder_first_padding=0,
        encoder_pool_padding=0,
        decoder=DecoderLayout(
            convs=((256, 2, 1, 1), (256, 2, 1, 0), (192, 2, 1, 0)),
            pool_kernel=2,
            pool_stride=1,
        ),
        input_size=299,
        resize_size=327,
        pre_ops={"fc": _flatten},
        # The ImageNet weights come with the auxiliary classifier; it is dropped after loading
        # because neither the papers' students nor their evaluation use it.
        # transform_input=True always (as with torchvision's ImageNet weights), so a teacher behaves
        # the same whether its weights come from torchvision or from a `method=original` checkpoint.
        builder_kwargs={"aux_logits": True, "init_weights": True, "transform_input": True},
        input_transform=_inception_transform_input,
        # the whole tail (Mixed_5b onward) stays frozen; the current torchdistill config forgets Mixed_5b
        ghnd_stages=("Mixed_5d", "Mixed_6e", "Mixed_7c"),
    ),
}


def entropic_layout(architecture: str) -> EntropicLayout:
    """The Entropic Student head of `architecture`, or fail naming the architectures that have one."""
    layout = get_architecture(architecture).entropic
    if layout is None:
        supported = sorted(name for name, spec in ARCHITECTURES.items() if spec.entropic is not None)
        raise ValueError(
            f"method=entropic_student has no head designed for {architecture}. Supported: {', '.join(supported)}; "
            f"pick one with `model=<name>`."
        )
    return layout


def get_architecture(name: str) -> Architecture:
    """Return the `Architecture` record for `name`, or fail with the list of supported names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"Unknown architecture {name!r}. Supported: {', '.join(sorted(ARCHITECTURES))}. "
            f"Pick one with `model=<name>` on the command line."
        ) from None
