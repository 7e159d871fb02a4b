"""`method=kd`: train the whole student against the full frozen teacher with knowledge distillation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory
from hnd_lightning.methods.student import StudentMethod


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    Logits are (N, num_classes), labels (N,); returns a scalar. The papers use alpha = 0.5, T = 1.
    """
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


class KDMethod(StudentMethod):
    """Student head and tail train on CE plus KL to the full teacher, which stays frozen."""

    method_name = "kd"

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        temperature: float = 1.0,
        alpha: float = 0.5,
    ) -> None:
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(
                f"method.temperature must be > 0 and method.alpha in [0, 1], got {temperature} and {alpha}."
            )
        super().__init__(
            teacher,
            architecture,
            num_classes,
            input_size,
            bottleneck_channels,
            optimizer,
            scheduler,
            temperature=temperature,
            alpha=alpha,
        )
        self.teacher = teacher
        self.freeze(self.teacher)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return distillation_loss(
            self.model(images), teacher_logits, labels, self.hparams.temperature, self.hparams.alpha
        )
