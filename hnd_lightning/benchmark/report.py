"""The benchmark's results: one record per subject, paired speed ratios, and the table (markdown for
the terminal and `<output>.md`, CSV beside it, the whole report as JSON)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from hnd_lightning.benchmark.memory import SCOPES
from hnd_lightning.files import write_json
from hnd_lightning.reporting.tables import Column, markdown_table, write_table_files

SETTINGS_SHOWN = (
    "architecture",
    "bottleneck_channels",
    "device",
    "device_name",
    "threads",
    "dtype",
    "batch",
    "input_size",
    "memory_format",
    "rounds",
    "warmup",
    "repeats",
)
COLUMNS = [
    Column("method"),
    Column("phase"),
    Column("part"),
    Column("images_per_s", "images/s", format=".2f"),
    Column(
        "images_per_s_min",
        "min..max",
        value=lambda r: f"{r['images_per_s_min']:.1f}..{r['images_per_s_max']:.1f}",
        align="right",
    ),
    Column("step_ms_median", "ms/step", format=".1f"),
    Column("spread", format=".0%", align="right"),
    Column("peak_memory_mb", "peak MB", format=".0f", align="right"),
]


def summarize(
    method: str,
    phase: str,
    part: str | None,
    batch: int,
    rounds: list[list[float]],
    peak_mb: float | None,
    memory_scope: str | None = None,
) -> dict[str, Any]:
    """One result record: median images/s over all timed steps (seconds, one list per round), their
    spread, the median step of each round, the peak memory and what that peak covers."""
    seconds = [s for round_seconds in rounds for s in round_seconds]
    median = statistics.median(seconds)
    return {
        "method": method,
        "phase": phase,
        "part": part,
        "images_per_s": batch / median,
        "images_per_s_min": batch / max(seconds),
        "images_per_s_max": batch / min(seconds),
        "step_ms_median": median * 1e3,
        # relative spread of the timed steps: (slowest - fastest) / median
        "spread": (max(seconds) - min(seconds)) / median,
        "step_ms": [s * 1e3 for s in seconds],
        "round_median_ms": [statistics.median(r) * 1e3 for r in rounds],
        "peak_memory_mb": peak_mb,
        "peak_memory_scope": memory_scope,
    }


def _paired_speedup(fast: dict[str, Any], slow: dict[str, Any]) -> float:
    # Median over rounds of the per-round ratio: both ran back to back, under the same machine load.
    return statistics.median(s / f for f, s in zip(fast["round_median_ms"], slow["round_median_ms"]))


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """HND's speed-up over the other methods, the Lightning path's speed relative to the plain loop and, on
    a weak device, how much slower each inference part ran than unthrottled (images/s ratios, each the
    median over rounds of that round's ratio)."""
    train = {r["method"]: r for r in results if r["phase"] == "train"}
    plain = next((r for r in results if r["phase"] == "plain_pytorch"), None)
    out = {}
    if "hnd" in train:
        for other in ("kd", "naive", "original"):
            if other in train:
                out[f"hnd_over_{other}"] = _paired_speedup(train["hnd"], train[other])
        if plain:
            out["lightning_hnd_over_plain_pytorch"] = _paired_speedup(train["hnd"], plain)
    unthrottled = {r["part"]: r for r in results if r["phase"] == "infer_unthrottled"}
    for row in results:  # a weak device's inference against the same part at full speed
        if row["phase"] == "infer" and row["part"] in unthrottled:
            out[f"weak_device_slowdown_{row['part']}"] = _paired_speedup(unthrottled[row["part"]], row)
    return out


def _settings_line(settings: dict[str, Any]) -> str:
    return "Settings: " + ", ".join(f"{key}={settings[key]}" for key in SETTINGS_SHOWN)


def _notes(report: dict[str, Any]) -> list[str]:
    notes = [f"- {key}: {value:.2f}x" for key, value in report["ratios"].items()]
    scopes = {r.get("peak_memory_scope") for r in report["results"]} - {None}
    notes += [f"- peak MB: {SCOPES[scope]}" for scope in sorted(scopes)]
    return notes


def format_table(report: dict[str, Any]) -> str:
    """The settings line, the results table (markdown) and the ratios, for the terminal."""
    return "\n".join(
        [_settings_line(report["settings"]), "", markdown_table(report["results"], COLUMNS), *_notes(report)]
    )


def write_report(report: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write the report as JSON to `output`, and its table as `<stem>.md` and `<stem>.csv` beside it."""
    output = Path(output)
    paths = write_table_files(
        output.parent,
        output.stem,
        report["results"],
        COLUMNS,
        title="Benchmark",
        intro=_settings_line(report["settings"]),
        notes=_notes(report),
        formats=("md", "csv"),
    )
    return {"json": write_json(output, report), **paths}
