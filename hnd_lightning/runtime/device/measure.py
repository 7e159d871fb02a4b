"""Measuring the strategies over a link: per-image records, then medians and tails per (bandwidth, strategy)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from hnd_lightning.analysis.latency import STRATEGIES
from hnd_lightning.runtime.device.device_client import PreparedImage, SplitClient
from hnd_lightning.runtime.device.link import EmulatedLink

TIMES = ("device_ms", "transfer_ms", "server_queue_ms", "server_compute_ms", "round_trip_ms", "end_to_end_ms")
# on a weak device with a reference: the same device computation unthrottled, on this machine
OPTIONAL_TIMES = ("device_reference_ms",)


def check_strategies(strategies: Sequence[str]) -> list[str]:
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies={list(strategies)}: each must be one of {list(STRATEGIES)}.")
    return list(strategies)


def measure_strategies(
    client: SplitClient,
    images: Sequence[PreparedImage],
    strategies: Sequence[str],
    bandwidths_mbps: Sequence[float | None],
    rtt_ms: float = 0.0,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Every image through every strategy at every bandwidth (None: no emulation). Per image, the
    bandwidths and strategies take turns, so a change in the machine's load hits them all alike;
    `warmup` untimed rounds of the first image come first.

    Returns one record per (image, bandwidth, strategy), `logits` included (numpy, (1, classes)).
    """
    strategies = check_strategies(strategies)
    links = {bandwidth: EmulatedLink(bandwidth, rtt_ms) for bandwidth in bandwidths_mbps}
    records = []
    for round_index, image in enumerate([*list(images[:1]) * warmup, *images]):
        if round_index == warmup:
            client.weak_device.clear_samples()  # its summary covers the measured rounds only
        for bandwidth, link in links.items():
            client.transport.link = link
            for strategy in strategies:
                record = client.run(strategy, image)
                if round_index >= warmup:
                    record.update(bandwidth_mbps=bandwidth, rtt_ms=rtt_ms, image=round_index - warmup)
                    records.append(record)
    client.transport.link = EmulatedLink()
    return records


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (bandwidth, strategy): images, p50 and p95 of every time in `TIMES` (and of `OPTIONAL_TIMES` where
    the records carry them), mean bytes, top-1 when labelled."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["bandwidth_mbps"], record["strategy"]), []).append(record)
    rows = []
    for (bandwidth, strategy), group in groups.items():
        row: dict[str, Any] = {
            "bandwidth_mbps": bandwidth,
            "rtt_ms": group[0]["rtt_ms"],
            "strategy": strategy,
            "images": len(group),
        }
        for key in TIMES + OPTIONAL_TIMES:
            values = [record[key] for record in group if key in record]
            if values or key in TIMES:
                row[f"{key}_p50"] = statistics.median(values)
                row[f"{key}_p95"] = percentile(values, 95)
        row["bytes_sent"] = statistics.mean(record["bytes_sent"] for record in group)
        row["bytes_received"] = statistics.mean(record["bytes_received"] for record in group)
        labelled = [record for record in group if record.get("label") is not None]
        row["top1"] = sum(r["prediction"] == r["label"] for r in labelled) / len(labelled) if labelled else None
        rows.append(row)
    return rows
