"""Datasets: the bundled Fashion-MNIST subset, Caltech-101 splits, the ImageFolder hold-out."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from hnd_lightning.data import (
    BundledDataModule,
    Caltech101DataModule,
    ImageFolderDataModule,
    materialize_image_folder,
    stratified_holdout,
)
from hnd_lightning.data.bundled import ARCHIVE

CLASSES = 10


@pytest.fixture(scope="module")
def bundled_root(tmp_path_factory) -> Path:
    return materialize_image_folder(tmp_path_factory.mktemp("bundled") / "fashion_mnist_subset")


def test_bundled_archive_is_small_and_has_the_documented_counts():
    assert ARCHIVE.stat().st_size < 4_000_000
    arrays = np.load(ARCHIVE)
    assert arrays["train_images"].shape == (5000, 28, 28) and arrays["train_images"].dtype == np.uint8
    assert arrays["test_images"].shape == (1000, 28, 28)
    assert Counter(arrays["train_labels"].tolist()) == {label: 500 for label in range(CLASSES)}
    assert Counter(arrays["test_labels"].tolist()) == {label: 100 for label in range(CLASSES)}
    assert len(arrays["classes"]) == CLASSES
    assert (ARCHIVE.parent / "LICENSE").is_file()


def test_bundled_images_are_real_pixels_distinct_across_classes_and_splits():
    arrays = np.load(ARCHIVE)
    images, labels = arrays["train_images"].astype(np.float64), arrays["train_labels"]
    per_image_std = images.reshape(len(images), -1).std(axis=1)
    assert (per_image_std > 5).all()  # no constant images
    class_means = np.stack([images[labels == label].mean(axis=0) for label in range(CLASSES)])
    distances = np.linalg.norm((class_means[:, None] - class_means[None]).reshape(CLASSES, CLASSES, -1), axis=2)
    assert distances[~np.eye(CLASSES, dtype=bool)].min() > 100  # every pair of classes looks different
    train_hashes = {hashlib.sha1(image.tobytes()).hexdigest() for image in arrays["train_images"]}
    test_hashes = {hashlib.sha1(image.tobytes()).hexdigest() for image in arrays["test_images"]}
    assert not train_hashes & test_hashes


def test_bundled_materializes_once_into_the_imagefolder_layout(bundled_root):
    for split, count in (("train", 500), ("val", 100)):
        folders = sorted(p for p in (bundled_root / split).iterdir() if p.is_dir())
        assert len(folders) == CLASSES
        assert all(len(list(folder.glob("*.png"))) == count for folder in folders)
    sample = next((bundled_root / "train" / "trouser").glob("*.png"))
    mtime = sample.stat().st_mtime_ns
    materialize_image_folder(bundled_root)  # second call: nothing rewritten
    assert sample.stat().st_mtime_ns == mtime


def test_bundled_goes_through_the_imagefolder_code_path(bundled_root):
    datamodule = BundledDataModule(
        root=bundled_root, num_classes=CLASSES, input_size=32, resize_size=36, holdout=0.1, num_workers=0, batch_size=16
    )
    assert isinstance(datamodule, ImageFolderDataModule)
    datamodule.setup()
    train_targets = [datamodule.train_set.dataset.targets[i] for i in datamodule.train_set.indices]
    val_targets = [datamodule.val_set.dataset.targets[i] for i in datamodule.val_set.indices]
    assert Counter(train_targets) == {label: 450 for label in range(CLASSES)}
    assert Counter(val_targets) == {label: 50 for label in range(CLASSES)}
    assert len(datamodule.test_set) == 1000
    assert not set(datamodule.train_set.indices) & set(datamodule.val_set.indices)
    train_steps = [type(step) for step in datamodule.train_set.dataset.transform.transforms]
    assert train_steps[:3] == [transforms.Resize, transforms.RandomCrop, transforms.RandomHorizontalFlip]
    images, labels = next(iter(datamodule.test_dataloader()))
    assert images.shape == (50, 3, 32, 32) and labels.dtype == torch.int64
    # grayscale replicated to three identical channels (compared before normalization)
    pixels = images * torch.tensor(datamodule.std)[:, None, None] + torch.tensor(datamodule.mean)[:, None, None]
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1])
    torch.testing.assert_close(pixels[:, 1], pixels[:, 2])
    assert pixels.std() > 0.1


def test_stratified_holdout_is_seeded_disjoint_and_per_class():
    targets = [0] * 20 + [1] * 10
    train, holdout = stratified_holdout(targets, 0.2, seed=3)
    assert stratified_holdout(targets, 0.2, seed=3) == (train, holdout)
    assert stratified_holdout(targets, 0.2, seed=4) != (train, holdout)
    assert sorted(train + holdout) == list(range(30))
    assert Counter(targets[i] for i in holdout) == {0: 4, 1: 2}
    assert Counter(targets[i] for i in stratified_holdout(targets, 3, seed=0)[1]) == {0: 3, 1: 3}


def _caltech_tree(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for name in [f"category{index}" for index in range(classes)] + ["BACKGROUND_Google"]:
        folder = root / "101_ObjectCategories" / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            size = (int(rng.integers(30, 60)), int(rng.integers(30, 60)), 3)
            Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(folder / f"image_{index:04d}.jpg")
    return root


def test_caltech101_split_excludes_background_and_is_seeded(tmp_path):
    root = _caltech_tree(tmp_path)
    make = lambda seed: Caltech101DataModule(root=root, num_classes=3, input_size=32, resize_size=36, seed=seed, num_workers=0)
    datamodule = make(0)
    datamodule.setup()
    assert datamodule.classes == ["category0", "category1", "category2"]
    sizes = [len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)]
    assert sizes == [24, 3, 3]
    indices = [set(part.indices) for part in (datamodule.train_set, datamodule.val_set, datamodule.test_set)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    again = make(0)
    again.setup()
    assert again.test_set.indices == datamodule.test_set.indices
    other = make(1)
    other.setup()
    assert other.test_set.indices != datamodule.test_set.indices
    images, _ = next(iter(datamodule.train_dataloader()))
    assert images.shape[1:] == (3, 32, 32)


def test_caltech101_bad_root_and_split_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="101_ObjectCategories/<class>/\\*.jpg"):
        Caltech101DataModule(root=tmp_path / "missing", num_classes=101).setup()
    root = _caltech_tree(tmp_path / "tree")
    with pytest.raises(ValueError, match="three positive fractions summing to 1"):
        Caltech101DataModule(root=root, num_classes=3, split=[0.5, 0.5, 0.5], num_workers=0).setup()


def test_imagefolder_without_root_explains_the_layout():
    with pytest.raises(ValueError, match="data.root is not set"):
        ImageFolderDataModule(root=None, num_classes=1000)
