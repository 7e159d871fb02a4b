"""ImageFolder DataModule shared by ImageNet and every other dataset in the ImageFolder layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from hnd_lightning.data.images import (
    ON_BAD_IMAGE_CHOICES,
    BadImageRecord,
    CheckedImageFolder,
    DropUnreadable,
    ReplaceUnreadable,
)
from hnd_lightning.data.splits import class_interleaved, stratified_holdout
from hnd_lightning.models.imagenet import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


def train_transform(input_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]):
    """The papers' training augmentation: Resize(shorter side) + RandomCrop + horizontal flip.

    Resizing the shorter side keeps the aspect ratio (the public recipe squashed images to a square).
    """
    return transforms.Compose(
        [
            transforms.Resize(resize_size),
            transforms.RandomCrop(input_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def eval_transform(input_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]):
    """The papers' evaluation transform: Resize(shorter side) + CenterCrop."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size),
            transforms.CenterCrop(input_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def evaluation_sampler(dataset: Dataset) -> UnrepeatedDistributedSampler | None:
    """Under DDP, each rank's share of `dataset` for evaluation, every image in exactly one share (the shares
    differ by at most one image); None on one process. Lightning's own sampler pads the shares to equal size
    with repeated images, which validation and test would count twice."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    processes = torch.distributed.get_world_size()
    if processes == 1:
        return None
    if len(dataset) < processes:  # a rank without any batch would miss the metrics' collectives
        raise ValueError(
            f"{len(dataset)} evaluation images cannot be shared by {processes} processes: hold out more images "
            f"(data.holdout) or use fewer processes (trainer.devices, trainer.num_nodes)."
        )
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def layout_help(root: Path, train_dir: str, test_dir: str) -> str:
    return (
        f"Expected the ImageFolder layout under {str(root)!r}:\n"
        f"  {train_dir}/<class>/<image>.JPEG   (training images; a seeded hold-out of them validates)\n"
        f"  {test_dir}/<class>/<image>.JPEG   (test images, e.g. the official ILSVRC 2012 validation set"
        f" sorted into class folders)\n"
        f"Set the root with `data.root=PATH`."
    )


class ImageFolderDataModule(pl.LightningDataModule):
    """Train / hold-out validation / test loaders over `root/<train_dir>` and `root/<test_dir>`.

    Model selection uses a seeded, per-class hold-out of the training images (`holdout`), so the test
    set (for ImageNet the official validation set) is only used for the final test. Validation and test
    images come in a seeded class-interleaved order (`class_interleaved_order`): any prefix of them is a
    stratified sample, and the full sets are unchanged. `on_bad_image` ("error" or "skip") decides what
    an unreadable image does (see `hnd_lightning.data.images`); `bad_images` lists the skipped ones.
    Batches are (images (N, 3, input_size, input_size) float32 normalized, labels (N,) int64). Under DDP
    every validation and test image is evaluated once, on one rank (`evaluation_sampler`).
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int,
        input_size: int = 224,
        resize_size: int = 256,
        train_dir: str = "train",
        test_dir: str = "val",
        holdout: float = 0.02,
        seed: int = 42,
        batch_size: int = 32,
        eval_batch_size: int = 50,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__()
        if on_bad_image not in ON_BAD_IMAGE_CHOICES:
            raise ValueError(
                f"data.on_bad_image={on_bad_image!r} is not one of {list(ON_BAD_IMAGE_CHOICES)}: 'error' stops at the "
                f"first unreadable image (naming it), 'skip' leaves unreadable images out and lists them."
            )
        if root is None:
            raise ValueError("data.root is not set. " + layout_help(Path("<root>"), train_dir, test_dir))
        if not holdout > 0:
            raise ValueError(f"data.holdout must be a fraction in (0, 1) or a count >= 1, got {holdout!r}.")
        self.root = Path(root).expanduser()
        self.num_classes = num_classes
        self.input_size = input_size
        self.resize_size = resize_size
        self.train_dir = train_dir
        self.test_dir = test_dir
        self.holdout = holdout
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers and num_workers > 0
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.on_bad_image = on_bad_image
        self.bad_image_record: BadImageRecord | None = None
        self.classes: list[str] = []
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def prepare_data(self) -> None:
        """Hook for subclasses that materialize their files (e.g. the bundled dataset) before setup."""

    def check_layout(self) -> None:
        """Fail with the expected layout when the root, its splits or their class folders are missing."""
        problems = []
        for split in (self.train_dir, self.test_dir):
            folder = self.root / split
            if not folder.is_dir():
                problems.append(f"missing folder {str(folder)!r}")
                continue
            classes = [entry for entry in folder.iterdir() if entry.is_dir()]
            if not classes:
                problems.append(f"no class folders in {str(folder)!r}")
            elif len(classes) != self.num_classes:
                problems.append(
                    f"{str(folder)!r} has {len(classes)} class folders but data.num_classes="
                    f"{self.num_classes}; set data.num_classes={len(classes)} if that is intended"
                )
        if not problems:
            train_classes = sorted(p.name for p in (self.root / self.train_dir).iterdir() if p.is_dir())
            test_classes = sorted(p.name for p in (self.root / self.test_dir).iterdir() if p.is_dir())
            if train_classes != test_classes:
                only = sorted(set(train_classes) ^ set(test_classes))[:5]
                problems.append(f"train and test class folders differ (e.g. {only})")
        if problems:
            raise FileNotFoundError(
                "Bad dataset root: "
                + "; ".join(problems)
                + ".\n"
                + layout_help(self.root, self.train_dir, self.test_dir)
            )

    def _image_folder(self, split: str, transform) -> CheckedImageFolder:
        try:
            return CheckedImageFolder(str(self.root / split), transform, self.bad_image_record)
        except (FileNotFoundError, RuntimeError) as error:
            raise FileNotFoundError(f"{error}\n" + layout_help(self.root, self.train_dir, self.test_dir)) from error

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.check_layout()
        if self.on_bad_image == "skip":
            self.bad_image_record = BadImageRecord.temporary(owner=self)
        train_tf = train_transform(self.input_size, self.resize_size, self.mean, self.std)
        eval_tf = eval_transform(self.input_size, self.resize_size, self.mean, self.std)
        self.train_set, val_set, test_set, self.classes = self.build_splits(train_tf, eval_tf)
        self.val_set, self.test_set = class_interleaved(val_set, self.seed), class_interleaved(test_set, self.seed)
        log.info(
            "Data %s: %d train, %d validation, %d test images, %d classes",
            self.root,
            len(self.train_set),
            len(self.val_set),
            len(self.test_set),
            len(self.classes),
        )

    def build_splits(self, train_tf, eval_tf) -> tuple[Dataset, Dataset, Dataset, list[str]]:
        """(train, validation, test, class names): train and a seeded hold-out of `train_dir`, `test_dir`."""
        # Two views of the same training images: augmented for training, plain for the hold-out.
        train_view = self._image_folder(self.train_dir, train_tf)
        holdout_view = self._image_folder(self.train_dir, eval_tf)
        train_indices, holdout_indices = stratified_holdout(train_view.targets, self.holdout, self.seed)
        test_set = self._image_folder(self.test_dir, eval_tf)
        return Subset(train_view, train_indices), Subset(holdout_view, holdout_indices), test_set, train_view.classes

    @property
    def bad_images(self) -> list[str]:
        """Paths of the images skipped as unreadable so far (`on_bad_image=skip`), sorted, each once.

        Read in the main process; it includes what DataLoader workers skipped. Under DDP each rank lists
        what it read itself.
        """
        return self.bad_image_record.paths() if self.bad_image_record is not None else []

    def teardown(self, stage: str | None = None) -> None:
        if self.bad_images:
            log.warning(
                "%d unreadable images were skipped (data.on_bad_image=skip), e.g. %s",
                len(self.bad_images),
                self.bad_images[:3],
            )

    def _loader(self, dataset: Dataset, batch_size: int, training: bool) -> DataLoader:
        skipping = self.bad_image_record is not None
        dataset = ReplaceUnreadable(dataset) if skipping and training else dataset
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=training,
            sampler=None if training else evaluation_sampler(dataset),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            # A last training batch of one image breaks batch norm on 1x1 feature maps; drop it.
            drop_last=training and len(dataset) > batch_size,
            collate_fn=DropUnreadable(self.input_size) if skipping and not training else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, training=False)
