"""DataModules: every dataset is served through the ImageFolder DataModule and its transforms."""

from hnd_lightning.data.bundled import BundledDataModule, materialize_image_folder
from hnd_lightning.data.caltech101 import Caltech101DataModule, per_class_split
from hnd_lightning.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataModule,
    eval_transform,
    train_transform,
)
from hnd_lightning.data.images import BadImageError, load_rgb, to_rgb
from hnd_lightning.data.splits import class_interleaved_order, stratified_holdout

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BadImageError",
    "BundledDataModule",
    "Caltech101DataModule",
    "ImageFolderDataModule",
    "class_interleaved_order",
    "eval_transform",
    "load_rgb",
    "materialize_image_folder",
    "per_class_split",
    "stratified_holdout",
    "to_rgb",
    "train_transform",
]
