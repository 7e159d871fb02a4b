"""The files of a sweep summary: summary.csv, summary.md (the shared table writer) and summary.png.

summary.csv   one row per evaluated model of every job (`runs.sweep_rows`), raw values
summary.md    the same table in markdown, accuracies in %
summary.png   test top-1 against payload bytes per image, one line per model + method
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.reporting.plots import figure
from hnd_lightning.reporting.tables import Column, percent, write_table_files

SUMMARY_NAME = "summary"
SUMMARY_CSV = f"{SUMMARY_NAME}.csv"
SUMMARY_MD = f"{SUMMARY_NAME}.md"
SUMMARY_PNG = f"{SUMMARY_NAME}.png"
ACCURACY_COLUMNS = ("best_val_acc1", "test_acc1", "test_acc5", "test_q8_acc1", "test_q8_acc5")
INTRO = (
    "Payload: bytes per image sent from the device (8-bit payload as % of the uint8 input image; an entropy-coded "
    "student's coded bytes as % of it). coded_bytes_*: the bytes behind test_acc1 (float32, or the coded strings)."
)


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _column(key: str) -> Column:
    if key in ACCURACY_COLUMNS:
        return Column(key, f"{key} (%)", format=percent)
    if key in ("payload_percent_of_input", "coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean"):
        return Column(key, format=".2f")
    if key == "wall_seconds":
        return Column(key, format=".1f")
    if key == "error":
        return Column(key, format=lambda error: str(error)[:200], missing="")
    return Column(key, format=_number)


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], sweep_dir: Path) -> tuple[Path, Path]:
    """Write `summary.csv` (raw values of `columns`) and `summary.md` (accuracies in %) into `sweep_dir`."""
    paths = write_table_files(
        sweep_dir,
        SUMMARY_NAME,
        rows,
        [_column(key) for key in columns],
        title=f"Sweep summary: {sweep_dir}",
        intro=INTRO,
        csv_keys=columns,
        formats=("md", "csv"),
    )
    return paths["csv"], paths["md"]


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot test top-1 (%) against payload bytes (`coded_bytes_mean`: the float32 size, or an entropy-coded
    student's measured bytes), one line per model + method.

    Rows without a payload or a test accuracy (failed, missing, `original`) are left out; `original`
    runs are drawn as horizontal reference lines. 8-bit results, when present, are dashed lines
    against the 8-bit payload.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    quantized: dict[str, list[tuple[float, float]]] = {}
    with figure(path, size=(7, 4.5)) as axes:
        for row in rows:
            if row["status"] != "ok":
                continue
            label = f"{row['model']} {row['method']}"
            if row["method"] == "original" and row["test_acc1"] is not None:
                axes.axhline(100 * row["test_acc1"], linestyle=":", color="gray", label=f"{label} (no split)")
            size = row.get("coded_bytes_mean") or row["payload_bytes_float32"]
            if size is None:
                continue
            if row["test_acc1"] is not None:
                series.setdefault(label, []).append((size, 100 * row["test_acc1"]))
            if row.get("test_q8_acc1") is not None:
                quantized.setdefault(label, []).append((row["payload_bytes_uint8"], 100 * row["test_q8_acc1"]))
        for label, points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            line = axes.plot(xs, ys, marker="o", label=label)[0]
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
    return Path(path)


def write_summary_files(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], sweep_dir: str | Path
) -> dict[str, Any]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`.

    Returns {"rows": rows, "csv": Path, "markdown": Path, "plot": Path}.
    """
    sweep_dir = Path(sweep_dir)
    csv_path, md_path = write_table(rows, columns, sweep_dir)
    return {
        "rows": list(rows),
        "csv": csv_path,
        "markdown": md_path,
        "plot": plot_tradeoff(rows, sweep_dir / SUMMARY_PNG),
    }
