"""DataModules: every dataset is served through the ImageFolder DataModule and its transforms."""

from hnd_lightning.data.bundled import BundledDataModule, materialize_image_folder
from hnd_lightning.data.caltech101 import Caltech101DataModule, per_class_split
from hnd_lightning.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataModule,
    eval_transform,
    stratified_holdout,
    train_transform,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BundledDataModule",
    "Caltech101DataModule",
    "ImageFolderDataModule",
    "eval_transform",
    "materialize_image_folder",
    "per_class_split",
    "stratified_holdout",
    "train_transform",
]
