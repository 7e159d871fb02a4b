"""DataModules: every dataset is served through the ImageFolder DataModule and its transforms."""

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
    "ImageFolderDataModule",
    "eval_transform",
    "stratified_holdout",
    "train_transform",
]
