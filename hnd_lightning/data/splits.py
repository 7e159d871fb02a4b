"""Dividing and ordering samples per class: the seeded hold-out and the class-interleaved evaluation order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset


def stratified_holdout(targets: Sequence[int], holdout: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Split sample indices into (train, holdout), drawing the hold-out per class with a fixed seed.

    `holdout` is a fraction of each class (0 < holdout < 1) or a number of images per class (>= 1).
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, target in enumerate(targets):
        by_class[target].append(index)
    generator = torch.Generator().manual_seed(seed)
    train_indices: list[int] = []
    holdout_indices: list[int] = []
    for target in sorted(by_class):
        indices = by_class[target]
        order = torch.randperm(len(indices), generator=generator).tolist()
        count = round(holdout * len(indices)) if holdout < 1 else int(holdout)
        count = min(max(count, 1), len(indices) - 1)
        holdout_indices += [indices[i] for i in order[:count]]
        train_indices += [indices[i] for i in order[count:]]
    return sorted(train_indices), sorted(holdout_indices)


def class_interleaved_order(targets: Sequence[int], seed: int) -> list[int]:
    """A fixed, seeded permutation of `range(len(targets))` in which every prefix is a stratified sample.

    Each class's samples are shuffled and spread evenly over the order (sample k of a class of n sits
    at position (k + 1/2) / n; ties between classes go by a seeded class order), so the first m samples
    hold about m * n / len(targets) of each class, within one. Evaluating the first batches only
    (`limit_val_batches`, `limit_test_batches`) then sees every class in proportion, not the first one or
    two classes of a class-sorted folder.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, target in enumerate(targets):
        by_class[target].append(index)
    generator = torch.Generator().manual_seed(seed)
    classes = sorted(by_class)
    class_rank = {classes[i]: rank for rank, i in enumerate(torch.randperm(len(classes), generator=generator).tolist())}
    keyed: list[tuple[float, int, int]] = []
    for target in classes:
        members = by_class[target]
        shuffled = torch.randperm(len(members), generator=generator).tolist()
        keyed += [
            ((position + 0.5) / len(members), class_rank[target], members[i]) for position, i in enumerate(shuffled)
        ]
    return [index for _, _, index in sorted(keyed)]


def class_interleaved(dataset: Dataset, seed: int) -> Subset:
    """`dataset` (an ImageFolder or a Subset of one) as a Subset in `class_interleaved_order`."""
    base, indices = (dataset.dataset, list(dataset.indices)) if isinstance(dataset, Subset) else (dataset, None)
    indices = indices if indices is not None else list(range(len(base)))
    order = class_interleaved_order([base.targets[i] for i in indices], seed)
    return Subset(base, [indices[i] for i in order])
