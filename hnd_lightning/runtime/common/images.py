"""Images on both ends of a split: read from a folder, prepared as in training, sent as JPEG.

A camera image first becomes what the model sees without normalization (`camera_view`: resize the
shorter side, center crop, as `eval_transform`); the device then normalizes it for its encoder
(`model_input`), and full offloading sends that view as a JPEG (`jpeg_bytes`, as `analyze` measures it),
which the server decodes (`decode_jpeg`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from hnd_lightning.runtime.common.protocol import InferenceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A JPEG that decodes to more pixels than this is refused (a small file can declare a huge image).
MAX_DECODED_PIXELS = 40_000_000


@dataclass
class LabeledImage:
    """An image file and its class index (None in a folder without class subfolders)."""

    path: Path
    label: int | None


def list_images(
    folder: str | Path, num_images: int | None = None, classes: list[str] | None = None
) -> list[LabeledImage]:
    """Images of an ImageFolder split (`folder/<class>/*.jpg`, labelled) or of a flat folder (unlabelled).

    Labels index `classes` (the run's class names from `split.json`) when given, else the sorted
    class folders. `num_images` takes that many, spread evenly over the sorted files.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"images={str(folder)!r} is not a folder: pass an ImageFolder split (e.g. <root>/val) or a folder of JPEGs."
        )
    class_dirs = sorted(entry for entry in folder.iterdir() if entry.is_dir())
    images: list[LabeledImage] = []
    if class_dirs:
        names = classes or [entry.name for entry in class_dirs]
        for entry in class_dirs:
            label = names.index(entry.name) if entry.name in names else None
            images += [
                LabeledImage(path, label) for path in sorted(entry.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES
            ]
    else:
        images = [
            LabeledImage(path, None) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not images:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r} or its class folders.")
    if num_images:
        images = images[:: max(1, len(images) // num_images)][:num_images]
    return images


def _sizes(metadata: dict[str, Any]) -> tuple[int, int]:
    size = metadata["input"]["shape"][-1]
    return size, metadata["input"].get("resize_size") or size


def camera_view(image: Image.Image, metadata: dict[str, Any]) -> Image.Image:
    """RGB image -> the model's input view without normalization: Resize(shorter side) + CenterCrop."""
    size, resize = _sizes(metadata)
    image = image.convert("RGB")
    if image.size == (size, size):
        return image  # already the view (e.g. a JPEG sent by a device that cropped it)
    return transforms.CenterCrop(size)(transforms.Resize(resize)(image))


def model_input(view: Image.Image, metadata: dict[str, Any]) -> np.ndarray:
    """A camera view -> the normalized float32 (3, H, W) array the encoder or the teacher takes."""
    pixels = np.asarray(view, dtype=np.float32) / 255.0
    mean = np.asarray(metadata["input"]["mean"], dtype=np.float32)
    std = np.asarray(metadata["input"]["std"], dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def jpeg_bytes(view: Image.Image, quality: int = 90) -> bytes:
    """The camera view encoded as JPEG at PIL `quality` (what full offloading sends)."""
    buffer = io.BytesIO()
    view.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes, metadata: dict[str, Any], name: str = "image") -> np.ndarray:
    """Encoded image bytes -> normalized float32 (3, H, W); `InferenceError` when they do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_DECODED_PIXELS:
                raise InferenceError(
                    f"input '{name}': image of {image.width} x {image.height} pixels exceeds {MAX_DECODED_PIXELS:,}"
                )
            image.load()
            return model_input(camera_view(image, metadata), metadata)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InferenceError(
            f"input '{name}': {len(data)} bytes that do not decode as an image ({type(error).__name__}: {error})"
        ) from None
