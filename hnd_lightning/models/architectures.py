"""The four paper architectures: where each teacher is split and how its student head is shaped.

Everything architecture-specific lives in one `Architecture` record per model, so adding a model
means adding one record (the manual: how-to, adding an architecture).
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
class Architecture:
    """One teacher architecture and the bottleneck-injected student built on it.

    `stages` lists the teacher's modules by their torchvision names in forward order; the teacher head
    runs them up to and including `split_module`, the tail the rest. `pre_ops` are the functional
    operations torchvision's forward applies right before a stage (e.g. flatten before `fc`).
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

    @property
    def head_stages(self) -> tuple[str, ...]:
        return self.stages[: self.stages.index(self.split_module) + 1]

    @property
    def tail_stages(self) -> tuple[str, ...]:
        return self.stages[self.stages.index(self.split_module) + 1 :]


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
    )


ARCHITECTURES: dict[str, Architecture] = {
    "densenet169": _densenet("densenet169", tv_models.densenet169),
    "densenet201": _densenet("densenet201", tv_models.densenet201),
    "resnet152": Architecture(
        name="resnet152",
        builder=tv_models.resnet152,
        stages=("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"),
        split_module="layer2",
        split_channels=512,
        encoder_first_padding=3,
        encoder_pool_padding=1,
        decoder=DecoderLayout(
            convs=((512, 2, 1, 1), (512, 2, 1, 1), (512, 2, 1, 0), (512, 2, 1, 0)),
            pool_kernel=2,
            pool_stride=1,
        ),
        input_size=224,
        resize_size=256,
        pre_ops={"fc": _flatten},
    ),
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
    ),
}


def get_architecture(name: str) -> Architecture:
    """Return the `Architecture` record for `name`, or fail with the list of supported names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"Unknown architecture {name!r}. Supported: {', '.join(sorted(ARCHITECTURES))}. "
            f"Pick one with `model=<name>` on the command line."
        ) from None
