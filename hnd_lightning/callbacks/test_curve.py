"""Test top-1 after every training epoch against the training time spent so far: the view the papers
argue from (which method reaches which accuracy for how much training)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torchmetrics.classification import MulticlassAccuracy

from hnd_lightning.files import write_json

CURVE_FILE = "epoch_curve.json"


class EpochTestCurve(pl.Callback):
    """Before training and after every epoch, test the evaluated model (`pl_module(images)`) on the
    DataModule's test loader and record `{"epoch", "train_seconds", "test_acc1"}`.

    `train_seconds` is the fit's wall time so far (training and validation steps, data loading,
    checkpointing) minus the time this callback spent testing, so the curve's own cost never counts.
    Written to `<dirpath>/epoch_curve.json` after each point (rank zero; single-device runs).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / CURVE_FILE
        self.points: list[dict[str, Any]] = []
        self._started = 0.0
        self._excluded = 0.0

    @torch.no_grad()
    def _test_acc1(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        metric = MulticlassAccuracy(pl_module.hparams.num_classes, top_k=1, average="micro").to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            for images, labels in trainer.datamodule.test_dataloader():
                metric.update(pl_module(images.to(pl_module.device)), labels.to(pl_module.device))
        finally:
            pl_module.train(was_training)
        return float(metric.compute())

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        began = time.perf_counter()
        train_seconds = began - self._started - self._excluded
        acc1 = self._test_acc1(trainer, pl_module)
        self.points.append({"epoch": epoch, "train_seconds": round(train_seconds, 2), "test_acc1": acc1})
        if trainer.is_global_zero:
            write_json(self.path, self.points)
        self._excluded += time.perf_counter() - began

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.points, self._excluded = [], 0.0
        self._started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self._record(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer, pl_module, trainer.current_epoch + 1)
