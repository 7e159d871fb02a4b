"""Caltech-101 over its standard `101_ObjectCategories/<class>/*.jpg` layout, split per class with a seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset

from hnd_lightning.data.imagefolder import ImageFolderDataModule
from hnd_lightning.data.images import CheckedImageFolder

BACKGROUND_CLASS = "BACKGROUND_Google"


def per_class_split(targets: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split indices per class into len(fractions) parts (e.g. 0.8/0.1/0.1) with a fixed seed.

    Every class gets at least one image in each part when it has enough images.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"data.split must be three positive fractions summing to 1, got {list(fractions)}.")
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[], [], []]
    for target in sorted(by_class):
        indices = by_class[target]
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        val_count = max(1, round(fractions[1] * len(order)))
        test_count = max(1, round(fractions[2] * len(order)))
        train_count = len(order) - val_count - test_count
        parts[0] += order[:train_count]
        parts[1] += order[train_count : train_count + val_count]
        parts[2] += order[train_count + val_count :]
    return [sorted(part) for part in parts]


class Caltech101DataModule(ImageFolderDataModule):
    """`data=caltech101 data.root=PATH`: train / validation / test drawn per class from one folder.

    `root` holds `101_ObjectCategories/` (or is that folder). `split` gives the per-class fractions
    (default 0.8 / 0.1 / 0.1); `exclude` lists class folders left out (the background class).
    """

    def __init__(
        self,
        *args,
        categories_dir: str = "101_ObjectCategories",
        split: Sequence[float] = (0.8, 0.1, 0.1),
        exclude: Sequence[str] = (BACKGROUND_CLASS,),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.root.name != categories_dir and (self.root / categories_dir).is_dir():
            self.root = self.root / categories_dir
        self.split = tuple(split)
        self.exclude = tuple(exclude)

    def check_layout(self) -> None:
        classes = (
            [p for p in self.root.iterdir() if p.is_dir() and p.name not in self.exclude] if self.root.is_dir() else []
        )
        if not classes or len(classes) != self.num_classes:
            found = f"{len(classes)} class folders" if self.root.is_dir() else "no such folder"
            raise FileNotFoundError(
                f"Bad Caltech-101 root {str(self.root)!r} ({found}; data.num_classes={self.num_classes}).\n"
                f"Expected <root>/101_ObjectCategories/<class>/*.jpg with {self.num_classes} classes besides "
                f"the excluded {list(self.exclude)}. Set the root with `data.root=PATH`."
            )

    def build_splits(self, train_tf, eval_tf) -> tuple[Dataset, Dataset, Dataset, list[str]]:
        # The category folders minus the excluded ones (the clutter class by default).
        train_view = CheckedImageFolder(str(self.root), train_tf, self.bad_image_record, excluded=self.exclude)
        eval_view = CheckedImageFolder(str(self.root), eval_tf, self.bad_image_record, excluded=self.exclude)
        train_indices, val_indices, test_indices = per_class_split(train_view.targets, self.split, self.seed)
        return (
            Subset(train_view, train_indices),
            Subset(eval_view, val_indices),
            Subset(eval_view, test_indices),
            train_view.classes,
        )
