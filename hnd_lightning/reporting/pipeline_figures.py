"""The figures of the bundled experiments: `quickstart.png`, `compare.png` and `bottlenecks.png`.

Each takes the rows the pipeline already wrote into its table (accuracies as fractions, sizes in
bytes) and draws one PNG through `reporting.plots.figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.reporting.plots import figure

METHOD_COLORS = {"hnd": "tab:blue", "naive": "tab:orange", "kd": "tab:green", "original": "black"}


def quickstart_figure(path: str | Path, teacher: Mapping[str, Any], students: Sequence[Mapping[str, Any]]) -> Path:
    """Left: test top-1 of the teacher and each student (float32 and 8-bit link). Right: bytes sent per
    image by each student's 8-bit and float32 bottleneck against the uint8 input image."""
    with figure(path, size=(9.0, 3.8)) as axes:
        fig = axes.figure
        axes.remove()
        accuracy, sizes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
        bars = {"teacher": teacher.get("test_acc1")}
        for row in students:
            bars[f"{row['stage']}"] = row.get("test_acc1")
            if row.get("test_q8_acc1") is not None:
                bars[f"{row['stage']} 8-bit"] = row["test_q8_acc1"]
        labels = [label for label, value in bars.items() if value is not None]
        values = [100 * bars[label] for label in labels]
        accuracy.bar(labels, values, color=["black", *["tab:blue"] * (len(labels) - 1)])
        for index, value in enumerate(values):
            accuracy.text(index, value + 0.5, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
        accuracy.set_ylim(max(min(values) - 10, 0), 100)
        accuracy.tick_params(axis="x", labelsize=8)
        accuracy.set_ylabel("test top-1 %")
        accuracy.set_title("accuracy")
        size_labels, size_values = ["input image (uint8)"], [students[0]["payload_input_bytes"]] if students else [0]
        for row in students:
            size_labels += [f"{row['stage']} float32", f"{row['stage']} 8-bit"]
            size_values += [row["payload_bytes_float32"], row["payload_bytes_uint8"]]
        sizes.barh(size_labels, size_values, color=["gray", *["tab:blue"] * (len(size_values) - 1)])
        for index, value in enumerate(size_values):
            sizes.text(value, index, f" {value:,}", va="center", fontsize=8)
        sizes.set_xlim(0, max(size_values) * 1.3)
        sizes.set_xlabel("bytes sent per image")
        sizes.set_title("payload")
    return Path(path)


def compare_figure(
    path: str | Path, curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], teacher_acc1: float | None
) -> Path:
    """Test top-1 against training wall time, one line per method (mean over seeds at each epoch, the
    spread of the seeds as a band), one point per epoch; the teacher as a horizontal line."""
    import numpy as np

    with figure(path, size=(6.8, 4.4)) as axes:
        for method, runs in curves.items():
            epochs = min(len(run) for run in runs)
            seconds = np.array([[point["train_seconds"] for point in run[:epochs]] for run in runs])
            acc1 = 100 * np.array([[point["test_acc1"] for point in run[:epochs]] for run in runs])
            color = METHOD_COLORS.get(method)
            axes.plot(seconds.mean(0), acc1.mean(0), marker="o", color=color, label=f"{method} ({len(runs)} seeds)")
            if len(runs) > 1:
                axes.fill_between(seconds.mean(0), acc1.min(0), acc1.max(0), color=color, alpha=0.15)
        if teacher_acc1 is not None:
            axes.axhline(100 * teacher_acc1, color="black", linestyle="--", label="teacher")
        axes.set_xlabel("training wall time s (validation included, this machine)")
        axes.set_ylabel("test top-1 %")
        axes.set_ylim(bottom=0, top=100)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower right")
    return Path(path)


def bottlenecks_figure(
    path: str | Path,
    students: Sequence[Mapping[str, Any]],
    teacher_acc1: float | None,
    input_bytes: int,
    jpeg_bytes: float | None,
) -> Path:
    """Test top-1 against bytes sent per image, the papers' main figure: the students at float32 and
    over the 8-bit link, the teacher as a horizontal line, the raw input and its JPEG as references."""
    with figure(path, size=(6.8, 4.4)) as axes:
        for key, size_key, label, style in (
            ("test_acc1", "payload_bytes_float32", "HND float32", "-o"),
            ("test_q8_acc1", "payload_bytes_uint8", "HND 8-bit", "--s"),
        ):
            points = [(row[size_key], 100 * row[key]) for row in students if row.get(key) is not None]
            if points:
                axes.plot(*zip(*points), style, color="tab:blue", label=label)
                for (size, acc), row in zip(points, students):
                    axes.annotate(
                        f"B={row['bottleneck_channels']}",
                        (size, acc),
                        textcoords="offset points",
                        xytext=(4, -10),
                        fontsize=7,
                    )
        if teacher_acc1 is not None:
            axes.axhline(100 * teacher_acc1, color="black", linestyle="--", label="teacher (whole image on one side)")
        axes.axvline(input_bytes, color="gray", linestyle=":", label=f"input image, uint8 ({input_bytes:,} B)")
        if jpeg_bytes:
            axes.axvline(jpeg_bytes, color="tab:red", linestyle=":", label=f"input as JPEG q90 ({jpeg_bytes:,.0f} B)")
        axes.set_xscale("log")
        axes.set_xlabel("bytes sent per image (log)")
        axes.set_ylabel("test top-1 %")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    return Path(path)
