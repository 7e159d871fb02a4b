"""The Entropic Student: an encoder (GDN1) -> latent -> learned entropy model -> decoder (inverse GDN1) head.

The head replaces the teacher's stages up to its `EntropicLayout.split_module`; the tail is the teacher's
rest. The latent's life cycle is CompressAI's, each step explicit:

    training    y = encoder(x); y~ = y + uniform noise in [-0.5, 0.5); likelihoods p(y~)   (train mode)
    evaluation  y^ = round(y - median) + median, medians from the entropy model's quantiles  (eval mode)
    coding      `update()` builds the coder's integer tables once; `compress(x)` -> one byte string per
                image; `decompress(strings, (h, w))` -> exactly the eval-mode y^

CompressAI (the field's library, the `entropy` extra) is imported only when a head is built, with the
install command in the error when it is missing. The three tables have data-dependent sizes after
`update()`, which makes a plain `load_state_dict` fail with a size mismatch (CompressAI issues 75, 113,
183; sc2-benchmark 141): every entropy bottleneck built here resizes them to the incoming state first
(`resize_tables_before_load`), so artifacts, Lightning checkpoints and resumed runs reload bit for bit.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from hnd_lightning.models.architectures import EntropicLayout, entropic_layout
from hnd_lightning.models.split import output_shape
from hnd_lightning.models.teacher import TeacherPart, split_teacher

ENTROPY_EXTRA_HINT = (
    'method=entropic_student and entropy-coded artifacts need CompressAI: pip install -e ".[entropy]" '
    "(compressai 1.2.8, with numpy<2)."
)
# The coder's tables, empty until `update()`, then (C,), (C, L), (C,) int32
TABLE_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length")
DEFAULT_LATENT_CHANNELS = 24


def compressai_parts() -> tuple[type, type]:
    """CompressAI's `EntropyBottleneck` and `GDN1` classes, or an ImportError naming the extra to install."""
    try:
        from compressai.entropy_models import EntropyBottleneck
        from compressai.layers import GDN1
    except ImportError as error:
        raise ImportError(f"{ENTROPY_EXTRA_HINT} ({error})") from error
    return EntropyBottleneck, GDN1


def resize_tables_before_load(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load pre-hook: give the coder's tables the incoming shapes, so the strict load copies them in."""
    for name in TABLE_BUFFERS:
        incoming = state_dict.get(prefix + name)
        current = getattr(module, name)
        if incoming is not None and tuple(incoming.shape) != tuple(current.shape):
            setattr(module, name, torch.zeros(tuple(incoming.shape), dtype=current.dtype, device=current.device))


def build_entropy_bottleneck(channels: int) -> nn.Module:
    """CompressAI's factorized-prior `EntropyBottleneck(channels)` (defaults, as the papers) that reloads
    any state with tables of another size."""
    entropy_bottleneck_class, _ = compressai_parts()
    module = entropy_bottleneck_class(channels)
    module.register_load_state_dict_pre_hook(resize_tables_before_load)
    return module


def _conv_stack(
    in_channels: int,
    convs: tuple[tuple[int, int, int, int], ...],
    last: tuple[int, int, int, int],
    inverse: bool,
) -> nn.Sequential:
    """Bias-free convs, each of `convs` followed by GDN1 (inverse: IGDN), then the `last` conv alone."""
    _, gdn_class = compressai_parts()
    layers: list[nn.Module] = []
    for out_channels, kernel, stride, padding in convs:
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False),
            gdn_class(out_channels, inverse=inverse),
        ]
        in_channels = out_channels
    out_channels, kernel, stride, padding = last
    layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))
    return nn.Sequential(*layers)


def build_entropic_encoder(layout: EntropicLayout, latent_channels: int) -> nn.Sequential:
    """(N, 3, H, W) image -> (N, latent_channels, h, w) latent y (24 x 55 x 55 for ResNet-50 at 224)."""
    return _conv_stack(3, layout.encoder_convs, (latent_channels, *layout.latent_conv), inverse=False)


def build_entropic_decoder(layout: EntropicLayout, latent_channels: int) -> nn.Sequential:
    """(N, latent_channels, h, w) latent -> the teacher's tensor at `layout.split_module`."""
    return _conv_stack(latent_channels, layout.decoder_convs, (layout.split_channels, *layout.output_conv), True)


def estimated_bits(likelihoods: torch.Tensor) -> torch.Tensor:
    """Each image's information content -sum(log2 p) in bits: (N, C, h, w) likelihoods -> (N,)."""
    return -torch.log2(likelihoods).flatten(1).sum(1)


