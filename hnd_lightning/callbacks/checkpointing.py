"""Checkpoints that survive kills, full disks and preemption.

- `AtomicCheckpointIO` (in the trainer's `plugins`, conf/trainer/default.yaml): Lightning writes every
  checkpoint through it. Lightning's own writer stages the file in TMPDIR and moves it over; on another
  filesystem that move is a copy, so a kill mid-copy leaves a torn `last.ckpt` and leaks the temporary
  file. Here the bytes go to a temporary file beside the target and are renamed into place
  (`files.atomic_write`). Loading a damaged checkpoint names the file and the newest good one.
- `RecoveryCheckpoint` (conf/callbacks/default.yaml): the only writer of `<dirpath>/last.ckpt`: after
  every training epoch (Lightning's `save_last` skips epochs without a new best), every
  `every_minutes` within an epoch (decided by every rank alike, without a collective per step), and on
  SIGTERM at the step where training stopped.
"""

from __future__ import annotations

import logging
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from hnd_lightning.files import atomic_write

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
# Where a checkpoint records the settings of its run (model and method), for resume=auto's check.
RUN_SETTINGS_KEY = "hnd_run_settings"


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, overwritten)."""


def checkpoint_damage(path: str | Path) -> str | None:
    """Why the checkpoint at `path` is damaged (truncated, empty, a corrupted member), or None if it is whole.

    Checks the archive that `torch.save` writes: its directory and every member's CRC (reads the file once).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    if not zipfile.is_zipfile(path):
        return f"not a complete checkpoint archive ({size:,} bytes: truncated or overwritten)"
    try:
        with zipfile.ZipFile(path) as archive:
            corrupted = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
        return f"an unreadable archive ({error})"
    return f"a corrupted member {corrupted!r}" if corrupted else None


def checkpoint_progress(path: str | Path) -> dict[str, Any]:
    """{"epoch", "global_step"} of a Lightning checkpoint, read without loading its tensors into memory."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}


def good_checkpoints(folder: str | Path, exclude: str | Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The undamaged `*.ckpt` files in `folder` (besides `exclude`), newest training progress first."""
    found = []
    for path in Path(folder).glob("*.ckpt"):
        if exclude is not None and path.resolve() == Path(exclude).resolve():
            continue
        try:
            if checkpoint_damage(path) is None:
                found.append((path, checkpoint_progress(path)))
        except Exception:  # noqa: BLE001 - an unreadable file is simply not offered
            continue
    return sorted(found, key=lambda item: (item[1]["global_step"] or 0, item[0].stat().st_mtime), reverse=True)


def damaged_checkpoint_error(path: str | Path, problem: str) -> DamagedCheckpointError:
    """The error for a damaged checkpoint: the file, what is wrong, and the newest good one to resume from."""
    path = Path(path)
    candidates = good_checkpoints(path.parent, exclude=path)
    if candidates:
        good, progress = candidates[0]
        offer = (
            f"The previous good checkpoint is {good} (epoch {progress['epoch']}, step {progress['global_step']}): "
            f"continue from it with ckpt_path={good}, or train from scratch with resume=never."
        )
    else:
        offer = f"No other good checkpoint is in {path.parent}: train from scratch with resume=never."
    return DamagedCheckpointError(f"Checkpoint {path} is damaged: {problem}. It cannot be resumed from. {offer}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes atomically beside the target and names damaged files on load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage (s3://, ...): fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r}).")
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as error:
            problem = None if "://" in str(path) else checkpoint_damage(path)
            if problem is None:
                raise
            raise damaged_checkpoint_error(path, problem) from error


class RecoveryCheckpoint(pl.Callback):
    """Keep `<dirpath>/last.ckpt` at most `every_minutes` of training old, and write it on SIGTERM.

    Args:
        dirpath: the checkpoint folder (the same as ModelCheckpoint's).
        every_minutes: also save within an epoch once this much time has passed since the last save
            (None or 0: only after each epoch and on SIGTERM). A SIGKILL then loses at most this much
            training (plus up to 1/20 of it, see below) and the step in flight.

    Every rank must take part in a save, so they decide together, without a collective per step: the
    clock is read only at check steps, where rank zero's decision and the step of the next check are
    broadcast; the next check comes after about `every_minutes / 20` (at most a minute) of training at
    rank zero's measured step time, so a run makes a few broadcasts an hour, whatever its length.

    `run_settings` (set by `runs.training.train`) is stored in every checkpoint of the run under
    `RUN_SETTINGS_KEY`, so that a later `resume=auto` can tell whether the settings still match.
    """

    def __init__(self, dirpath: str | Path, every_minutes: float | None = 30.0) -> None:
        if every_minutes is not None and every_minutes < 0:
            raise ValueError(
                f"checkpoint.every_minutes must be >= 0 (0 or null: only after each epoch), got {every_minutes}"
            )
        self.dirpath = Path(dirpath)
        self.interval_seconds = 60.0 * every_minutes if every_minutes else None
        self.run_settings: dict[str, Any] | None = None
        self._last_save = time.monotonic()
        self._reset_schedule()

    @property
    def last_path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    @property
    def check_seconds(self) -> float:
        """Training time between two checks of the clock: 1/20 of the interval, at most a minute."""
        return min(self.interval_seconds / 20, 60.0) if self.interval_seconds else math.inf

    def save(self, trainer: pl.Trainer) -> None:
        """Write `last.ckpt` now (every rank calls it; rank zero writes).

        The whole training state (weights, optimizer and scheduler states, loops, callbacks), not the
        weights only: `resume=auto` continues from it exactly where training stopped.
        """
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self._last_save = time.monotonic()

    @staticmethod
    def _skip(trainer: pl.Trainer) -> bool:
        return bool(trainer.fast_dev_run) or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING

    def _reset_schedule(self) -> None:
        # batches since training started (the same count on every rank), and the one at which to check next
        self._batches, self._next_check, self._last_check = 0, 1, (0, time.monotonic())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        self._reset_schedule()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.interval_seconds is None or self._skip(trainer):
            return
        self._batches += 1
        if self._batches < self._next_check:
            return
        now = time.monotonic()
        checked_batches, checked_at = self._last_check
        step_seconds = (now - checked_at) / max(self._batches - checked_batches, 1)
        due = now - self._last_save >= self.interval_seconds
        wait = max(1, int(self.check_seconds / max(step_seconds, 1e-6)))
        # rank zero's clock decides for every rank (their clocks differ), as all of them take part in a save
        due, self._next_check = trainer.strategy.broadcast((due, self._batches + wait))
        self._last_check = (self._batches, now)
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._skip(trainer):
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException between steps, so the saved state is a consistent one
        if isinstance(exception, SIGTERMException) and not self._skip(trainer):
            self.save(trainer)
            rank_zero_info(
                f"SIGTERM: saved epoch {trainer.current_epoch}, step {trainer.global_step} to {self.last_path}"
            )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.run_settings is not None:
            checkpoint[RUN_SETTINGS_KEY] = self.run_settings
