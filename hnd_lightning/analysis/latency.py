"""The latency model of split computing: per-image end-to-end time of the three offloading strategies.

Shared by `analyze` (which predicts from timed parts) and the split-inference client (which measures
over a real link and draws this prediction beside its measurement).
"""

from __future__ import annotations

from typing import Any

STRATEGIES = {
    "device_only": "all on device",
    "server_only": "all on server (JPEG)",
    "split": "HND split (8-bit)",
}


def link_ms(num_bytes: float, bandwidth_mbps: float) -> float:
    """Milliseconds to send `num_bytes` over a `bandwidth_mbps` Mbit/s link."""
    return 1000 * 8 * num_bytes / (bandwidth_mbps * 1e6)


def end_to_end(
    device: dict[str, Any], server: dict[str, Any], bandwidths: list[float], rtt_ms: float
) -> list[dict[str, Any]]:
    """Per-image latency (batch 1) of each strategy of `STRATEGIES` at each bandwidth, fastest marked."""
    device_ms = device["latency"]["parts"]
    server_ms = server["latency"]["parts"]
    payload = device["payload"]
    rows = []
    for bandwidth in bandwidths:
        if bandwidth <= 0:
            raise ValueError(f"link.bandwidths_mbps must be positive, got {bandwidth}.")
        latency = {
            "device_only": device_ms["teacher_full"]["batch_1_ms"],
            "server_only": link_ms(payload["jpeg"]["bytes"], bandwidth)
            + rtt_ms
            + server_ms["teacher_full"]["batch_1_ms"],
            "split": device_ms["student_device"]["batch_1_ms"]
            + link_ms(payload["student"]["bytes"]["uint8"], bandwidth)
            + rtt_ms
            + server_ms["student_server"]["batch_1_ms"],
        }
        rows.append({"bandwidth_mbps": bandwidth, "latency_ms": latency, "fastest": min(latency, key=latency.get)})
    return rows
