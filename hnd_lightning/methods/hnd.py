"""`method=hnd`: Head Network Distillation, training only the student head to mimic the teacher head."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hnd_lightning.methods.base import StudentMethod


class HNDMethod(StudentMethod):
    """Only `model.head` (encoder + decoder) trains, with MSE (reduction sum, as in the papers) to the
    frozen teacher head's split tensor. Neither the teacher's tail nor the student's tail runs in
    training; the frozen tail is used when the composed student is validated and tested."""

    method_name = "hnd"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.freeze(self.teacher_head, self.model.tail)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher_head(images)
        return F.mse_loss(self.model.head(images), target, reduction="sum")
