"""Datasets: the bundled Fashion-MNIST subset, Caltech-101 splits, the ImageFolder hold-out."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image
from torchvision import transforms

from hnd_lightning.data import (
    BadImageError,
    BundledDataModule,
    Caltech101DataModule,
    ImageFolderDataModule,
    class_interleaved_order,
    load_rgb,
    materialize_image_folder,
    stratified_holdout,
    to_rgb,
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
    make = lambda seed: Caltech101DataModule(
        root=root, num_classes=3, input_size=32, resize_size=36, seed=seed, num_workers=0
    )
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


# --- unreadable and unusual images (data.on_bad_image) ---------------------------------------------


def _tree_with_bad_images(root: Path) -> tuple[Path, list[Path]]:
    """A 3-class tree (8 train, 4 val images per class) plus a truncated JPEG and a text file named .JPEG."""
    make_image_folder(root, classes=3, per_class={"train": 8, "val": 4}, size=16)
    good = (root / "val" / "class1" / "img0.jpg").read_bytes()
    truncated = root / "val" / "class1" / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = root / "train" / "class2" / "notes.JPEG"
    text.write_text("this is not an image\n")
    return root, [text, truncated]


def _datamodule(root: Path, **overrides) -> ImageFolderDataModule:
    settings = dict(root=root, num_classes=3, input_size=8, resize_size=8, holdout=3, batch_size=4, eval_batch_size=5)
    return ImageFolderDataModule(**{**settings, "num_workers": 0, **overrides})


def _all_batches(loader) -> list:
    return [batch for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_images_stop_the_run_naming_the_file(tmp_path, num_workers):
    root, (text, truncated) = _tree_with_bad_images(tmp_path)
    datamodule = _datamodule(root, num_workers=num_workers)
    datamodule.setup()
    with pytest.raises(BadImageError, match=f"(?i){truncated}.*truncated.*data.on_bad_image=skip"):
        _all_batches(datamodule.test_dataloader())
    train_folder = datamodule.train_set.dataset
    with pytest.raises(BadImageError, match=f"{text}.*UnidentifiedImageError"):
        [train_folder[index] for index in range(len(train_folder))]
    with pytest.raises(ValueError, match="data.on_bad_image='ignore' is not one of \\['error', 'skip'\\]"):
        _datamodule(root, on_bad_image="ignore")


def test_skip_mode_lists_each_unreadable_image_once_and_keeps_training_batches_full(tmp_path, caplog):
    root, bad = _tree_with_bad_images(tmp_path)
    datamodule = _datamodule(root, on_bad_image="skip")
    datamodule.setup()
    with caplog.at_level("WARNING", logger="hnd_lightning.data.images"):
        for _ in range(2):  # two epochs: each bad image is met twice, logged once
            train = _all_batches(datamodule.train_dataloader())
            val = _all_batches(datamodule.val_dataloader())
            test = _all_batches(datamodule.test_dataloader())
    assert datamodule.bad_images == sorted(str(path) for path in bad)
    assert [sum(str(path) in record.getMessage() for record in caplog.records) for path in bad] == [1, 1]
    # training: 25 train images (one bad), 9 held out -> 4 full batches of 4 (a bad one replaced, none dropped)
    assert [len(labels) for _, labels in train] == [4] * 4
    # evaluation: the truncated test image is dropped, every other image counted once
    assert sum(len(labels) for _, labels in test) == len(datamodule.test_set) - 1 == 12
    assert sum(len(labels) for _, labels in val) == len(datamodule.val_set) - (
        str(bad[0]) in _paths(datamodule.val_set)
    )


def _paths(subset) -> list[str]:
    return [subset.dataset.samples[i][0] for i in subset.indices]


def test_skip_mode_counts_images_skipped_inside_dataloader_workers(tmp_path):
    root, bad = _tree_with_bad_images(tmp_path)
    datamodule = _datamodule(root, on_bad_image="skip", num_workers=2)
    datamodule.setup()
    test = _all_batches(datamodule.test_dataloader())
    assert datamodule.bad_images == [str(bad[1])]
    _all_batches(datamodule.train_dataloader()), _all_batches(datamodule.val_dataloader())
    assert datamodule.bad_images == sorted(str(path) for path in bad)
    assert sum(len(labels) for _, labels in test) == 12


def test_an_all_unreadable_evaluation_batch_comes_out_empty(tmp_path):
    root = make_image_folder(tmp_path, classes=1, per_class={"train": 3, "val": 1}, size=8)
    (root / "val" / "class0" / "img0.jpg").write_text("not an image")
    datamodule = ImageFolderDataModule(
        root=root, num_classes=1, input_size=8, resize_size=8, holdout=1, num_workers=0, on_bad_image="skip"
    )
    datamodule.setup()
    ((images, labels),) = _all_batches(datamodule.test_dataloader())
    assert images.shape == (0, 3, 8, 8) and labels.shape == (0,)
    assert len(datamodule.bad_images) == 1


def test_16_bit_png_scales_to_8_bit_instead_of_clipping(tmp_path):
    values = np.array([[0, 257, 1000], [32896, 60000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    pixels = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 3, 3)
    np.testing.assert_array_equal(pixels[..., 0], np.rint(values / 257))  # 0 1 4 / 128 233 255
    assert (pixels[..., 0] == pixels[..., 2]).all()
    # 32-bit integer images holding 16-bit samples (older Pillow's mode for 16-bit PNGs) scale the same way
    np.testing.assert_array_equal(
        np.asarray(to_rgb(Image.fromarray(values.astype(np.int32), mode="I")))[..., 1], np.rint(values / 257)
    )


def test_other_modes_convert_to_8_bit_rgb(tmp_path):
    rgb = np.array([[[200, 30, 10], [0, 0, 255]]], dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    cases = {
        "P": palette,
        "LA": Image.fromarray(np.array([[[90, 0], [250, 255]]], dtype=np.uint8), mode="LA"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "1": Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1"),
        "F": Image.fromarray(np.array([[12.4, 300.0]], dtype=np.float32), mode="F"),
    }
    expected = {
        "P": rgb,
        "LA": [[[90] * 3, [250] * 3]],
        "CMYK": rgb,
        "1": [[[0] * 3, [255] * 3]],
        "F": [[[12] * 3, [255] * 3]],
    }
    for mode, image in cases.items():
        assert image.mode == mode
        converted = to_rgb(image)
        assert converted.mode == "RGB", mode
        np.testing.assert_array_equal(np.asarray(converted), np.asarray(expected[mode], dtype=np.uint8), err_msg=mode)
    # and through a file: a CMYK JPEG decodes to RGB close to its source colours
    Image.fromarray(np.full((8, 8, 3), (200, 30, 10), dtype=np.uint8)).convert("CMYK").save(
        tmp_path / "cmyk.jpg", quality=95
    )
    assert np.abs(np.asarray(load_rgb(tmp_path / "cmyk.jpg")).astype(int) - (200, 30, 10)).max() < 12


# --- class-interleaved evaluation order ------------------------------------------------------------


def test_class_interleaved_order_makes_every_prefix_stratified():
    targets = [0] * 50 + [1] * 30 + [2] * 20 + [3] * 7
    order = class_interleaved_order(targets, seed=5)
    assert sorted(order) == list(range(len(targets)))
    assert class_interleaved_order(targets, seed=5) == order
    assert class_interleaved_order(targets, seed=6) != order
    sizes = Counter(targets)
    for prefix in range(1, len(order) + 1):
        counts = Counter(targets[i] for i in order[:prefix])
        for label, size in sizes.items():
            assert abs(counts[label] - prefix * size / len(targets)) <= 1, (prefix, label)


def test_limited_evaluation_sees_every_class_and_full_evaluation_is_unchanged(tmp_path):
    root = make_image_folder(tmp_path, classes=5, per_class={"train": 4, "val": 6}, size=8)
    datamodule = ImageFolderDataModule(
        root=root, num_classes=5, input_size=8, resize_size=8, holdout=2, eval_batch_size=5, num_workers=0
    )
    datamodule.setup()
    folder_order = datamodule.test_set.dataset.targets  # class-sorted, as ImageFolder lists them

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[int] = []
            self.layer = torch.nn.Linear(1, 1)

        def test_step(self, batch, batch_idx):
            self.seen += batch[1].tolist()

    recorder = Recorder()
    trainer = pl.Trainer(limit_test_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(recorder, datamodule=datamodule, verbose=False)
    assert len(recorder.seen) == 10 and Counter(recorder.seen) == {label: 2 for label in range(5)}
    assert set(folder_order[:10]) == {0, 1}  # what the class-sorted order evaluated before
    full = [label for _, labels in datamodule.test_dataloader() for label in labels.tolist()]
    assert Counter(full) == Counter(folder_order) and sorted(datamodule.test_set.indices) == list(range(30))
    val_classes = [datamodule.val_set.dataset.targets[i] for i in datamodule.val_set.indices[:5]]
    assert sorted(val_classes) == [0, 1, 2, 3, 4]
    train_labels = [datamodule.train_set.dataset.targets[i] for i in datamodule.train_set.indices]
    assert train_labels == sorted(train_labels)  # the training subset is untouched (its loader shuffles)


# --- two processes materializing the bundled dataset at once ---------------------------------------


def _tiny_archive(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        classes=np.array(["a", "b"]),
        train_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
        train_labels=np.array([0, 1] * 4),
        test_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
        test_labels=np.array([0, 1] * 2),
    )
    return path


def _materialize_in_child(root: Path, archive: Path, report: Path, slow: bool) -> None:
    """Child process: materialize (slowly, for the first one) and report what this process logged."""
    import logging

    from hnd_lightning.data import bundled

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    bundled.log.addHandler(handler)
    bundled.log.setLevel(logging.INFO)
    if slow:
        write = bundled._write_pngs
        bundled._write_pngs = lambda folder, archive: (time.sleep(1.5), write(folder, archive))
    else:  # start once the slow one holds the lock and is writing
        deadline = time.monotonic() + 30
        while not list(root.parent.glob(f".staging-{root.name}-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
    bundled.materialize_image_folder(root, archive)
    report.write_text("\n".join(messages))


def test_two_processes_materialize_the_bundled_data_once(tmp_path):
    archive = _tiny_archive(tmp_path / "tiny.npz")
    root = tmp_path / "data" / "tiny"
    context = multiprocessing.get_context("fork")
    reports = [tmp_path / "first.log", tmp_path / "second.log"]
    children = [
        context.Process(target=_materialize_in_child, args=(root, archive, reports[0], True), daemon=True),
        context.Process(target=_materialize_in_child, args=(root, archive, reports[1], False), daemon=True),
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0]
    first, second = (report.read_text() for report in reports)
    assert "Bundled dataset written" in first and "written by another process; reusing it" in second
    assert "Bundled dataset written" not in second
    assert len(list(root.glob("train/*/*.png"))) == 8 and len(list(root.glob("val/*/*.png"))) == 4
    assert not list(root.parent.glob(".staging-*"))
    assert (root.stat().st_mode & 0o777) == 0o755


def test_under_ddp_each_evaluation_image_goes_to_exactly_one_rank(monkeypatch):
    from hnd_lightning.data.imagefolder import evaluation_sampler

    dataset = list(range(9))
    assert evaluation_sampler(dataset) is None  # one process: the loader's own order
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    shares = []
    for rank in range(4):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
        shares.append(list(evaluation_sampler(dataset)))
    # no padding with repeated images (Lightning's DistributedSampler would give every rank 3 of 12)
    assert sorted(index for share in shares for index in share) == dataset
    assert [len(share) for share in shares] == [3, 2, 2, 2]
    with pytest.raises(ValueError, match="3 evaluation images cannot be shared by 4 processes.*data.holdout"):
        evaluation_sampler(dataset[:3])
