"""The rows of a sweep summary: one per evaluated model of every job under a sweep directory.

A job's row comes from its `results.json`: one row per entry of its `models` record (`job` for a run
with one model, `job/b<B>` per student of a fused run), each with that model's bottleneck, payload,
trainable parameters, best val top-1 and test results. A job without a per-model record (failed,
killed before writing results, or written by an older version) gives one row from its run-level
fields, or from its saved Hydra config when it wrote nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hnd_lightning.models.quantization import bottleneck_payload
from hnd_lightning.runs.record import RESULTS_FILE, STATUS_FAILED, STATUS_MISSING, STATUS_OK

COLUMNS = [
    "job",
    "model",
    "method",
    "bottleneck_channels",
    "payload_bytes_float32",
    "payload_bytes_uint8",
    "payload_percent_of_input",
    # the bytes behind test_acc1: an entropy-coded student's measured on its strings, else the float32 size
    "coded_bytes_mean",
    "coded_bytes_p95",
    "estimated_bytes_mean",
    "best_val_acc1",
    "test_acc1",
    "test_acc5",
    "trainable_parameters",
    "wall_seconds",
    "status",
    "error",
]
# Written by `test_quantized=true` runs; a column appears when any job has it.
QUANTIZED_COLUMNS = {"test_q8_acc1": "test_q8/acc1", "test_q8_acc5": "test_q8/acc5"}
# Method settings a model's record carries (the Entropic Student's beta); a column appears when any row has one.
SETTING_COLUMNS = ("beta",)
ACCURACY_COLUMNS = ("best_val_acc1", "test_acc1", "test_acc5", *QUANTIZED_COLUMNS)


def job_directories(sweep_dir: Path) -> list[Path]:
    """Run directories of a sweep: those Hydra wrote a `.hydra/config.yaml` or a run a results.json into
    (the folders of a job's phases inside it excluded)."""
    jobs = {path.parent.parent for path in sweep_dir.glob("**/.hydra/config.yaml")}
    found = jobs | {path.parent for path in sweep_dir.glob(f"**/{RESULTS_FILE}")}
    found.discard(sweep_dir)
    # a phase of a job (the Entropic Student's stage1/, stage2/) is part of that job, not one of its own
    found = {path for path in found if not any(parent in jobs for parent in path.parents)}
    # Natural order, so job 10 follows job 9.
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))])


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _job_settings(job_dir: Path) -> dict[str, Any]:
    """Model, method, bottleneck channels and input size from the job's saved Hydra config."""
    config = _load_yaml(job_dir / ".hydra" / "config.yaml")
    choices = _load_yaml(job_dir / ".hydra" / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    model = config.get("model") or {}
    return {
        "architecture": model.get("architecture"),
        "method": choices.get("method"),
        "bottleneck_channels": model.get("bottleneck_channels"),
        "input_size": model.get("input_size"),
    }


def _read_results(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / RESULTS_FILE).read_text())
    except FileNotFoundError:
        return {**_job_settings(job_dir), "status": STATUS_MISSING, "error": f"no {RESULTS_FILE}"}
    except (OSError, json.JSONDecodeError) as error:
        return {**_job_settings(job_dir), "status": STATUS_FAILED, "error": f"unreadable {RESULTS_FILE}: {error}"}


def _payload_columns(payload: dict[str, Any] | None) -> dict[str, Any]:
    payload = payload or {}
    return {
        "payload_bytes_float32": payload.get("bytes_float32"),
        "payload_bytes_uint8": payload.get("bytes_uint8"),
        "payload_percent_of_input": payload.get("percent_of_input"),
        **{key: payload.get(key) for key in ("coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean")},
    }


def _run_level_row(results: dict[str, Any]) -> dict[str, Any]:
    """The model columns of a job without a per-model record, from its run-level fields."""
    metrics = results.get("metrics") or {}
    payload = results.get("payload")
    if payload is None:
        try:  # a failed job's payload still places it on the trade-off
            payload = bottleneck_payload(
                results["architecture"], results.get("bottleneck_channels"), results["input_size"]
            )
        except Exception:  # noqa: BLE001 - an unknown architecture or size leaves the cells empty
            payload = None
    row = {
        "bottleneck_channels": results.get("bottleneck_channels"),
        **_payload_columns(payload),
        "best_val_acc1": metrics.get("best/val/acc1", metrics.get("val/acc1")),
        "test_acc1": metrics.get("test/acc1"),
        "test_acc5": metrics.get("test/acc5"),
        "trainable_parameters": results.get("trainable_parameters"),
    }
    row.update({column: metrics[key] for column, key in QUANTIZED_COLUMNS.items() if key in metrics})
    return row


def _model_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The model columns of one entry of a results.json `models` record."""
    row = {
        "bottleneck_channels": summary.get("bottleneck_channels"),
        **_payload_columns(summary.get("payload")),
        "best_val_acc1": summary.get("best_val_acc1"),
        "test_acc1": summary.get("test_acc1"),
        "test_acc5": summary.get("test_acc5"),
        "trainable_parameters": summary.get("trainable_parameters"),
    }
    row.update({column: summary[column] for column in (*QUANTIZED_COLUMNS, *SETTING_COLUMNS) if column in summary})
    return row


def read_job(job_dir: Path, sweep_dir: Path) -> list[dict[str, Any]]:
    """Summary rows of a run directory: one per evaluated model (see the module docstring)."""
    results = _read_results(job_dir)
    job = str(job_dir.relative_to(sweep_dir))
    common = {
        "model": results.get("architecture"),
        "method": results.get("method"),
        "wall_seconds": results.get("wall_seconds", results.get("fit_seconds")),
        "status": results.get("status", STATUS_OK),
        "error": results.get("error"),
    }
    models = results.get("models")
    if not isinstance(models, dict) or not models:
        return [{"job": job, **common, **_run_level_row(results)}]
    several = len(models) > 1
    return [
        {"job": f"{job}/{name}" if several else job, **common, **_model_row(summary)}
        for name, summary in models.items()
    ]


def collect_rows(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, columns) of every job under `sweep_dir`; the quantized columns only when present."""
    from hnd_lightning.runs.sweep_jobs import unstarted_job_rows

    sweep_dir = Path(sweep_dir)
    job_dirs = job_directories(sweep_dir)
    rows = [row for job_dir in job_dirs for row in read_job(job_dir, sweep_dir)]
    rows += unstarted_job_rows(sweep_dir, job_dirs, COLUMNS)  # from the sweep's own job list (multirun.yaml)
    columns = list(COLUMNS)
    for column in QUANTIZED_COLUMNS:
        if any(column in row for row in rows):
            columns.insert(columns.index("trainable_parameters"), column)
    for column in SETTING_COLUMNS:
        if any(row.get(column) is not None for row in rows):
            columns.insert(columns.index("bottleneck_channels") + 1, column)
    return rows, columns


def unfinished(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose job did not finish (failed, missing, ...)."""
    return [row for row in rows if row["status"] != STATUS_OK]
