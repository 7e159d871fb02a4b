"""Shared base of every training method: evaluation, optimizer wiring and frozen-module handling."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from hnd_lightning.models import build_student
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class SplitComputingMethod(pl.LightningModule):
    """A training method over one evaluated model (`self.model`).

    Subclasses set up their models, call `freeze` on what must not train, and implement
    `training_loss(images, labels)`. Validation and test are the same for every method: top-1/top-5
    accuracy of `self.model` (the composed student, or the teacher for `original`).

    Args:
        architecture: teacher architecture name, e.g. "densenet169".
        num_classes: classifier outputs.
        input_size: square input side the model is built for.
        optimizer: a partial optimizer taking the trainable parameters (Hydra `_partial_: true`).
        scheduler: a partial LR scheduler taking the optimizer, or None.
    """

    method_name: ClassVar[str] = ""

    def __init__(
        self,
        architecture: str,
        num_classes: int,
        input_size: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        bottleneck_channels: int | None = None,
        **method_hparams: Any,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or partial(torch.optim.SGD, lr=1e-3, momentum=0.9)
        self.scheduler_factory = scheduler
        self.save_hyperparameters(
            {
                "method": self.method_name,
                "architecture": architecture,
                "num_classes": num_classes,
                "input_size": input_size,
                "bottleneck_channels": bottleneck_channels,
                **method_hparams,
            }
        )
        self._frozen: list[nn.Module] = []
        metrics = MetricCollection(
            {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # ----------------------------------------------------------------- frozen modules
    def freeze(self, *modules: nn.Module) -> None:
        """Stop `modules` from training: no gradients, eval mode (batch-norm statistics never move)."""
        for module in modules:
            module.requires_grad_(False)
            module.eval()
            self._frozen.append(module)

    def train(self, mode: bool = True) -> "SplitComputingMethod":
        # Lightning switches the whole module to train mode every epoch; frozen parts stay in eval.
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def on_fit_start(self) -> None:
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = count_parameters(self)
        log.info("%s: %s trainable of %s parameters", self.method_name, f"{trainable:,}", f"{total:,}")
        if self.logger is not None:
            self.logger.log_metrics({"trainable_parameters": float(trainable)}, step=0)

    # ----------------------------------------------------------------- steps
    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized images -> (N, num_classes) logits of the evaluated model."""
        return self.model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.training_loss(images, labels)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, prefix: str) -> None:
        images, labels = batch
        logits = self(images)
        metrics.update(logits, labels)
        self.log(f"{prefix}/loss", F.cross_entropy(logits, labels), batch_size=images.shape[0], sync_dist=True)
        self.log_dict(metrics, prog_bar=True, on_step=False, on_epoch=True, batch_size=images.shape[0])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}

    # ----------------------------------------------------------------- artifacts
    def load_best_weights(self, checkpoint_path: str | Path) -> None:
        """Load the weights of a Lightning checkpoint of this run (the best on `val/acc1`)."""
        checkpoint = torch.load(checkpoint_path, map_location=self.device, weights_only=True)
        self.load_state_dict(checkpoint["state_dict"])

    def export_artifacts(self, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        """Write the deployable weights and a JSON description into `directory`; return the files."""
        raise NotImplementedError


class StudentMethod(SplitComputingMethod):
    """Base of the methods that train a bottleneck-injected student (naive, KD, HND).

    Builds the student from `teacher` (its tail starts as a copy of the teacher's tail) and exports
    the student's head and tail as split artifacts.
    """

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        **method_hparams: Any,
    ) -> None:
        super().__init__(
            architecture, num_classes, input_size, optimizer, scheduler, bottleneck_channels, **method_hparams
        )
        self.model, self.teacher_head = build_student(teacher, architecture, bottleneck_channels, input_size)

    def export_artifacts(self, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        metadata = split_metadata(
            self.model,
            architecture=self.hparams.architecture,
            bottleneck_channels=self.hparams.bottleneck_channels,
            num_classes=self.hparams.num_classes,
            input_size=self.hparams.input_size,
            method=self.method_name,
            **data_info,
        )
        return save_split_artifacts(directory, self.model, metadata)
