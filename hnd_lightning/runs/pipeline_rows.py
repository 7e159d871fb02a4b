"""The rows of a pipeline's table: one per student run, then mean and standard deviation over seeds."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.reporting.tables import Column, percent

ACCURACIES = ("test_acc1", "test_acc5", "test_q8_acc1", "best_val_acc1")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _payload_columns(payload: dict[str, Any]) -> dict[str, Any]:
    # an entropy-coded student has no fixed-size formats: its bytes are measured on its strings
    return {
        "payload_shape": "x".join(str(side) for side in payload["bottleneck_shape"]),
        "payload_bytes_float32": payload.get("bytes_float32"),
        "payload_bytes_uint8": payload.get("bytes_uint8"),
        "payload_input_bytes": payload["input_bytes_uint8"],
        "payload_percent_of_input": payload["percent_of_input"],
        **{key: payload.get(key) for key in ("coding", "coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean")},
    }


def student_rows(stage: str, seed: int, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per evaluated model of a run's results.json (`models`: one, or one per size of a fused run)."""
    models = results["models"]
    epochs = max(int(results.get("epochs") or 0), 1)
    # a phased run's cost per phase (the Entropic Student's stage 1 and stage 2)
    phases = {
        f"seconds_per_epoch_{name}": round(phase["fit_seconds"] / max(int(phase.get("epochs") or 0), 1), 1)
        for name, phase in (results.get("phases") or {}).items()
    }
    rows = []
    for name, model in models.items():
        several = len(models) > 1
        rows.append(
            {
                "stage": f"{stage} B={model['bottleneck_channels']}" if several else stage,
                "method": results["method"],
                "seed": seed,
                "bottleneck_channels": model["bottleneck_channels"],
                **{key: model.get(key) for key in ACCURACIES},
                "trainable_parameters": model["trainable_parameters"],
                "epochs": epochs,
                "wall_seconds": round(results["wall_seconds"], 1),
                "seconds_per_epoch": round(results["fit_seconds"] / epochs, 1),
                **phases,
                "beta": model.get("beta"),
                "artifacts": str(Path(results["artifacts"]) / name) if several else results["artifacts"],
                **_payload_columns(model["payload"]),
            }
        )
    return rows


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage: the first run's settings, accuracies and times as the mean over seeds, with
    `<key>_std` (sample standard deviation, 0 for one seed) and the seeds listed."""
    stages: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        stages.setdefault(run["stage"], []).append(run)
    rows = []
    for stage_runs in stages.values():
        row = {key: value for key, value in stage_runs[0].items() if key not in ("seed", "artifacts")}
        row["seeds"] = [run["seed"] for run in stage_runs]
        for key in (*ACCURACIES, "wall_seconds", "seconds_per_epoch"):
            values = [run[key] for run in stage_runs if run.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        rows.append(row)
    return rows


def _mean_std(key: str):
    def cell(row: dict[str, Any]) -> str | None:
        if row.get(key) is None:
            return None
        spread = row.get(f"{key}_std")
        return percent(row[key]) + (f" ± {percent(spread)}" if spread and len(row.get("seeds", [])) > 1 else "")

    return cell


def columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The markdown columns; the 8-bit and loopback columns only when some row has them."""
    columns = [
        Column("stage"),
        Column("method"),
        Column("test_acc1", "test top-1 %", value=_mean_std("test_acc1")),
    ]
    if any(row.get("test_q8_acc1") is not None for row in rows):
        columns.append(Column("test_q8_acc1", "8-bit link top-1 %", value=_mean_std("test_q8_acc1")))
    columns += [
        Column("test_acc5", "test top-5 %", value=_mean_std("test_acc5")),
        Column("trainable_parameters", "trainable params", format=","),
        Column("epochs"),
        Column("wall_seconds", "wall time s", format=".1f"),
        Column("seconds_per_epoch", "s / epoch", format=".1f"),
        Column("payload_shape", "bottleneck"),
        Column("payload_bytes_float32", "float32 B / image"),
        Column("payload_bytes_uint8", "8-bit B / image"),
        Column("payload_input_bytes", "input uint8 B"),
    ]
    if any(row.get("split_end_to_end_ms_p50") is not None for row in rows):
        columns += [
            Column("split_end_to_end_ms_p50", "split over loopback ms (p50)", format=".2f"),
            Column("split_predictions_match", "same answers as in-process"),
        ]
    return columns


def notes(rows: Sequence[dict[str, Any]], curves: dict[str, list[list[dict[str, Any]]]]) -> list[str]:
    """Plain sentences under the table: each student against the teacher, and (with epoch curves)
    each method's accuracy at the training time the fastest method needed."""
    teacher = rows[0]
    lines = []
    for row in rows[1:]:
        if teacher.get("test_acc1") is not None and row.get("test_acc1") is not None:
            gap = 100 * (row["test_acc1"] - teacher["test_acc1"])
            seeds = f" (mean of {len(row['seeds'])} seeds)" if len(row.get("seeds", [])) > 1 else ""
            lines.append(
                f"- {row['stage']}: {abs(gap):.2f} points top-1 {'above' if gap > 0 else 'below'} the teacher{seeds}"
            )
        if row.get("test_q8_acc1") is not None and row.get("test_acc1") is not None:
            lines.append(
                f"- {row['stage']}: the 8-bit link changes top-1 by {100 * (row['test_q8_acc1'] - row['test_acc1']):+.2f} points"
            )
    if curves:
        budget = min(statistics.fmean(run[-1]["train_seconds"] for run in runs) for runs in curves.values())
        for method, runs in curves.items():
            at_budget = statistics.fmean(accuracy_at(run, budget) for run in runs)
            lines.append(
                f"- at equal training time ({budget:.0f} s): {method} {100 * at_budget:.2f} % test top-1 (mean over seeds, last epoch finished by then)"
            )
    return lines


def accuracy_at(curve: Sequence[dict[str, Any]], seconds: float) -> float:
    """Test top-1 of the last epoch that had finished after `seconds` of training."""
    reached = [point for point in curve if point["train_seconds"] <= seconds + 1e-9]
    return reached[-1]["test_acc1"]


def split_inference_columns(measured: dict[str, Any]) -> dict[str, Any]:
    """The loopback measurement's headline numbers for the table row of the student it ran."""
    latency = measured["latency_ms"]
    return {
        "split_end_to_end_ms_p50": latency["end_to_end"]["p50"],
        "split_device_ms_p50": latency["device"]["p50"],
        "split_server_ms_p50": latency["server"]["p50"],
        "split_bytes_sent": measured["bytes_sent"],
        "split_top1": measured["top1"],
        "split_predictions_match": measured["predictions_match"],
    }


def mean_jpeg_bytes(data_cfg: Any, num_images: int = 64, quality: int = 90) -> float:
    """Mean JPEG size (quality 90) of test images as the model sees them (resized and center-cropped)."""
    from omegaconf import OmegaConf

    from hnd_lightning.analysis.payload import jpeg_bytes, real_images

    data = OmegaConf.to_container(data_cfg, resolve=True)
    images, _ = real_images(
        OmegaConf.create({"data": data, "payload": {"num_images": num_images}}), data["input_size"], data["resize_size"]
    )
    return statistics.fmean(jpeg_bytes(image, quality) for image in images)
