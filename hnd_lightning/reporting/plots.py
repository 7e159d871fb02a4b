"""Plot helpers: PNG figures drawn off-screen (matplotlib's Agg backend) and written atomically.

with figure(path, size=(6.4, 4.2)) as axes:      # one Axes; saved to `path` and closed on exit
    axes.plot(x, y)
line_plot(path, x, {"all on device": [...], "HND split": [...]}, xlabel=..., ylabel=..., log_x=True,
          vertical_lines={"crossover": 3.2})
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.files import atomic_write

DPI = 120


@contextlib.contextmanager
def figure(path: str | Path, size: tuple[float, float] = (6.4, 4.2)) -> Iterator[Any]:
    """Yield a matplotlib Axes; on exit lay it out, write the PNG to `path` atomically and close it."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; imported here so importing this module stays cheap
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(figsize=size)
    try:
        yield axes
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        with atomic_write(path) as handle:
            handle.write(buffer.getvalue())
    finally:
        plt.close(fig)


def line_plot(
    path: str | Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    log_x: bool = False,
    y_from_zero: bool = True,
    vertical_lines: Mapping[str, float] | None = None,
) -> Path:
    """A PNG with one marked line per entry of `series` (label -> y values over `x`) and a legend.

    `log_x` puts x on a log axis ticked at the given x values; `y_from_zero` starts the y axis at 0;
    `vertical_lines` (label -> x) draws dotted vertical lines at the x values inside the plotted range.
    """
    with figure(path) as axes:
        for label, values in series.items():
            axes.plot(x, values, marker="o", label=label)
        for index, (label, position) in enumerate((vertical_lines or {}).items()):
            if min(x) <= position <= max(x):
                axes.axvline(position, linestyle=":", color=f"C{index + len(series)}", label=label)
        if log_x:
            axes.set_xscale("log")
            axes.set_xticks(list(x), [f"{value:g}" for value in x])
            axes.minorticks_off()
        if y_from_zero:
            axes.set_ylim(bottom=0)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if title:
            axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    return Path(path)
