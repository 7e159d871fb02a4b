"""Learning-rate schedules that the papers' MultiStepLR does not cover (from-scratch teachers)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up over `warmup_epochs`, then a cosine decay towards `final_lr_ratio` x the base LR at `max_epochs`.

    Stepped once per epoch (Lightning's `interval: epoch`). Epoch e < warmup_epochs runs at
    base * (e + 1) / (warmup_epochs + 1); later epochs follow half a cosine from base down to the floor.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epochs: int,
        warmup_epochs: int = 0,
        final_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if max_epochs < 1 or not 0 <= warmup_epochs < max_epochs:
            raise ValueError(
                f"WarmupCosineLR needs max_epochs >= 1 and 0 <= warmup_epochs < max_epochs, "
                f"got max_epochs={max_epochs}, warmup_epochs={warmup_epochs}."
            )
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs
        self.final_lr_ratio = final_lr_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """Multiplier of the base LR during `epoch` (0-based)."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        decay_epochs = self.max_epochs - self.warmup_epochs
        progress = min((epoch - self.warmup_epochs) / decay_epochs, 1.0)
        return self.final_lr_ratio + (1 - self.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
