"""Stops a run at the first non-finite training loss, before that step changes any weight."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or a trainable weight became NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    """Raise `NonFiniteLossError` on a NaN / infinite training loss (before its backward pass) or weight.

    The loss is checked every step in `on_before_backward`, so the failing step never updates the
    weights and the checkpoints written so far stay finite; the trainable weights are checked at the
    end of every epoch, before `last.ckpt` is written and before the artifacts are exported. The run
    then fails (status "failed" in results.json) and exports nothing. Checking the loss costs one
    device synchronization per step.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                self._message(trainer, pl_module, f"training loss {loss.detach().float().sum().item()}")
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bad = [
            name
            for name, weight in pl_module.named_parameters()
            if weight.requires_grad and not bool(torch.isfinite(weight).all())
        ]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteLossError(self._message(trainer, pl_module, f"weights in {shown}"))

    @staticmethod
    def _message(trainer: pl.Trainer, pl_module: pl.LightningModule, what: str) -> str:
        method = getattr(pl_module, "method_name", type(pl_module).__name__)
        batch = trainer.fit_loop.epoch_loop.batch_idx
        rates = sorted({group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups})
        rate = ", ".join(f"{lr:g}" for lr in rates) or "unknown"
        huge = any(math.isfinite(lr) and lr > 1.0 for lr in rates)
        return (
            f"Non-finite {what} in method={method} at epoch {trainer.current_epoch}, step {trainer.global_step} "
            f"(batch {batch} of the epoch): training diverged and stops here, exporting nothing. "
            f"Likely fix: {'a far smaller' if huge else 'a lower'} learning rate (method.optimizer.lr, now {rate}; the "
            "papers use 1e-3), or a look at the input data. Start a new run directory (or resume=never): the "
            "optimizer state in this run's checkpoints keeps the old learning rate."
        )
