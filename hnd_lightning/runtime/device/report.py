"""What the client reports: measured latency per strategy and bandwidth beside `analyze`'s prediction.

The prediction is `analysis.latency.end_to_end` (analyze's latency model) fed either with the part
times this run measured at batch 1 (device part, server part, whole teacher on each side, all
medians) or with the timed parts of an `analyze` output (`analysis.json`), and with the payload
sizes analyze uses (8-bit bottleneck, the JPEG). The measurement adds what the model leaves out:
protocol and network time, request headers and the reply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.analysis.latency import STRATEGIES, end_to_end
from hnd_lightning.analysis.profiles import parts_from_client

PLOT_FILE = "latency_measured_vs_predicted.png"


def measured_parts(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """analyze-shaped (device, server) timing reports from the medians of `summarize` rows (NaN where a
    strategy was not measured)."""
    nan = float("nan")
    device = {"student_device": nan, "teacher_full": nan, **parts_from_client(rows, "device")}
    server = {"student_server": nan, "teacher_full": nan, **parts_from_client(rows, "server")}
    as_report = lambda parts: {"latency": {"parts": {name: {"batch_1_ms": ms} for name, ms in parts.items()}}}  # noqa: E731
    return as_report(device), as_report(server)


def predict(
    rows: Sequence[dict[str, Any]], payload: dict[str, Any], rtt_ms: float, analysis: dict[str, Any] | None = None
) -> dict[float, dict[str, float]]:
    """Predicted end-to-end ms per bandwidth (emulated bandwidths only) and strategy.

    `payload`: analyze's shape, `{"jpeg": {"bytes": B}, "student": {"bytes": {"uint8": B}}}`.
    `analysis`: an `analyze` output whose timed parts replace this run's.
    """
    if analysis is not None:
        device, server = {"latency": analysis["latency"]["device"]}, {"latency": analysis["latency"]["server"]}
    else:
        device, server = measured_parts(rows)
    device["payload"] = payload
    bandwidths = sorted({row["bandwidth_mbps"] for row in rows if row["bandwidth_mbps"] is not None})
    if not bandwidths:
        return {}
    return {row["bandwidth_mbps"]: row["latency_ms"] for row in end_to_end(device, server, bandwidths, rtt_ms)}


def compare(rows: Sequence[dict[str, Any]], predictions: dict[float, dict[str, float]]) -> list[dict[str, Any]]:
    """`rows` with `predicted_ms` and `difference_percent` (measured p50 against predicted) added."""
    compared = []
    for row in rows:
        predicted = predictions.get(row["bandwidth_mbps"], {}).get(row["strategy"], float("nan"))
        difference = (
            100 * (row["end_to_end_ms_p50"] - predicted) / predicted
            if predicted and math.isfinite(predicted)
            else float("nan")
        )
        compared.append({**row, "predicted_ms": predicted, "difference_percent": difference})
    return compared


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per bandwidth and strategy: end to end (p50 / p95) against the prediction, and its parts."""
    header = f"{'Mbit/s':>8} {'strategy':<12} {'e2e p50':>8} {'p95':>8} {'predicted':>9} {'diff %':>7} {'device':>7} {'transfer':>8} {'server q+c':>10} {'bytes up':>9} {'top-1':>6}"
    lines = [header, "-" * len(header)]
    for row in sorted(
        rows,
        key=lambda r: (r["bandwidth_mbps"] is None, r["bandwidth_mbps"] or 0, list(STRATEGIES).index(r["strategy"])),
    ):
        bandwidth = "none" if row["bandwidth_mbps"] is None else f"{row['bandwidth_mbps']:g}"
        server = row["server_queue_ms_p50"] + row["server_compute_ms_p50"]
        top1 = "-" if row["top1"] is None else f"{100 * row['top1']:.1f}%"
        lines.append(
            f"{bandwidth:>8} {row['strategy']:<12} {_number(row['end_to_end_ms_p50']):>8} {_number(row['end_to_end_ms_p95']):>8} "
            f"{_number(row.get('predicted_ms')):>9} {_number(row.get('difference_percent')):>7} {_number(row['device_ms_p50']):>7} "
            f"{_number(row['transfer_ms_p50']):>8} {_number(server):>10} {row['bytes_sent']:>9,.0f} {top1:>6}"
        )
    lines.append(
        "ms, medians over images (p95: 95th percentile); transfer = round trip - server queue - server compute."
    )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Measured (solid) and predicted (dashed) end-to-end ms against bandwidth, per strategy."""
    emulated = [row for row in rows if row["bandwidth_mbps"] is not None]
    if not emulated:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for index, (strategy, label) in enumerate(STRATEGIES.items()):
        points = sorted(
            (row["bandwidth_mbps"], row["end_to_end_ms_p50"], row.get("predicted_ms"))
            for row in emulated
            if row["strategy"] == strategy
        )
        if not points:
            continue
        color = f"C{index}"
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color, label=f"{label}, measured")
        axes.plot(
            [p[0] for p in points], [p[2] for p in points], "x--", color=color, alpha=0.7, label=f"{label}, predicted"
        )
    axes.set_xscale("log")
    bandwidths = sorted({row["bandwidth_mbps"] for row in emulated})
    axes.set_xticks(bandwidths, [f"{bandwidth:g}" for bandwidth in bandwidths])
    axes.minorticks_off()
    axes.set_xlabel("link bandwidth (Mbit/s, emulated)")
    axes.set_ylabel("end-to-end latency per image (ms, median)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
