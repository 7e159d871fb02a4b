"""Stops a run at the first non-finite training loss, before that step changes any weight, on every rank at once."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

# With a loss scaler (precision=16-mixed) a non-finite gradient is usually an fp16 overflow that the scaler
# handles by skipping the step and halving its scale; this many skips in a row (a scale 2^32 times smaller)
# means the loss itself stays non-finite.
MAX_SKIPPED_STEPS = 32


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or a trainable weight became NaN or infinite.

    `raised_on_every_rank`: the guard raised it on every process in the same step (under DDP too), so the
    processes can still meet, e.g. for rank zero to record the failure before any of them exits.
    """

    raised_on_every_rank = True


def _poison_if_non_finite(loss: torch.Tensor):
    """A gradient hook for `loss`: its incoming gradient times 1, or times NaN when `loss` is non-finite."""

    def hook(gradient: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(loss.detach()).all()
        return gradient * torch.where(finite, 1.0, math.nan).to(gradient.dtype)

    return hook


class FiniteLossGuard(pl.Callback):
    """Raise `NonFiniteLossError` on a NaN / infinite training loss (before its optimizer step) or weight.

    One decision for every rank, with no collective per step: a non-finite loss makes every gradient of
    its backward NaN (a hook on the loss), DDP's gradient all-reduce carries that to every rank, and the
    guard checks the gradients before each optimizer step, identical on every rank. So every rank stops in
    the same step, before it changes a weight, and the checkpoints written so far stay finite. Only then
    do the ranks exchange their losses (one all-gather), so the error names the step, the rank(s) whose
    loss was non-finite and every rank's loss; the run fails (status "failed" in results.json, written
    by rank zero) and exports nothing. The trainable weights are checked at the end of every epoch too.

    With a loss scaler (16-mixed) a non-finite gradient is the scaler's to handle (it skips the step);
    the guard stops once `MAX_SKIPPED_STEPS` steps in a row were skipped. Losses are reported unscaled.
    Costs one device synchronization per optimizer step (a norm over the step's gradients).
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._skipped = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._losses = []

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())
        if loss.requires_grad:
            loss.register_hook(_poison_if_non_finite(loss))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not gradients or bool(torch.isfinite(torch.nn.utils.get_total_norm(gradients)).all()):
            self._skipped = 0
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            self._skipped += 1
            if self._skipped < MAX_SKIPPED_STEPS:
                return  # the scaler skips this step and lowers its scale
        what = self._describe_losses(trainer, scaler)
        if scaler is not None:
            what += f" ({self._skipped} steps in a row skipped by the fp16 loss scaler)"
        raise NonFiniteLossError(self._message(trainer, pl_module, what))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the weights are the same on every rank (DDP), so every rank decides the same
        bad = [
            name
            for name, weight in pl_module.named_parameters()
            if weight.requires_grad and not bool(torch.isfinite(weight).all())
        ]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteLossError(self._message(trainer, pl_module, f"weights in {shown}"))

    def _describe_losses(self, trainer: pl.Trainer, scaler: Any) -> str:
        """'training loss nan' (one process) or 'training loss nan on rank 1 of 2 (...)': every rank's loss of the
        step, unscaled, exchanged now (every rank is here, in the same step)."""
        local = torch.stack([loss.float().sum() for loss in self._losses]).sum() if self._losses else torch.tensor(0.0)
        if scaler is not None:
            local = local / scaler.get_scale()
        device = trainer.strategy.root_device
        losses = trainer.strategy.all_gather(local.to(device)).reshape(-1).cpu().tolist()
        bad = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
        if len(losses) == 1:
            return f"training loss {losses[0]}" if bad else f"gradients (training loss {losses[0]:g})"
        every = ", ".join(f"{rank}: {value:g}" for rank, value in enumerate(losses))
        if not bad:
            return f"gradients (training losses finite on all {len(losses)} ranks: {every})"
        ranks = f"rank{'s' if len(bad) > 1 else ''} {', '.join(str(rank) for rank in bad)}"
        return f"training loss {losses[bad[0]]} on {ranks} of {len(losses)} (loss per rank: {every})"

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
