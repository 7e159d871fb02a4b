"""Sweeps: payload sizes, the summary table and plot of a Hydra multirun, and its Hydra callback.

A multirun (`python -m hnd_lightning.train -m model.bottleneck_channels=3,6,9,12`) writes one run
directory per job under the sweep directory, each with a `results.json` (see `train.py`). When the
sweep ends, `SweepSummary` (configured under `hydra.callbacks`) reads them all and writes into the
sweep directory:

    summary.csv   one row per job (columns: `COLUMNS`, plus `test_q8_acc1/5` when any job has them)
    summary.md    the same table in markdown, accuracies in %
    summary.png   test top-1 against payload bytes per image, one line per model + method

`python -m hnd_lightning.summarize SWEEP_DIR` writes the same files again, e.g. after a re-run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from hnd_lightning.runs.record import (
    RESULTS_FILE,
    STATUS_FAILED,
    STATUS_MISSING,
    STATUS_OK,
    in_multirun,
)

log = logging.getLogger(__name__)

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "summary.png"


COLUMNS = [
    "job",
    "model",
    "method",
    "bottleneck_channels",
    "payload_bytes_float32",
    "payload_bytes_uint8",
    "payload_percent_of_input",
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
ACCURACY_COLUMNS = {"best_val_acc1", "test_acc1", "test_acc5", *QUANTIZED_COLUMNS}


def _dirname_part(value: Any) -> str:
    """`3` -> "3", `[3, 6, 9]` (a fused run) -> "3-6-9": run directory names without spaces or brackets."""
    return "-".join(str(item) for item in value) if isinstance(value, (list, tuple, ListConfig)) else str(value)


# conf/hydra/default.yaml names each job's run directory with it (imported before Hydra resolves the names).
OmegaConf.register_new_resolver("hnd_dirname", _dirname_part, replace=True)


def bottleneck_payload(architecture: str, bottleneck_channels: Any, input_size: int) -> dict[str, Any] | None:
    """Bytes per image that the device sends: the encoder output of one `input_size`^2 RGB image.

    Returns the bottleneck tensor's shape (B, h, w), its size at float32 (4 bytes a value) and 8-bit
    (1 byte a value plus the per-image scale and zero point of `models.quantization`), the uint8
    input image's size (3 x H x W bytes) and the 8-bit payload as a percentage of it (the papers'
    figure: 1.68 % at B = 3, 224 x 224). None when `bottleneck_channels` is not a positive integer (e.g.
    `method=original`, which sends no bottleneck, or a fused run's list of sizes).
    """
    from hnd_lightning.models import build_encoder, get_architecture, output_shape
    from hnd_lightning.models.quantization import payload_bytes

    if not _positive_int(bottleneck_channels):
        return None
    encoder = build_encoder(get_architecture(architecture), bottleneck_channels)
    shape = output_shape(encoder, (1, 3, input_size, input_size))[1:]
    sizes = payload_bytes(math.prod(shape))
    input_bytes = 3 * input_size * input_size
    return {
        "bottleneck_shape": list(shape),
        "bytes_float32": sizes["float32"],
        "bytes_uint8": sizes["8bit"],
        "input_bytes_uint8": input_bytes,
        "percent_of_input": 100.0 * sizes["8bit"] / input_bytes,
    }


# ----------------------------------------------------------------------------- one job of a sweep
def log_sweep_hparams(trainer: Any, results: dict[str, Any]) -> None:
    """Put the run's settings and final metrics into TensorBoard's HPARAMS view.

    The settings are model, method, bottleneck channels, payload and input size plus every
    command-line override of the job (so whatever a sweep varied shows up); the metrics are
    the final ones of results.json under `final/`. Each run directory of a sweep holds its own
    TensorBoard folder, so `tensorboard --logdir <sweep dir>` compares them side by side.
    """
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.loggers import TensorBoardLogger

    payload = results.get("payload") or {}
    params: dict[str, Any] = {
        "model": results.get("architecture"),
        "method": results.get("method"),
        "bottleneck_channels": results.get("bottleneck_channels") or 0,
        "input_size": results.get("input_size"),
        "payload_bytes_float32": payload.get("bytes_float32", 0),
        "trainable_parameters": results.get("trainable_parameters"),
    }
    if HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            key, _, value = override.lstrip("+~").partition("=")
            params.setdefault(key, value)
    metrics = {f"final/{key}": value for key, value in results.get("metrics", {}).items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
            # The trainer already closed the writer; this reopens it, so flush and close it again.
            logger.finalize("success")


def refuse_ddp_subprocesses_in_multirun(trainer: Any) -> None:
    """Stop a multirun job that Lightning would run as DDP by re-launching the script per rank.

    Lightning's subprocess launcher starts ranks 1..N-1 with the command line of the main process;
    inside a Hydra multirun that command line is the whole sweep (`-m` and the value lists), so
    every extra rank would start the sweep over (Lightning issue 11300). Single runs are fine.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if in_multirun() and isinstance(launcher, _SubprocessScriptLauncher) and trainer.world_size > 1 and not external:
        raise RuntimeError(
            f"trainer=ddp with {trainer.world_size} processes cannot start its processes inside a Hydra multirun "
            "with the basic launcher (each extra rank would re-run the whole sweep). Use one of: "
            "the SLURM launcher (`hydra/launcher=slurm`, one task per GPU), a single run per job "
            "(no -m), or torchrun with a fixed `hydra.run.dir`. See README, 'Scaling out'."
        )


# ----------------------------------------------------------------------------- reading a sweep
def job_directories(sweep_dir: Path) -> list[Path]:
    """Run directories of a sweep: those Hydra wrote a `.hydra/config.yaml` or train.py a results.json into."""
    found = {path.parent.parent for path in sweep_dir.glob("**/.hydra/config.yaml")}
    found |= {path.parent for path in sweep_dir.glob(f"**/{RESULTS_FILE}")}
    found.discard(sweep_dir)
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


def read_job(job_dir: Path, sweep_dir: Path) -> list[dict[str, Any]]:
    """Summary rows of a run directory's results.json (or, without one, its Hydra config).

    One row per job; a fused HND run (`model.bottleneck_channels=[3,6,9]`) gives one row per student,
    named `<job>/b<B>`, with that student's payload and metrics (`test/b<B>/acc1`, ...).
    """
    results_path = job_dir / RESULTS_FILE
    try:
        results = json.loads(results_path.read_text())
    except FileNotFoundError:
        results = {**_job_settings(job_dir), "status": STATUS_MISSING, "error": f"no {RESULTS_FILE}"}
    except (OSError, json.JSONDecodeError) as error:
        results = {**_job_settings(job_dir), "status": STATUS_FAILED, "error": f"unreadable {RESULTS_FILE}: {error}"}
    metrics = results.get("metrics") or {}
    payload = results.get("payload")
    bottleneck = results.get("bottleneck_channels")
    if payload is None and results.get("method") != "original":
        try:  # a failed job's payload still places it on the trade-off
            payload = bottleneck_payload(results["architecture"], bottleneck, results["input_size"])
        except Exception:  # noqa: BLE001 - an unknown architecture or size leaves the cells empty
            payload = None
    row = {
        "job": str(job_dir.relative_to(sweep_dir)),
        "model": results.get("architecture"),
        "method": results.get("method"),
        "bottleneck_channels": bottleneck,
        "payload_bytes_float32": payload and payload["bytes_float32"],
        "payload_bytes_uint8": payload and payload["bytes_uint8"],
        "payload_percent_of_input": payload and payload["percent_of_input"],
        "best_val_acc1": metrics.get("best/val/acc1", metrics.get("val/acc1")),
        "test_acc1": metrics.get("test/acc1"),
        "test_acc5": metrics.get("test/acc5"),
        "trainable_parameters": results.get("trainable_parameters"),
        "wall_seconds": results.get("wall_seconds", results.get("fit_seconds")),
        "status": results.get("status", STATUS_OK),
        "error": results.get("error"),
    }
    for column, key in QUANTIZED_COLUMNS.items():
        if key in metrics:
            row[column] = metrics[key]
    students = results.get("students")
    if not isinstance(students, dict) or not students:
        return [row]
    rows = []
    for name, student in students.items():
        size = student.get("bottleneck_channels")
        payload = bottleneck_payload(results["architecture"], size, results["input_size"]) or {}
        student_row = {
            **row,
            "job": f"{row['job']}/{name}",
            "bottleneck_channels": size,
            "payload_bytes_float32": payload.get("bytes_float32"),
            "payload_bytes_uint8": payload.get("bytes_uint8"),
            "payload_percent_of_input": payload.get("percent_of_input"),
            "best_val_acc1": student.get("best_val_acc1"),
            "test_acc1": metrics.get(f"test/{name}/acc1"),
            "test_acc5": metrics.get(f"test/{name}/acc5"),
        }
        for column, key in QUANTIZED_COLUMNS.items():
            prefix, metric = key.split("/")
            student_row.pop(column, None)
            if f"{prefix}/{name}/{metric}" in metrics:
                student_row[column] = metrics[f"{prefix}/{name}/{metric}"]
        rows.append(student_row)
    return rows


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def collect_rows(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, columns) of every job under `sweep_dir`; the quantized columns only when present."""
    sweep_dir = Path(sweep_dir)
    rows = [row for job_dir in job_directories(sweep_dir) for row in read_job(job_dir, sweep_dir)]
    columns = list(COLUMNS)
    for column in QUANTIZED_COLUMNS:
        if any(column in row for row in rows):
            columns.insert(columns.index("trainable_parameters"), column)
    return rows, columns


# ----------------------------------------------------------------------------- writing the summary
def _markdown_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in ACCURACY_COLUMNS:
        return f"{100 * value:.2f}"
    if column == "payload_percent_of_input":
        return f"{value:.2f}"
    if column == "wall_seconds":
        return f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:200]


def _markdown_header(column: str) -> str:
    return f"{column} (%)" if column in ACCURACY_COLUMNS else column


def write_table(rows: list[dict[str, Any]], columns: list[str], sweep_dir: Path) -> tuple[Path, Path]:
    """Write `summary.csv` (raw values) and `summary.md` (accuracies in %) into `sweep_dir`."""
    csv_path, md_path = sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        "Payload: bytes per image sent from the device (8-bit payload as % of the uint8 input image).",
        "",
        "| " + " | ".join(_markdown_header(column) for column in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(column, row.get(column)) for column in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_tradeoff(rows: list[dict[str, Any]], path: Path) -> Path:
    """Plot test top-1 (%) against float32 payload bytes, one line per model + method.

    Jobs without a payload or a test accuracy (failed, missing, `original`) are left out; `original`
    runs are drawn as horizontal reference lines. 8-bit results, when present, are dashed lines
    against the 8-bit payload.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    quantized: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["status"] != STATUS_OK:
            continue
        label = f"{row['model']} {row['method']}"
        if row["method"] == "original" and row["test_acc1"] is not None:
            axes.axhline(100 * row["test_acc1"], linestyle=":", color="gray", label=f"{label} (no split)")
        if row["payload_bytes_float32"] is None:
            continue
        if row["test_acc1"] is not None:
            series.setdefault(label, []).append((row["payload_bytes_float32"], 100 * row["test_acc1"]))
        if row.get("test_q8_acc1") is not None:
            quantized.setdefault(label, []).append((row["payload_bytes_uint8"], 100 * row["test_q8_acc1"]))
    for label, points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        line = axes.plot(xs, ys, marker="o", label=f"{label} (float32)")[0]
        if label in quantized:
            qxs, qys = zip(*sorted(quantized[label]))
            axes.plot(qxs, qys, marker="s", linestyle="--", color=line.get_color(), label=f"{label} (8-bit)")
    axes.set_xlabel("payload per image (bytes)")
    axes.set_ylabel("test top-1 accuracy (%)")
    axes.set_title("Accuracy vs. payload")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no finished job with a payload", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_summary(sweep_dir: str | Path) -> dict[str, Any]:
    """Read every job under `sweep_dir` and write summary.csv, summary.md and summary.png there.

    Returns {"rows": [...], "csv": Path, "markdown": Path, "plot": Path}.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"Sweep directory {str(sweep_dir)!r} does not exist: pass the folder given by hydra.sweep.dir.")
    rows, columns = collect_rows(sweep_dir)
    csv_path, md_path = write_table(rows, columns, sweep_dir)
    plot_path = plot_tradeoff(rows, sweep_dir / SUMMARY_PNG)
    return {"rows": rows, "csv": csv_path, "markdown": md_path, "plot": plot_path}


def unfinished(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["status"] != STATUS_OK]


# ----------------------------------------------------------------------------- Hydra callback
class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, write the sweep summary into `hydra.sweep.dir`.

    Args:
        fail_on_error: exit with status 1 after writing the summary when a job failed or wrote no
            results, so scripts and schedulers notice (failed jobs never stop the sweep itself).
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if rank_zero_only.rank != 0:  # a multirun started on every rank (torchrun) summarizes once
            return
        summary = write_summary(config.hydra.sweep.dir)
        log.info("Sweep summary (%d rows): %s", len(summary["rows"]), summary["markdown"])
        log.info("\n%s", summary["markdown"].read_text())
        failed = unfinished(summary["rows"])
        if failed:
            log.error("%d of %d rows did not finish: %s", len(failed), len(summary["rows"]), ", ".join(r["job"] for r in failed))
            log.error("Re-run only those with the same command plus hydra.sweep.dir=%s skip_completed=true", config.hydra.sweep.dir)
            if self.fail_on_error:
                # SystemExit passes through Hydra's callback guard (which only warns on exceptions).
                raise SystemExit(1)
