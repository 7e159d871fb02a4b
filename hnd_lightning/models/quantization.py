"""The 8-bit link: quantize the bottleneck tensor on the device, dequantize it on the server.

Each image's bottleneck tensor gets its own affine 8-bit code (per-tensor quantization): a float32
`scale` and a uint8 `zero_point` travel with the uint8 values, so `x ~= (values - zero_point) * scale`.
The range always contains 0 (as in PyTorch's observers), so zeros are exact, and every value inside
the range comes back within half a step (`scale / 2`).

The same arithmetic serves evaluation (`with_quantized_bottleneck`) and deployment (`DevicePart`,
`ServerPart`, which export to ONNX as plain Round / Cast / arithmetic nodes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hnd_lightning.models.architectures import get_architecture
from hnd_lightning.models.split import SplitModel, build_encoder, output_shape

QUANTIZED_LEVELS = 255  # uint8: codes 0..255
# Bytes sent per image besides the values: a float32 scale and a uint8 zero point.
QUANTIZATION_HEADER_BYTES = 4 + 1
_SMALLEST_SCALE = 1e-12  # an all-zero tensor would otherwise give scale 0 and a division by zero

# The link formats, named the same everywhere: `payload_bytes(...)[format]`, `bytes_<format>` in a
# run's `payload` record, `payload_bytes_<format>` in the sweep summary. "uint8" is the 8-bit link:
# uint8 values plus each image's scale and zero point.
PAYLOAD_FORMATS = ("float32", "float16", "uint8")


def payload_bytes(elements: int) -> dict[str, int]:
    """Bytes one image's tensor of `elements` values takes on the link, per format (`PAYLOAD_FORMATS`):
    float32, float16, and uint8 (the 8-bit link: uint8 values plus the per-image scale and zero point)."""
    return {"float32": 4 * elements, "float16": 2 * elements, "uint8": elements + QUANTIZATION_HEADER_BYTES}


def link_payload(bottleneck_shape: Sequence[int], input_size: int) -> dict[str, Any]:
    """What the device sends per image for a bottleneck tensor of `bottleneck_shape` (B, h, w).

    Returns `bottleneck_shape`, `bytes_float32`, `bytes_float16`, `bytes_uint8` (see `payload_bytes`),
    `input_bytes_uint8` (the uint8 RGB input image, 3 x H x W bytes) and `percent_of_input` (the uint8
    payload as a percentage of that image; the papers' figure: 1.68 % at B = 3, 224 x 224). The rate
    fields every student's record has (an entropy-coded one measures them on its bitstream):
    `coding` "float32" and `coded_bytes_mean`, `coded_bytes_p95`, `estimated_bytes_mean` = the bytes
    behind `test_acc1`, here the fixed float32 size (the 8-bit link's, behind `test_q8_acc1`, is `bytes_uint8`).
    """
    sizes = payload_bytes(math.prod(bottleneck_shape))
    input_bytes = 3 * input_size * input_size
    return {
        "bottleneck_shape": list(bottleneck_shape),
        "coding": "float32",
        **dict.fromkeys(("coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean"), sizes["float32"]),
        **{f"bytes_{fmt}": sizes[fmt] for fmt in PAYLOAD_FORMATS},
        "input_bytes_uint8": input_bytes,
        "percent_of_input": 100.0 * sizes["uint8"] / input_bytes,
    }


def bottleneck_payload(architecture: str, bottleneck_channels: Any, input_size: int) -> dict[str, Any] | None:
    """`link_payload` of the encoder of `architecture` with `bottleneck_channels` at `input_size`^2.

    None when `bottleneck_channels` is not a positive integer (`method=original` sends no bottleneck).
    """
    if isinstance(bottleneck_channels, bool) or not isinstance(bottleneck_channels, int) or bottleneck_channels < 1:
        return None
    encoder = build_encoder(get_architecture(architecture), bottleneck_channels)
    return link_payload(output_shape(encoder, (1, 3, input_size, input_size))[1:], input_size)


def model_payload(model: nn.Module, input_size: int) -> dict[str, Any] | None:
    """`link_payload` of a composed student's bottleneck; None for a model without one (a teacher)."""
    if not isinstance(model, SplitModel):
        return None
    return link_payload(output_shape(model.encoder, (1, 3, input_size, input_size))[1:], input_size)


@dataclass
class QuantizedTensor:
    """8-bit payload of a batch: `values` uint8 (N, ...), `scale` float32 (N,), `zero_point` uint8 (N,)."""

    values: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        """Float32 tensor of `values`' shape: (values - zero_point) * scale, per image."""
        return dequantize(self.values, self.scale, self.zero_point)

    def nbytes_per_image(self) -> int:
        """Bytes one image's payload takes on the link: its uint8 values plus scale and zero point."""
        return self.values[0].numel() + QUANTIZATION_HEADER_BYTES


def _per_image(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # (N,) -> (N, 1, 1, ...) so it broadcasts over one image's tensor
    return vector.reshape(vector.shape[:1] + (1,) * (like.dim() - 1))


def quantize(x: torch.Tensor) -> QuantizedTensor:
    """Quantize each image of `x` (N, ...) float to 8 bits with its own min/max scale and zero point."""
    flat = x.detach().float().flatten(1)
    low = flat.amin(dim=1).clamp(max=0.0)
    high = flat.amax(dim=1).clamp(min=0.0)
    scale = ((high - low) / QUANTIZED_LEVELS).clamp(min=_SMALLEST_SCALE)
    zero_point = torch.round(-low / scale).clamp(0, QUANTIZED_LEVELS)
    codes = torch.round(x.float() / _per_image(scale, x)) + _per_image(zero_point, x)
    values = codes.clamp(0, QUANTIZED_LEVELS).to(torch.uint8)
    return QuantizedTensor(values, scale, zero_point.to(torch.uint8))


def dequantize(values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize`: uint8 (N, ...) values, (N,) scale and zero point -> float32 (N, ...)."""
    return (values.float() - _per_image(zero_point.float(), values)) * _per_image(scale, values)


class Quantize(nn.Module):
    """Device side of the link: (N, ...) float -> (values uint8 (N, ...), scale (N,), zero_point uint8 (N,))."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        payload = quantize(x)
        return payload.values, payload.scale, payload.zero_point


class Dequantize(nn.Module):
    """Server side of the link: (values, scale, zero_point) -> float32 tensor of `values`' shape."""

    def forward(self, values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        return dequantize(values, scale, zero_point)


class QuantizeDequantize(nn.Module):
    """What the 8-bit link does to a tensor, in one module: `dequantize(quantize(x))`, same shape.

    Float32 out, as the server's `Dequantize` gives its decoder, whenever autocast picks the decoder's
    dtype (bf16-mixed: the decoder's first batch norm then runs in float32 there as here); else `x`'s dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        restored = quantize(x).dequantize()
        return restored if torch.is_autocast_enabled(x.device.type) else restored.to(x.dtype)


def with_quantized_bottleneck(model: SplitModel) -> SplitModel:
    """The composed student with its bottleneck tensor sent through the 8-bit link.

    Shares `model`'s modules (no copy): (N, 3, H, W) images -> (N, num_classes) logits.
    """
    encoder = nn.Sequential(OrderedDict(encoder=model.encoder, link=QuantizeDequantize()))
    return SplitModel(encoder, model.decoder, model.tail).train(model.training)


class DevicePart(nn.Module):
    """What runs on the device: image (N, 3, H, W) -> bottleneck, 8-bit (values, scale, zero_point) when
    `quantized`, else the float32 tensor."""

    def __init__(self, encoder: nn.Module, quantized: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.quantize = Quantize() if quantized else None

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bottleneck = self.encoder(images)
        return bottleneck if self.quantize is None else self.quantize(bottleneck)


class ServerPart(nn.Module):
    """What runs on the server: the payload of `DevicePart` -> (N, num_classes) logits (decoder + tail)."""

    def __init__(self, decoder: nn.Module, tail: nn.Module, quantized: bool = True) -> None:
        super().__init__()
        self.dequantize = Dequantize() if quantized else None
        self.decoder = decoder
        self.tail = tail

    def forward(self, *payload: torch.Tensor) -> torch.Tensor:
        bottleneck = payload[0] if self.dequantize is None else self.dequantize(*payload)
        return self.tail(self.decoder(bottleneck))


def split_parts(model: SplitModel, quantized: bool = True) -> tuple[DevicePart, ServerPart]:
    """The device and server parts of a composed student.

    With the 8-bit link `server(*device(x))`, without it `server(device(x))`, gives the logits of
    `with_quantized_bottleneck(model)(x)` and `model(x)` respectively.
    """
    return DevicePart(model.encoder, quantized).eval(), ServerPart(model.decoder, model.tail, quantized).eval()
