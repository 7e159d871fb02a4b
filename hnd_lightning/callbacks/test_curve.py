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
from hnd_lightning.methods.evaluation import share_trained_buffers

CURVE_FILE = "epoch_curve.json"


class EpochTestCurve(pl.Callback):
    """Before training and after every epoch, test the evaluated model (`pl_module(images)`) on the
    DataModule's test loader and record `{"epoch", "train_seconds", "test_acc1", "test_images"}`.

    `train_seconds` is the fit's wall time so far (training and validation steps, data loading,
    checkpointing) minus the time this callback spent testing, so the curve's own cost never counts.
    The test runs under the run's precision (autocast for bf16-mixed / 16-mixed), as `trainer.test`
    does. Under DDP every rank tests its own share of the test set (the DataModule's loader shares it,
    `data.imagefolder.evaluation_sampler`) with rank zero's batch-norm statistics, and the accuracy
    is reduced over the ranks; `test_images` counts the images tested, over all ranks.
    Written to `<dirpath>/epoch_curve.json` after each point (rank zero).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / CURVE_FILE
        self.points: list[dict[str, Any]] = []
        self._started = 0.0
        self._excluded = 0.0

    @torch.no_grad()
    def _test_acc1(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, int]:
        metric = MulticlassAccuracy(pl_module.hparams.num_classes, top_k=1, average="micro").to(pl_module.device)
        images_tested = torch.zeros((), dtype=torch.long, device=pl_module.device)
        was_training = pl_module.training
        share_trained_buffers(pl_module)
        pl_module.eval()
        try:
            for images, labels in trainer.datamodule.test_dataloader():
                with trainer.precision_plugin.forward_context():
                    logits = pl_module(images.to(pl_module.device))
                metric.update(logits, labels.to(pl_module.device))
                images_tested += labels.shape[0]
        finally:
            pl_module.train(was_training)
        # compute() reduces over the ranks (torchmetrics); the count is reduced here
        return float(metric.compute()), int(trainer.strategy.reduce(images_tested, reduce_op="sum"))

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        began = time.perf_counter()
        train_seconds = began - self._started - self._excluded
        acc1, images = self._test_acc1(trainer, pl_module)
        point = {"epoch": epoch, "train_seconds": round(train_seconds, 2), "test_acc1": acc1, "test_images": images}
        self.points.append(point)
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
