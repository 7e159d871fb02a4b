"""`method=original`: train or fine-tune the unmodified teacher architecture with cross-entropy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory, SplitComputingMethod
from hnd_lightning.models.artifacts import save_teacher_artifacts

TEACHER_NAME = "teacher"


class OriginalMethod(SplitComputingMethod):
    """Trains the whole teacher; its exported `teacher.safetensors` is what `model.teacher.checkpoint` takes."""

    method_name = "original"

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        bottleneck_channels: int | None = None,
    ) -> None:
        # The bottleneck size does not apply to the unmodified teacher; it is accepted so every method
        # composes from the same model config, and recorded as None.
        super().__init__(architecture, num_classes, input_size, optimizer, scheduler)
        self.model = teacher.train().requires_grad_(True)

    @property
    def models(self) -> dict[str, nn.Module]:
        return {TEACHER_NAME: self.model}

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(images), labels)

    def export_model(self, model: nn.Module, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        info = dict(data_info)
        metadata = {
            "architecture": self.hparams.architecture,
            "method": self.method_name,
            "num_classes": self.hparams.num_classes,
            "input_size": self.hparams.input_size,
            # the weights this teacher started from (its own are in teacher.safetensors)
            "initial_weights": info.pop("teacher", None),
            **info,
        }
        return save_teacher_artifacts(directory, model, metadata)
