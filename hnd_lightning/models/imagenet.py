"""ILSVRC 2012 facts every part shares: its normalization and its 1,000 classes (wnids and readable names).

`IMAGENET_MEAN` / `IMAGENET_STD` are the per-channel statistics every ImageNet model here is fed with
(the papers', torchvision's; `data.imagefolder` normalizes with them by default).

`imagenet_classes.tsv` holds one `wnid<TAB>name` line per class, sorted by wnid. Sorted wnids are
torchvision's label order and what an ImageFolder of the validation set (one folder per wnid) yields,
so a model whose `split.json` lists these wnids as `classes` is evaluated on ILSVRC 2012 without
`allow_relabelled`. The wnids are timm's `imagenet_synsets.txt` (Apache-2.0), the names torchvision's
`weights.meta["categories"]` (its two disambiguated duplicates included: 134 "crane bird", 639
"maillot tank suit").
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSES_FILE = Path(__file__).resolve().parent / "imagenet_classes.tsv"
NUM_IMAGENET_CLASSES = 1000


@cache
def _read() -> tuple[tuple[str, ...], tuple[str, ...]]:
    lines = CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    if len(rows) != NUM_IMAGENET_CLASSES or any(len(row) != 2 for row in rows):
        raise RuntimeError(f"{CLASSES_FILE} is damaged (not 1000 lines of wnid<TAB>name); reinstall the package.")
    wnids, names = zip(*rows)
    return tuple(wnids), tuple(names)


def imagenet_wnids() -> list[str]:
    """The 1,000 ILSVRC 2012 wnids in label order (sorted), e.g. ['n01440764', 'n01443537', ...]."""
    return list(_read()[0])


def imagenet_class_names() -> list[str]:
    """The readable name of each label, in the same order, e.g. ['tench', 'goldfish', ...]."""
    return list(_read()[1])
