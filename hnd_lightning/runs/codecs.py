"""Input codecs, the baseline of a rate-accuracy comparison: the evaluated view sent as JPEG or WebP.

As the SC2 benchmark runs them: each test image's evaluated view (resize + center crop, the PIL image
before normalization) is saved with PIL into a `BytesIO` in the format at quality q (PIL's defaults
otherwise), its bytes are `BytesIO.tell()`, and the decoded image is normalized and classified by the
unchanged teacher (`codec_rate_accuracy`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from hnd_lightning.data.images import load_rgb

# name in `pipeline.codecs.formats` -> PIL's format name
CODEC_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}


def codec_round_trip(view: Image.Image, codec: str, quality: int) -> tuple[Image.Image, int]:
    """`view` encoded by `codec` ("jpeg", "webp") at PIL `quality` (1..100) and decoded: (RGB image, bytes)."""
    if codec not in CODEC_FORMATS:
        raise ValueError(f"Unknown codec {codec!r}; allowed: {', '.join(CODEC_FORMATS)}.")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"Codec quality must be an integer in 1..100 (PIL's quality), got {quality!r}.")
    buffer = io.BytesIO()
    view.save(buffer, format=CODEC_FORMATS[codec], quality=quality)
    size = buffer.tell()
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB"), size


def evaluated_views(datamodule: Any, num_images: int | None = None) -> tuple[list[Image.Image], list[int]]:
    """The DataModule's test images as the model sees them before normalization (Resize + CenterCrop),
    in its class-interleaved test order (a prefix of `num_images` is stratified), and their labels."""
    datamodule.prepare_data()
    datamodule.setup("test")
    test_set = datamodule.test_set
    samples = [test_set.dataset.samples[index] for index in test_set.indices][:num_images]
    crop = transforms.Compose([transforms.Resize(datamodule.resize_size), transforms.CenterCrop(datamodule.input_size)])
    return [crop(load_rgb(path)) for path, _ in samples], [label for _, label in samples]


@torch.no_grad()
def codec_rate_accuracy(
    teacher: nn.Module,
    views: Sequence[Image.Image],
    labels: Sequence[int],
    normalization: dict[str, Sequence[float]],
    codecs: Sequence[str] = ("jpeg", "webp"),
    qualities: Sequence[int] = tuple(range(10, 101, 10)),
    batch_size: int = 100,
) -> list[dict[str, Any]]:
    """Top-1 of `teacher` on every view sent through each codec at each quality.

    Returns one row per (codec, quality): `method` (the codec), `quality`, `bytes_mean`, `bytes_p95`
    (per image, what `BytesIO.tell()` says), `test_acc1` and `images`.
    """
    to_input = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(normalization["mean"], normalization["std"])]
    )
    teacher = teacher.eval()
    target = torch.as_tensor(list(labels))
    rows = []
    for codec in codecs:
        for quality in qualities:
            decoded, sizes = zip(*(codec_round_trip(view, codec, quality) for view in views))
            correct = 0
            for start in range(0, len(decoded), batch_size):
                batch = torch.stack([to_input(image) for image in decoded[start : start + batch_size]])
                correct += int((teacher(batch).argmax(1) == target[start : start + batch_size]).sum())
            rows.append(
                {
                    "method": codec,
                    "quality": quality,
                    "bytes_mean": float(np.mean(sizes)),
                    "bytes_p95": float(np.percentile(sizes, 95)),
                    "test_acc1": correct / len(decoded),
                    "images": len(decoded),
                }
            )
    return rows
