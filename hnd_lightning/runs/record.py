"""The run record: `results.json` in every run directory, its statuses, reading and writing it.

Written once per job by `runs.training.train` (status "ok") or by the train command when the job
raised (status "failed" with the error); read by the sweep summary, `skip_completed` re-runs and the
pipelines' teacher reuse. Always written atomically and as strict JSON (`hnd_lightning.files`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from hnd_lightning.files import write_json

RESULTS_FILE = "results.json"

# Job status in results.json: "ok", or "failed" with the error; a job without results.json is "missing".
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_MISSING = "missing"


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

    from hydra.core.hydra_config import HydraConfig

    model = cfg.get("model") or {}
    cause = error
    while cause.__cause__ is not None:  # e.g. the ValueError inside Hydra's InstantiationException
        cause = cause.__cause__
    method = HydraConfig.get().runtime.choices.get("method") if HydraConfig.initialized() else None
    channels = model.get("bottleneck_channels")
    return {
        "status": STATUS_FAILED,
        "error": f"{type(cause).__name__}: {cause}",
        "traceback": traceback.format_exception(error)[-12:],
        "method": method or str((cfg.get("method") or {}).get("_target_")),
        "architecture": model.get("architecture"),
        # a fused run's sizes as a plain list: an OmegaConf node cannot be written as JSON
        "bottleneck_channels": list(channels) if isinstance(channels, ListConfig) else channels,
        "input_size": model.get("input_size"),
        "num_classes": model.get("num_classes"),
        "wall_seconds": wall_seconds,
        "metrics": {},
    }
