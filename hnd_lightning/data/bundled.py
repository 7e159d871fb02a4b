"""The bundled dataset: a real Fashion-MNIST subset shipped inside the package, served as an ImageFolder.

`bundled/fashion_mnist_subset.npz` holds 500 training and 100 test images per class (10 classes,
28 x 28 grayscale, uint8), extracted by `scripts/make_bundled_dataset.py` from Fashion-MNIST
(Zalando SE, MIT license; see `bundled/LICENSE`). On first use they are written once as PNG files
in the usual `train/<class>/`, `val/<class>/` layout under `data.root`, and from then on they go
through exactly the same ImageFolder loader and transforms as ImageNet (grayscale is replicated
to 3 channels by the loader's RGB conversion).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from hnd_lightning.data.imagefolder import ImageFolderDataModule
from hnd_lightning.files import atomic_write_text, file_lock, sha256_of

log = logging.getLogger(__name__)

ARCHIVE = Path(__file__).resolve().parent / "bundled" / "fashion_mnist_subset.npz"
MARKER = ".complete"


def archive_digest(archive: Path = ARCHIVE) -> str:
    return sha256_of(archive)[:16]


def lock_path(root: Path) -> Path:
    """The lock file that serializes materializing `root` between processes."""
    return root.parent / f".{root.name}.lock"


def _is_complete(root: Path, digest: str) -> bool:
    marker = root / MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def materialize_image_folder(root: Path, archive: Path = ARCHIVE) -> Path:
    """Write the archive's images as `root/train/<class>/*.png` and `root/val/<class>/*.png`, once.

    A marker holding the archive's digest makes later calls free. Processes that start together
    (two quickstarts, DDP ranks, a sweep's jobs) take a file lock beside `root`: one writes, the others
    wait and then reuse its folder. Files are written to a staging folder and moved into place at the
    end, so a killed attempt never leaves a partial `root`; its staging folder is removed by the next.
    """
    root = Path(root)
    digest = archive_digest(archive)
    if _is_complete(root, digest):
        return root
    with file_lock(lock_path(root)):
        if _is_complete(root, digest):
            log.info("Bundled dataset at %s was written by another process; reusing it", root)
            return root
        staging_prefix = f".staging-{root.name}-"
        for stale in root.parent.glob(staging_prefix + "*"):  # left by a killed attempt; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix, dir=root.parent))
        try:
            _write_pngs(staging, archive)
            atomic_write_text(staging / MARKER, digest)
            os.chmod(staging, 0o755)  # mkdtemp makes it private; the dataset is for every user
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("Bundled dataset written to %s", root)
    return root


def _write_pngs(folder: Path, archive: Path) -> None:
    arrays = np.load(archive)
    classes = [str(name) for name in arrays["classes"]]
    for split, prefix in (("train", "train"), ("val", "test")):
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        for name in classes:
            (folder / split / name).mkdir(parents=True)
        for index, (pixels, label) in enumerate(zip(images, labels)):
            Image.fromarray(pixels, mode="L").save(folder / split / classes[label] / f"{index:05d}.png")


class BundledDataModule(ImageFolderDataModule):
    """`data=bundled`: the packaged Fashion-MNIST subset through the ImageFolder DataModule."""

    def prepare_data(self) -> None:
        materialize_image_folder(self.root)

    def setup(self, stage: str | None = None) -> None:
        # Also outside a Trainer (analysis, evaluation), where `prepare_data` is not called for us.
        self.prepare_data()
        super().setup(stage)
