"""The run record: `results.json` in every run directory, its statuses, reading and writing it.

Written once per job by `runs.training.train` (status "ok", or "interrupted" when a signal or an exit
request stopped it) or by the train command when the job raised (status "failed" with the error);
every status records the teacher's identity (`teacher`, see `teacher_record`); read
by the sweep summary, `skip_completed` re-runs and the pipelines' teacher reuse. Always written
atomically and as strict JSON (`hnd_lightning.files`).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from hnd_lightning.files import write_json

RESULTS_FILE = "results.json"

# Job status in results.json: "ok", "failed" with the error, or "interrupted" (SIGTERM, Ctrl+C, a
# scheduler's exit) with where it stopped; a job without results.json is "missing".
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
STATUS_MISSING = "missing"


class RunInterrupted(SystemExit):
    """A run stopped by SIGTERM, Ctrl+C or an exit request, after its results.json said so.

    A `SystemExit` (so `except Exception` lets it through, as the signal meant the process to end) whose
    code is non-zero: 143 (128 + SIGTERM) for SIGTERM, 130 for Ctrl+C, else the exit request's own code.
    """

    def __init__(self, code: int, results: dict[str, Any]) -> None:
        super().__init__(code)
        self.results = results


def interruption_reason(interruption: BaseException) -> tuple[str, int]:
    """(what stopped the run, in words; the exit code) for a SystemExit or KeyboardInterrupt."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(interruption, RunInterrupted):
        return interruption.results.get("error", "interrupted"), int(interruption.code)
    if isinstance(interruption, SIGTERMException):
        return "SIGTERM (a scheduler's time limit or preemption, docker stop, kill)", 128 + signal.SIGTERM
    # Lightning turns Ctrl+C into sys.exit(1) while handling the KeyboardInterrupt
    if isinstance(interruption, KeyboardInterrupt) or isinstance(interruption.__context__, KeyboardInterrupt):
        return "Ctrl+C (KeyboardInterrupt)", 128 + signal.SIGINT
    code = getattr(interruption, "code", None)
    return f"an exit request (SystemExit {code!r}) during training", code if isinstance(code, int) and code else 1


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (`-m`), where a failure must not stop the other jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def write_results(output_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` as `<output_dir>/results.json` (callers write from rank zero only)."""
    return write_json(Path(output_dir) / RESULTS_FILE, results)


def completed_results(output_dir: str | Path) -> dict[str, Any] | None:
    """The results of a finished job in `output_dir` (status ok), or None if it must (re-)run."""
    try:
        results = json.loads((Path(output_dir) / RESULTS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("status", STATUS_OK) == STATUS_OK else None


def failed_results(cfg: DictConfig, error: BaseException, wall_seconds: float) -> dict[str, Any]:
    """What a failed job records in results.json: its settings, status "failed" and the error."""
    import traceback

    cause = error
    while cause.__cause__ is not None:  # e.g. the ValueError inside Hydra's InstantiationException
        cause = cause.__cause__
    return {
        **_job_record(cfg, STATUS_FAILED, f"{type(cause).__name__}: {cause}", wall_seconds),
        "traceback": traceback.format_exception(error)[-12:],
    }


def record_failure(cfg: DictConfig, error: BaseException, wall_seconds: float, rank: int) -> None:
    """Write `failed_results` as results.json (on rank zero) and, when every rank raised `error` in the same
    step (`raised_on_every_rank`, e.g. the finite-loss guard's), hold every rank at a barrier until it is
    written: Lightning's launcher kills the main process as soon as another rank exits non-zero."""
    if rank == 0:
        write_results(cfg.paths.output_dir, failed_results(cfg, error, wall_seconds))
    if getattr(error, "raised_on_every_rank", False):
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def interrupted_results(
    cfg: DictConfig, interruption: BaseException, wall_seconds: float, progress: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What an interrupted job records: its settings, status "interrupted", why, and where it stopped.

    `progress` holds the epoch, the global step and the checkpoint that a re-run continues from.
    """
    reason, _ = interruption_reason(interruption)
    progress = progress or {}
    checkpoint = progress.get("checkpoint")
    where = f" at epoch {progress['epoch']}, step {progress['global_step']}" if "global_step" in progress else ""
    resume = f"; re-run the same command to continue from {checkpoint} (resume=auto)" if checkpoint else ""
    return {**_job_record(cfg, STATUS_INTERRUPTED, f"interrupted by {reason}{where}{resume}", wall_seconds), **progress}


def teacher_record(cfg: DictConfig) -> dict[str, Any] | None:
    """The identity of the teacher `cfg.model.teacher` selects (`models.teacher_weights.teacher_identity`),
    as results.json and split.json record it; None when the settings name no valid teacher."""
    from hnd_lightning.models.teacher_weights import teacher_identity

    model = cfg.get("model") or {}
    teacher = model.get("teacher") or {}
    try:
        return teacher_identity(model.get("architecture"), teacher.get("weights"), teacher.get("checkpoint"))
    except (ValueError, OSError):  # a failed run's own error (unknown weights, unreadable file) says why
        return None


def _job_record(cfg: DictConfig, status: str, error: str, wall_seconds: float) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    model = cfg.get("model") or {}
    method = HydraConfig.get().runtime.choices.get("method") if HydraConfig.initialized() else None
    channels = model.get("bottleneck_channels")
    return {
        "status": status,
        "error": error,
        "method": method or str((cfg.get("method") or {}).get("_target_")),
        "architecture": model.get("architecture"),
        # a fused run's sizes as a plain list: an OmegaConf node cannot be written as JSON
        "bottleneck_channels": list(channels) if isinstance(channels, ListConfig) else channels,
        "input_size": model.get("input_size"),
        "num_classes": model.get("num_classes"),
        "teacher": teacher_record(cfg),
        "wall_seconds": wall_seconds,
        "metrics": {},
    }
