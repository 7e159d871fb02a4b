"""`rate_accuracy.png`: test top-1 against bytes per image (log), the field's rate-accuracy figure.

One line per method and link from the rows of `runs.rate_accuracy` (HND / GHND float32 and 8-bit over
bottleneck sizes, the Entropic Student over beta, JPEG / WebP over quality), the teacher as a line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.reporting.plots import figure

# (method, link) -> (colour, line style, marker)
STYLES = {
    ("HND", "float32"): ("tab:blue", "-", "o"),
    ("HND", "8-bit"): ("tab:blue", "--", "s"),
    ("GHND", "float32"): ("tab:green", "-", "o"),
    ("GHND", "8-bit"): ("tab:green", "--", "s"),
    ("Entropic Student", "entropy-coded"): ("tab:purple", "-", "D"),
    ("JPEG", "input codec"): ("tab:red", ":", "x"),
    ("WebP", "input codec"): ("tab:orange", ":", "+"),
}


def rate_accuracy_figure(
    path: str | Path, rows: Sequence[Mapping[str, Any]], teacher_acc1: float | None, input_bytes: int | None = None
) -> Path:
    """Draw every (method, link) series of `rows` (bytes_mean, test_acc1) sorted by bytes; return `path`."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("bytes_mean") is None or row.get("test_acc1") is None:
            continue
        series.setdefault((row["method"], row["link"]), []).append((row["bytes_mean"], 100 * row["test_acc1"]))
    with figure(path, size=(7.6, 4.8)) as axes:
        for key, points in series.items():
            color, style, marker = STYLES.get(key, (None, "-", "."))
            xs, ys = zip(*sorted(points))
            axes.plot(xs, ys, linestyle=style, marker=marker, color=color, label=f"{key[0]} ({key[1]})", markersize=5)
        if teacher_acc1 is not None:
            axes.axhline(100 * teacher_acc1, color="black", linestyle="--", linewidth=1, label="teacher")
        if input_bytes:
            axes.axvline(input_bytes, color="gray", linestyle=":", label=f"input image, uint8 ({input_bytes:,} B)")
        axes.set_xscale("log")
        axes.set_xlabel("bytes per image (log)")
        axes.set_ylabel("test top-1 %")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right", fontsize=7)
    return Path(path)
