"""Continuing a run by re-running it (`resume=auto`): which checkpoint, and whether it belongs to this run.

A run directory keeps `checkpoints/last.ckpt` (written by `callbacks.RecoveryCheckpoint` after every
epoch, every `checkpoint.every_minutes` and on SIGTERM) and, after a SLURM requeue signal, Lightning's
`hpc_ckpt_<n>.ckpt`. Re-running the same command into the same directory continues from the newest of
them when its model and method settings equal the current ones; when they differ, the error names each
setting, so another bottleneck size or method never meets a raw state-dict size mismatch.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from hnd_lightning.callbacks.checkpointing import (
    LAST_CHECKPOINT,
    RUN_SETTINGS_KEY,
    RecoveryCheckpoint,
    checkpoint_damage,
    damaged_checkpoint_error,
)
from hnd_lightning.files import remove_temp_files

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never")
# Lightning's checkpoint on a SLURM requeue signal, in the trainer's default_root_dir (the run directory)
HPC_CHECKPOINT_GLOB = "hpc_ckpt_*.ckpt"


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings a checkpoint must share with the current config to be continued: model and method."""
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "method": OmegaConf.to_container(cfg.method, resolve=True),
    }


def checkpoint_folder(cfg: DictConfig, trainer: pl.Trainer) -> Path:
    recovery = recovery_callback(trainer)
    return recovery.dirpath if recovery is not None else Path(cfg.paths.output_dir) / "checkpoints"


def recovery_callback(trainer: pl.Trainer) -> RecoveryCheckpoint | None:
    return next((callback for callback in trainer.callbacks if isinstance(callback, RecoveryCheckpoint)), None)


def latest_checkpoint(cfg: DictConfig, trainer: pl.Trainer) -> Path | None:
    """The newest of the run directory's `checkpoints/last.ckpt` and `hpc_ckpt_*.ckpt`, or None."""
    candidates = [
        checkpoint_folder(cfg, trainer) / LAST_CHECKPOINT,
        *Path(trainer.default_root_dir).glob(HPC_CHECKPOINT_GLOB),
    ]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def prepare_resume(cfg: DictConfig, method: pl.LightningModule, trainer: pl.Trainer) -> str | None:
    """Set `cfg.ckpt_path` to the checkpoint this run continues from (`resume` and `ckpt_path`); return it.

    Also hands the run's settings to the RecoveryCheckpoint callback, so every checkpoint carries them.
    Raises ValueError when the checkpoint's settings differ and `DamagedCheckpointError` when it is damaged.
    """
    settings = run_settings(cfg)
    if (recovery := recovery_callback(trainer)) is not None:
        recovery.run_settings = settings
    mode = str(cfg.get("resume", "auto"))
    if mode not in RESUME_MODES:
        raise ValueError(
            f"resume={mode!r} is not one of {', '.join(RESUME_MODES)} (auto: continue this run directory's last checkpoint)."
        )
    explicit = cfg.get("ckpt_path")
    path = Path(explicit) if explicit else (latest_checkpoint(cfg, trainer) if mode == "auto" else None)
    if path is None:
        return None
    differences = settings_differences(read_checkpoint(path), settings, dict(method.hparams))
    if differences:
        raise ValueError(
            f"Cannot continue from {path}: it was trained with other settings ({'; '.join(differences)}). "
            "Re-run with the checkpoint's settings to continue it, write this run into another directory "
            "(hydra.run.dir=... or another hydra.sweep.dir), or train from scratch here with resume=never."
        )
    log.info("Continuing from %s (resume=%s)", path, "ckpt_path" if explicit else mode)
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
    return str(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at `path`, its tensors memory-mapped; a damaged file raises `DamagedCheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Checkpoint {path} does not exist (ckpt_path=...).") from error
    except Exception as error:
        problem = checkpoint_damage(path)
        if problem is None:
            raise
        raise damaged_checkpoint_error(path, problem) from error


def settings_differences(checkpoint: dict[str, Any], settings: dict[str, Any], hparams: dict[str, Any]) -> list[str]:
    """'key: <checkpoint value> there, <current value> now' for every setting that differs.

    Compares the run settings the checkpoint carries (model and method config) or, in a checkpoint
    without them (another tool's), the LightningModule's hyper-parameters (method, architecture, sizes).
    """
    saved = checkpoint.get(RUN_SETTINGS_KEY)
    if saved is not None:
        theirs, ours = _flatten(saved), _flatten(settings)
    else:
        theirs = checkpoint.get("hyper_parameters") or {}
        ours = {key: hparams[key] for key in theirs if key in hparams}
        theirs = {key: theirs[key] for key in ours}
    return [
        f"{key}: {theirs.get(key)!r} there, {ours.get(key)!r} now"
        for key in sorted(set(theirs) | set(ours))
        if theirs.get(key) != ours.get(key)
    ]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {key: item for name, child in value.items() for key, item in _flatten(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def refuse_empty_training(trainer: pl.Trainer) -> None:
    """Raise ValueError when the trainer would train no step (e.g. trainer.max_epochs=0).

    Such a run would export the untrained student as if it were a result.
    """
    if trainer.fast_dev_run:
        return
    empty = {
        "trainer.max_epochs": trainer.max_epochs,
        "trainer.max_steps": trainer.max_steps,
        "trainer.limit_train_batches": trainer.limit_train_batches,
    }
    zero = [f"{key}={value}" for key, value in empty.items() if value == 0]
    if zero:
        raise ValueError(
            f"{', '.join(zero)} trains nothing: the run would export untrained weights as its result. "
            "Set trainer.max_epochs >= 1 (the papers train 20 epochs); to test a trained run's artifacts use "
            "python -m hnd_lightning.evaluate."
        )


def remove_leftovers(cfg: DictConfig) -> None:
    """Remove the temporary files that killed writes left in the run directory (see `files.atomic_write`)."""
    output_dir = Path(cfg.paths.output_dir)
    for folder in (output_dir, output_dir / "checkpoints", output_dir / "artifacts"):
        if folder.is_dir():
            for path in remove_temp_files(folder):
                log.info("Removed %s, left by a write that was killed", path)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While building data and models (before Lightning installs its own handler), SIGTERM raises.

    Lightning's `SIGTERMException`, so a run stopped then still records status "interrupted"; outside
    the main thread (where handlers cannot be set) nothing changes.
    """

    def handler(signum: int, frame: Any) -> None:
        raise SIGTERMException()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
