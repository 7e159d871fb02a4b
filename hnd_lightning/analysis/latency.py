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


def _crossing(constant_ms: float, per_inverse_mbps: float) -> dict[str, Any]:
    """Where `constant_ms + per_inverse_mbps / R` (the split's latency minus another strategy's at R Mbit/s)
    is negative: {"mbps": the crossing or None, "split_wins": "below" / "above" it, "always" or "never"}."""
    if constant_ms * per_inverse_mbps < 0:
        return {"mbps": -per_inverse_mbps / constant_ms, "split_wins": "below" if constant_ms > 0 else "above"}
    wins = constant_ms < 0 or (constant_ms == 0 and per_inverse_mbps < 0)
    return {"mbps": None, "split_wins": "always" if wins else "never"}


def _band(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None] | None:
    """The bandwidths where both crossings' winning sides hold: {"from_mbps", "to_mbps" (None: no end)} or None."""
    low, high = 0.0, None
    for crossing in (a, b):
        if crossing["split_wins"] == "never":
            return None
        if crossing["split_wins"] == "above":
            low = max(low, crossing["mbps"])
        elif crossing["split_wins"] == "below":
            high = crossing["mbps"] if high is None else min(high, crossing["mbps"])
    return None if high is not None and high <= low else {"from_mbps": low, "to_mbps": high}


def crossovers(device: dict[str, Any], server: dict[str, Any], rtt_ms: float) -> dict[str, Any]:
    """The bandwidths where the split's modelled latency equals each other strategy's, in closed form.

    With D_s, S_s the split's device and server ms, D_T, S_T the whole teacher's on the device and
    on the server, b and J the bytes of the 8-bit payload and of the JPEG, and t(n, R) = 8e-3 n / R
    ms for n bytes at R Mbit/s (`link_ms`):

        split = server_only:  D_s + t(b, R) + S_s = t(J, R) + S_T   ->  R = 8e-3 (J - b) / (D_s + S_s - S_T)
        split = device_only:  D_s + t(b, R) + rtt + S_s = D_T       ->  R = 8e-3 b / (D_T - D_s - S_s - rtt)

    Returns {"split_vs_server_only": crossing, "split_vs_device_only": crossing, "split_fastest": band}
    (see `_crossing`, `_band`): the split beats sending the JPEG below the first crossing (when its
    device + server parts cost more than the teacher on the server) and beats all-on-device above the second.
    """
    device_ms, server_ms, payload = device["latency"]["parts"], server["latency"]["parts"], device["payload"]
    split_compute = device_ms["student_device"]["batch_1_ms"] + server_ms["student_server"]["batch_1_ms"]
    payload_bytes, jpeg_bytes = payload["student"]["bytes"]["uint8"], payload["jpeg"]["bytes"]
    server_only = _crossing(
        split_compute - server_ms["teacher_full"]["batch_1_ms"], 8e-3 * (payload_bytes - jpeg_bytes)
    )
    device_only = _crossing(split_compute + rtt_ms - device_ms["teacher_full"]["batch_1_ms"], 8e-3 * payload_bytes)
    return {
        "split_vs_server_only": server_only,
        "split_vs_device_only": device_only,
        "split_fastest": _band(server_only, device_only),
    }


def measured_crossing(latency_by_bandwidth: dict[float, dict[str, float]], other: str) -> dict[str, Any]:
    """The crossing of the split with `other` in measured latencies ({Mbit/s: {strategy: ms}}): the latency
    model's form, difference = A + C / bandwidth, fitted by least squares to the measured differences at
    every bandwidth (exact on the model's own latencies; on noisy ones it uses every point, not only the
    two around a sign change). Returns `crossovers`' {"mbps", "split_wins"} plus "fit" (A ms, C ms Mbit/s),
    "inside_grid" and "sign_changes" (of the measured differences, in bandwidth order)."""
    points = sorted((bw, ms["split"] - ms[other]) for bw, ms in latency_by_bandwidth.items() if other in ms)
    if len(points) < 2:
        return {"mbps": None, "split_wins": None, "fit": None, "inside_grid": False, "sign_changes": 0}
    inverse = [1 / bw for bw, _ in points]
    differences = [diff for _, diff in points]
    mean_x, mean_y = sum(inverse) / len(inverse), sum(differences) / len(differences)
    spread = sum((x - mean_x) ** 2 for x in inverse)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(inverse, differences)) / spread
    constant = mean_y - slope * mean_x
    crossing = _crossing(constant, slope)
    crossing["fit"] = {"constant_ms": constant, "per_inverse_mbps": slope}
    crossing["inside_grid"] = crossing["mbps"] is not None and points[0][0] <= crossing["mbps"] <= points[-1][0]
    crossing["sign_changes"] = sum(a * b < 0 for a, b in zip(differences, differences[1:]))
    return crossing
