"""`method=hnd`: Head Network Distillation, training only the student head to mimic the teacher head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.student import StudentMethod
from hnd_lightning.models import split_teacher


class HNDMethod(StudentMethod):
    """Only `model.head` (encoder + decoder) trains, with MSE (reduction sum, as in the papers) to the
    frozen teacher head's split tensor. Neither the teacher's tail nor the student's tail runs in
    training; the frozen tail is used when the composed student is validated and tested."""

    method_name = "hnd"

    def __init__(self, teacher: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(teacher, *args, **kwargs)
        self.teacher_head, _ = split_teacher(teacher, self.hparams.architecture)
        self.freeze(self.teacher_head, self.model.tail)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher_head(images)
        return F.mse_loss(self.model.head(images), target, reduction="sum")
