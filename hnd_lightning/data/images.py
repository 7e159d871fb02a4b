"""Reading images: every mode to 8-bit RGB, every failure naming its file, unreadable ones skipped on request.

`data.on_bad_image` decides what an unreadable image (truncated, not an image, undecodable) does:

- `error` (default): the run stops with `BadImageError` naming the file and the fix.
- `skip`: the image is left out, logged once as a warning with its path, and listed in
  `ImageFolderDataModule.bad_images`; it is never skipped silently.

How skipping works with DataLoader workers (`num_workers > 0`): an image is decoded inside a worker
process, so the main process cannot see what the worker skipped. A worker that meets an unreadable
image appends its path to a small record file (`BadImageRecord`, one line per path, opened in append
mode so that concurrent workers never interleave) *before* it hands its batch over, and the main
process reads that file whenever `bad_images` is asked for. The sample itself comes back as `None`:
evaluation batches drop it (`DropUnreadable`, so accuracy is computed over the readable images, each
counted once), while training takes the next readable image of the same training subset instead
(`ReplaceUnreadable`), so training batches keep their size and batch norm never sees an empty batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision import datasets

log = logging.getLogger(__name__)

ON_BAD_IMAGE_CHOICES = ("error", "skip")
# Modes holding 16-bit (or wider integer) samples; Pillow's own conversion clips them at 255.
WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MAX = 65535


class BadImageError(OSError):
    """An image file that cannot be read; the message names the file and the fix."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> an 8-bit RGB image.

    16-bit and 32-bit integer grayscale (`I;16*`, `I`, e.g. 16-bit PNGs) is taken as 0..65535 and scaled
    by 1/257 (65535 -> 255), not clipped at 255; float (`F`) is on Pillow's 0..255 scale, rounded and
    clipped; palette, bilevel, CMYK, YCbCr, LAB, HSV convert through Pillow; alpha is dropped (like
    torchvision's loader), premultiplied alpha first unpremultiplied.
    """
    if image.mode == "RGB":
        return image
    if image.mode in WIDE_INTEGER_MODES:
        samples = np.asarray(image).astype(np.float64)
        pixels = np.rint(np.clip(samples, 0, SIXTEEN_BIT_MAX) / 257.0).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if image.mode == "F":
        pixels = np.rint(np.clip(np.nan_to_num(np.asarray(image), nan=0.0), 0, 255)).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if image.mode in ("La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the image file at `path` completely into an 8-bit RGB image.

    Raises:
        BadImageError: naming `path` and the reason, for any file that does not decode (truncated,
            not an image, unsupported mode, over Pillow's decompression-bomb limit).
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later inside a transform
            return to_rgb(image)
    except Exception as error:  # anything a decoder raises on one file is a property of that file
        raise BadImageError(
            f"Cannot read image {str(path)!r}: {type(error).__name__}: {error}. Replace or remove the file, or "
            f"set data.on_bad_image=skip to leave unreadable images out (each is logged and counted)."
        ) from error


class BadImageRecord:
    """The paths of skipped images, shared by the main process and its DataLoader workers through a file.

    Only the path of the record file travels to worker processes (it pickles as a string), so the
    record works with `fork` and `spawn` workers alike.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    @classmethod
    def temporary(cls, owner: object) -> BadImageRecord:
        """A record in a private temporary folder, removed when `owner` goes away (in this process only:
        forked DataLoader workers hold copies of `owner` too)."""
        folder = tempfile.mkdtemp(prefix="hnd-bad-images-")
        weakref.finalize(owner, _remove_folder_of_process, folder, os.getpid())
        return cls(Path(folder) / "bad_images.txt")

    def paths(self) -> list[str]:
        """Every path recorded so far, sorted, each once."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                return sorted({line.rstrip("\n") for line in handle if line.strip()})
        except FileNotFoundError:
            return []

    def add(self, path: str, error: BaseException) -> None:
        """Record `path` and log it, once per path (a skipped image is met again every epoch)."""
        if path in self.paths():
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (path + "\n").encode("utf-8"))
        finally:
            os.close(descriptor)
        log.warning("Skipping unreadable image (data.on_bad_image=skip): %s", error)


def _remove_folder_of_process(folder: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


class CheckedImageFolder(datasets.ImageFolder):
    """`torchvision.datasets.ImageFolder` reading through `load_rgb`.

    With a `record` (skip mode) an unreadable image is recorded and its sample is `None`; without one
    it raises `BadImageError`. `excluded` names class folders left out (Caltech-101's clutter class).
    """

    def __init__(
        self, root: str, transform: Callable | None, record: BadImageRecord | None = None, excluded: Sequence[str] = ()
    ) -> None:
        self.record = record
        self.excluded = set(excluded)
        super().__init__(root, transform=transform, loader=load_rgb)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if not self.excluded:
            return super().find_classes(directory)
        classes = sorted(
            entry.name for entry in os.scandir(directory) if entry.is_dir() and entry.name not in self.excluded
        )
        return classes, {name: index for index, name in enumerate(classes)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        if self.record is None:
            return super().__getitem__(index)
        try:
            return super().__getitem__(index)
        except BadImageError as error:
            self.record.add(self.samples[index][0], error)
            return None


class ReplaceUnreadable(Dataset):
    """Training view: an unreadable sample (`None`) is replaced by the next readable one of `dataset`.

    Replacing within the training subset (never the whole folder) keeps held-out images out of training.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        for offset in range(len(self.dataset)):
            sample = self.dataset[(index + offset) % len(self.dataset)]
            if sample is not None:
                return sample
        raise BadImageError("No readable image in the training set: every image was skipped as unreadable.")


class DropUnreadable:
    """Evaluation collate: drops unreadable samples (`None`) and stacks the rest.

    A batch whose images are all unreadable comes out empty: images (0, 3, input_size, input_size),
    labels (0,).
    """

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size

    def __call__(self, batch: list[Any]) -> Any:
        readable = [sample for sample in batch if sample is not None]
        if readable:
            return default_collate(readable)
        return torch.empty(0, 3, self.input_size, self.input_size), torch.empty(0, dtype=torch.int64)
