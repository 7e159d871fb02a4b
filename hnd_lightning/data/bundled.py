"""The bundled dataset: a real Fashion-MNIST subset shipped inside the package, served as an ImageFolder.

`bundled/fashion_mnist_subset.npz` holds 500 training and 100 test images per class (10 classes,
28 x 28 grayscale, uint8), extracted by `scripts/make_bundled_dataset.py` from Fashion-MNIST
(Zalando SE, MIT license; see `bundled/LICENSE`). On first use they are written once as PNG files
in the usual `train/<class>/`, `val/<class>/` layout under `data.root`, and from then on they go
through exactly the same ImageFolder loader and transforms as ImageNet (grayscale is replicated
to 3 channels by the loader's RGB conversion).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from hnd_lightning.data.imagefolder import ImageFolderDataModule

log = logging.getLogger(__name__)

ARCHIVE = Path(__file__).resolve().parent / "bundled" / "fashion_mnist_subset.npz"
MARKER = ".complete"


def archive_digest(archive: Path = ARCHIVE) -> str:
    return hashlib.sha256(archive.read_bytes()).hexdigest()[:16]


def materialize_image_folder(root: Path, archive: Path = ARCHIVE) -> Path:
    """Write the archive's images as `root/train/<class>/*.png` and `root/val/<class>/*.png`, once.

    A marker holding the archive's digest makes later calls free; a partial earlier attempt is
    replaced, since files are written to a temporary folder first and moved into place at the end.
    """
    digest = archive_digest(archive)
    marker = root / MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return root
    arrays = np.load(archive)
    classes = [str(name) for name in arrays["classes"]]
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
    for split, prefix in (("train", "train"), ("val", "test")):
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        for name in classes:
            (staging / split / name).mkdir(parents=True)
        for index, (pixels, label) in enumerate(zip(images, labels)):
            Image.fromarray(pixels, mode="L").save(staging / split / classes[label] / f"{index:05d}.png")
    (staging / MARKER).write_text(digest)
    if root.exists():
        shutil.rmtree(root)
    os.replace(staging, root)
    log.info("Bundled dataset written to %s", root)
    return root


class BundledDataModule(ImageFolderDataModule):
    """`data=bundled`: the packaged Fashion-MNIST subset through the ImageFolder DataModule."""

    def prepare_data(self) -> None:
        materialize_image_folder(self.root)

    def setup(self, stage: str | None = None) -> None:
        # Also outside a Trainer (analysis, evaluation), where `prepare_data` is not called for us.
        self.prepare_data()
        super().setup(stage)