class EntropicHead(nn.Module):
    """`encoder` (device), `entropy_bottleneck` (its tables code the latent on the device and decode it on
    the server) and `decoder` (server). `forward(x)` -> split tensor, through noise (train mode) or the
    rounding the coder reproduces (eval mode)."""

    def __init__(self, encoder: nn.Module, entropy_bottleneck: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.entropy_bottleneck, self.decoder = encoder, entropy_bottleneck, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_likelihoods(x)[0]

    def forward_with_likelihoods(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (split tensor, likelihoods (N, C, h, w) of the noisy or rounded latent)."""
        latent, likelihoods = self.entropy_bottleneck(self.encoder(x))
        return self.decoder(latent), likelihoods

    def round_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """round(y - median) + median, detached: what `decompress(compress(y))` returns, in any mode."""
        return self.entropy_bottleneck(latent, training=False)[0].detach()

    def update(self) -> None:
        """Build the coder's tables from the current entropy model (always: a stale table codes wrongly)."""
        self.entropy_bottleneck.update(force=True)

    @property
    def updated(self) -> bool:
        return self.entropy_bottleneck._quantized_cdf.numel() > 0

    def compress(self, latent: torch.Tensor) -> list[bytes]:
        """(N, C, h, w) latent -> one byte string per image (needs `update()` first)."""
        if not self.updated:
            raise RuntimeError("The entropy model has no coder tables yet: call update() before compress().")
        return self.entropy_bottleneck.compress(latent)

    def decompress(self, strings: list[bytes], latent_size: tuple[int, int]) -> torch.Tensor:
        """Byte strings of `compress` and the latent's (h, w) -> the (N, C, h, w) rounded latent."""
        return self.entropy_bottleneck.decompress(list(strings), tuple(latent_size))


class EntropicSplitModel(nn.Module):
    """An Entropic Student: `head` (`EntropicHead`), `tail` (the teacher's stages after the head's split).
    `forward(x) == tail(head(x))`: (N, 3, H, W) images -> (N, num_classes) logits."""

    def __init__(self, head: EntropicHead, tail: nn.Module) -> None:
        super().__init__()
        self.head, self.tail = head, tail

    @property
    def encoder(self) -> nn.Module:
        return self.head.encoder

    @property
    def entropy_bottleneck(self) -> nn.Module:
        return self.head.entropy_bottleneck

    @property
    def decoder(self) -> nn.Module:
        return self.head.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x))

    def coded_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[bytes]]:
        """Classify through the real bitstream: encoder, compress, decompress, decoder, tail.

        Returns (logits (N, num_classes), the N byte strings sent).
        """
        latent = self.encoder(x)
        strings = self.head.compress(latent)
        decoded = self.head.decompress(strings, latent.shape[-2:]).to(latent.device)
        return self.tail(self.decoder(decoded)), strings


def build_entropic_head(architecture: str, latent_channels: int = DEFAULT_LATENT_CHANNELS) -> EntropicHead:
    """A freshly initialized Entropic Student head of `architecture` (see `EntropicLayout`)."""
    layout = entropic_layout(architecture)
    if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
        raise ValueError(
            f"method.latent_channels must be a positive integer (the papers: 24), got {latent_channels!r}."
        )
    return EntropicHead(
        build_entropic_encoder(layout, latent_channels),
        build_entropy_bottleneck(latent_channels),
        build_entropic_decoder(layout, latent_channels),
    )


def build_entropic_student(
    teacher: nn.Module, architecture: str, latent_channels: int, input_size: int
) -> tuple[EntropicSplitModel, TeacherPart]:
    """An Entropic Student of `teacher`: a new head and a copy of the teacher's stages after the head's split.

    Returns (student, teacher_head at the head's split). Raises ValueError when the decoder does not
    restore the teacher's tensor there at `input_size` (naming both shapes).
    """
    layout = entropic_layout(architecture)
    teacher_head, teacher_tail = split_teacher(teacher, architecture, layout.split_module)
    student = EntropicSplitModel(build_entropic_head(architecture, latent_channels), copy.deepcopy(teacher_tail))
    image_shape = (1, 3, input_size, input_size)
    try:
        teacher_shape = output_shape(teacher_head, image_shape)
        student_shape = output_shape(nn.Sequential(OrderedDict(e=student.encoder, d=student.decoder)), image_shape)
    except RuntimeError as error:
        raise ValueError(
            f"The {architecture} Entropic Student cannot run at input size {input_size} ({error})."
        ) from None
    if teacher_shape != student_shape:
        raise ValueError(
            f"{architecture} Entropic Student at input size {input_size}: the decoder outputs {student_shape[1:]} but "
            f"the teacher's tensor at {layout.split_module} is {teacher_shape[1:]}; multiples of 32 work "
            f"(the papers: 224)."
        )
    return student, teacher_head
