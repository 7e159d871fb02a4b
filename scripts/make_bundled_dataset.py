"""Extract the bundled Fashion-MNIST subset shipped in `hnd_lightning/data/bundled/`.

Run once by a maintainer (the result is committed); needs Debian's `dataset-fashion-mnist` package:

    apt-get install dataset-fashion-mnist
    python scripts/make_bundled_dataset.py

Takes the first `--train-per-class` training images and the first `--test-per-class` test images of
each class (Fashion-MNIST's own train and test files, so no image is in both splits) and stores them
as one compressed NumPy archive of uint8 28 x 28 grayscale images.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
TARGET = Path(__file__).resolve().parents[1] / "hnd_lightning" / "data" / "bundled" / "fashion_mnist_subset.npz"
CLASSES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): big-endian header of dims, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def first_per_class(images: np.ndarray, labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in range(len(CLASSES))])
    return images[indices], labels[indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    train_images, train_labels = first_per_class(
        read_idx(SOURCE / "train-images-idx3-ubyte.gz"),
        read_idx(SOURCE / "train-labels-idx1-ubyte.gz"),
        args.train_per_class,
    )
    test_images, test_labels = first_per_class(
        read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"),
        read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz"),
        args.test_per_class,
    )
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        TARGET,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=np.array(CLASSES),
    )
    pixels = train_images.astype(np.float64) / 255
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB): {len(train_images)} train, {len(test_images)} test")
    print(f"train pixel mean {pixels.mean():.4f}, std {pixels.std():.4f}")


if __name__ == "__main__":
    main()
