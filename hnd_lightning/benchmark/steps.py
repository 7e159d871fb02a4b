"""The step timing harness: seconds per step over one repeated batch, through a Lightning Trainer or a
plain loop. The first `warmup` steps are untimed; each timed step runs from the previous step's end to
its own, so fetching the batch, hooks, logging, backward and the optimizer step all count."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from hnd_lightning.benchmark.settings import LIGHTNING_PRECISION
from hnd_lightning.methods import SplitComputingMethod
from hnd_lightning.profiling import synchronize

Batch = tuple[torch.Tensor, torch.Tensor]


class RepeatedBatch(Dataset):
    """The same (images, labels) batch `length` times, served by a DataLoader with `batch_size=None`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, length: int) -> None:
        self.images, self.labels, self.length = images, labels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        return self.images, self.labels


def repeated_loader(batch: Batch, steps: int) -> DataLoader:
    return DataLoader(RepeatedBatch(*batch, steps), batch_size=None, shuffle=False, num_workers=0)


def timed(ends: list[float], warmup: int) -> list[float]:
    """Seconds of each step after the first `warmup`, from the end timestamps of consecutive steps."""
    return [ends[k] - ends[k - 1] for k in range(warmup, len(ends))]


class StepTimer(pl.Callback):
    """Timestamps every `on_train_batch_end`; consecutive differences are whole Trainer steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence the Trainer's banners ("GPU available", "model summary"), which would drown the table."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def lightning_devices(device: torch.device) -> tuple[str, list[int] | int]:
    """The Trainer's `accelerator` and `devices` that run on `device`: ("gpu", [N]) for cuda:N (plain "cuda":
    the current GPU), ("cpu", 1) otherwise. `devices=1` on a GPU would always mean GPU 0."""
    if device.type != "cuda":
        return "cpu", 1
    return "gpu", [device.index if device.index is not None else torch.cuda.current_device()]


def time_lightning_step(
    method: SplitComputingMethod, cfg: DictConfig, device: torch.device, batch: Batch
) -> list[float]:
    """Seconds per optimizer step of `method` run by a Lightning Trainer, for the `repeats` timed steps."""
    timer = StepTimer(device)
    accelerator, devices = lightning_devices(device)
    with quiet_lightning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(no `val_dataloader`|LeafSpec|does not have many workers).*")
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            precision=LIGHTNING_PRECISION[cfg.dtype],
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(method, train_dataloaders=repeated_loader(batch, cfg.warmup + cfg.repeats))
    # Lightning's teardown moved the module to the CPU (Strategy.teardown); back, so that every round
    # starts as the first one and the peak memory counts its weights once
    method.to(device)
    return timed(timer.ends, cfg.warmup)


def plain_hnd_step(
    teacher_head: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, autocast: Callable[[], Any]
) -> Callable[[torch.Tensor], None]:
    """The HND step with no framework: frozen teacher head, MSE (sum) of the student head, one optimizer step."""

    def step(images: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            with torch.no_grad():
                target = teacher_head(images)
            loss = F.mse_loss(head(images), target, reduction="sum")
        loss.backward()
        optimizer.step()

    return step


def time_loop(step: Callable[[torch.Tensor], Any], cfg: DictConfig, device: torch.device, batch: Batch) -> list[float]:
    """Seconds of each iteration of `for images, labels in loader: step(images)` over the same batch."""
    ends = []
    for images, _ in repeated_loader(batch, cfg.warmup + cfg.repeats):
        step(images.to(device, non_blocking=True))
        synchronize(device)
        ends.append(time.perf_counter())
    return timed(ends, cfg.warmup)
