"""What crosses the link per image: the raw uint8 input, its JPEG, the HND bottleneck, the teacher's split tensor.

JPEG sizes are measured on real images (the dataset's test images after the evaluation resize and
crop) when `data.root` is set, else on a generated stand-in photo, which the report says.
"""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torchvision import transforms

from hnd_lightning.analysis.parts import SplitUnderAnalysis
from hnd_lightning.models.quantization import payload_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def real_images(cfg: DictConfig, input_size: int, resize_size: int) -> tuple[list[Image.Image], str] | None:
    """Up to `cfg.payload.num_images` images of `data.root` (spread over classes), resized and
    center-cropped as for evaluation, and a sentence saying where they came from; None without a root."""
    root = cfg.data.get("root")
    if not root:
        return None
    instantiate(cfg.data).prepare_data()  # e.g. the bundled dataset writes its image files here
    # ImageFolder layouts: the test images; other layouts (Caltech-101): any image under the root
    folder = Path(root).expanduser() / cfg.data.get("test_dir", "")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} does not exist: no real images to measure JPEG sizes on. Set data.root to the "
            f"dataset root, or leave it unset to use a generated image."
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:: max(1, len(files) // cfg.payload.num_images)][: cfg.payload.num_images]  # spread over classes
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {str(folder)!r}.")
    # the evaluation preprocessing without normalization: what the camera image becomes before the model
    crop = transforms.Compose([transforms.Resize(resize_size), transforms.CenterCrop(input_size)])
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(crop(image.convert("RGB")))
    return (
        images,
        f"{len(images)} real images from {folder}, resized to {resize_size} and center-cropped to {input_size}",
    )


def generated_image(input_size: int, seed: int) -> Image.Image:
    """A deterministic stand-in photo: smooth colour gradients plus mild noise, (input_size, input_size) RGB."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, input_size)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    channels = []
    for _ in range(3):
        waves = sum(
            rng.uniform(20, 60)
            * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y) + rng.uniform(0, 6))
            for _ in range(3)
        )
        channels.append(128 + waves + rng.normal(0, 8, (input_size, input_size)))
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int) -> int:
    """Size in bytes of `image` saved as JPEG at PIL `quality` (1..100)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.tell()


def tensor_payload(shape: tuple[int, ...], input_bytes: int, jpeg_size: float) -> dict[str, Any]:
    """Bytes of one image's tensor of `shape` as float32, float16 and 8-bit, and their share of the input."""
    elements = math.prod(shape)
    sizes = payload_bytes(elements)
    return {
        "shape": list(shape),
        "elements": elements,
        "bytes": sizes,
        "percent_of_input": {key: 100 * value / input_bytes for key, value in sizes.items()},
        "ratio_to_jpeg": {key: value / jpeg_size for key, value in sizes.items()},
    }


def payload_report(cfg: DictConfig, split: SplitUnderAnalysis) -> dict[str, Any]:
    """Bytes per image on the link: raw uint8 input, its JPEG, the HND bottleneck and the teacher split tensor."""
    size = split.input_size
    quality = cfg.payload.jpeg_quality
    if not 1 <= quality <= 100:
        raise ValueError(f"payload.jpeg_quality must be in 1..100 (PIL's JPEG quality), got {quality}.")
    real = real_images(cfg, size, split.resize_size)
    if real is None:
        images, source = (
            [generated_image(size, cfg.seed)],
            (
                "a generated image (smooth gradients plus noise; no data.root set): real photos give other JPEG "
                "sizes, set data.root to use them"
            ),
        )
    else:
        images, source = real
    sizes = [jpeg_bytes(image, quality) for image in images]
    jpeg_size = statistics.mean(sizes)
    input_bytes = 3 * size * size
    shapes = split.link_shapes()
    return {
        "input": {"shape": [3, size, size], "elements": input_bytes, "bytes_uint8": input_bytes},
        "jpeg": {
            "quality": quality,
            "bytes": jpeg_size,
            "min_bytes": min(sizes),
            "max_bytes": max(sizes),
            "percent_of_input": 100 * jpeg_size / input_bytes,
            "source": source,
        },
        "student": tensor_payload(shapes["student"], input_bytes, jpeg_size),
        "teacher": tensor_payload(shapes["teacher"], input_bytes, jpeg_size),
    }
