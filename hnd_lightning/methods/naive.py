"""`method=naive`: train the whole bottleneck-injected student with cross-entropy."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hnd_lightning.methods.student import StudentMethod


class NaiveMethod(StudentMethod):
    """Student head and tail both train; the tail starts from the teacher's weights; no teacher is kept."""

    method_name = "naive"

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(images), labels)
