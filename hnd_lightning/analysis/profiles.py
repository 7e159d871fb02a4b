"""The speed of each side of a split as the latency model takes it: this machine's timed parts, scaled by
a ratio to this machine, or replaced by what a `client` or `bench` run on that side measured.

    device_profile.speed=0.1              the device runs at a tenth of this machine's speed (ms x 10)
    device_profile.measured=client.json   the device's parts as the client measured them there
    server_profile.measured=bench.json    the server's parts as `bench` measured them there

From a client report (`client.json`): per strategy the medians over bandwidths of the per-row medians:
split's device_ms (device part) and server_compute_ms (server part), device_only's device_ms (whole
teacher on the device), server_only's server_compute_ms (whole teacher on the server). From a bench
report: the `infer` subjects `device`, `server` and `teacher`, per image at bench's batch (run bench
with batch=1 for the latency model's batch 1). Parts a profile lacks keep this machine's times.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# side -> {part of analyze: (client strategy, client time)}
CLIENT_PARTS = {
    "device": {"student_device": ("split", "device_ms"), "teacher_full": ("device_only", "device_ms")},
    "server": {"student_server": ("split", "server_compute_ms"), "teacher_full": ("server_only", "server_compute_ms")},
}
# part of analyze -> bench's `infer` subject
BENCH_PARTS = {"student_device": "device", "student_server": "server", "teacher_full": "teacher"}


def parts_from_client(rows: Sequence[Mapping[str, Any]], side: str) -> dict[str, float]:
    """{part: ms} of `side` ("device" / "server") from a client report's summary rows (strategies absent: left out)."""
    parts = {}
    for part, (strategy, key) in CLIENT_PARTS[side].items():
        values = sorted(row[f"{key}_p50"] for row in rows if row["strategy"] == strategy)
        if values:
            parts[part] = values[len(values) // 2]
    return parts


def parts_from_bench(results: Sequence[Mapping[str, Any]], batch: int) -> dict[str, float]:
    """{part: ms per image} from a bench report's results (its `infer` subjects at batch `batch`)."""
    by_part = {row["part"]: row for row in results if row["phase"] == "infer"}
    return {
        part: by_part[subject]["step_ms_median"] / batch for part, subject in BENCH_PARTS.items() if subject in by_part
    }


def read_measured(path: str | Path, side: str) -> tuple[dict[str, float], str]:
    """({part: ms}, where they come from) of `side` in a client or bench JSON report at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{side}_profile.measured={str(path)!r} does not exist: pass a client.json (python -m hnd_lightning.client) "
            f"or a bench report (python -m hnd_lightning.bench output=PATH) measured on the {side}."
        )
    report = json.loads(path.read_text())
    if "summary" in report and "records" in report:
        parts, kind = parts_from_client(report["summary"], side), "client"
        weak = (report.get("weak_device") or {}).get("mechanism", "none")
        description = f"measured by the client ({path}; weak device: {weak})"
    elif "results" in report and "settings" in report:
        batch = int(report["settings"]["batch"])
        parts, kind = parts_from_bench(report["results"], batch), "bench"
        description = f"measured by bench ({path}; per image at batch {batch})"
    else:
        raise ValueError(
            f"{side}_profile.measured={str(path)!r} is neither a client.json (summary, records) nor a bench report "
            "(settings, results)."
        )
    if not parts:
        raise ValueError(f"{str(path)!r} ({kind}) holds no times of the {side}'s parts ({', '.join(BENCH_PARTS)}).")
    return parts, description


def apply_profile(report: dict[str, Any], profile: Mapping[str, Any] | None, side: str) -> dict[str, Any]:
    """A copy of one side's timings report (`analyze role=<side>`) with its part times replaced by
    `profile.measured` where given, then divided by `profile.speed`; `latency.profile` says how, and
    `latency.this_machine_parts` keeps the times before. No profile (or speed 1, nothing measured): unchanged.
    """
    speed = float((profile or {}).get("speed") or 1.0)
    measured = (profile or {}).get("measured")
    if speed <= 0:
        raise ValueError(f"{side}_profile.speed={speed}: a ratio to this machine > 0 (0.1: ten times slower).")
    if speed == 1.0 and not measured:
        return report
    report = copy.deepcopy(report)
    latency = report["latency"]
    latency["this_machine_parts"] = copy.deepcopy(latency["parts"])
    sources = []
    if measured:
        parts, description = read_measured(measured, side)
        for part, ms in parts.items():
            latency["parts"][part] = {"batch_1_ms": ms}
        sources.append(f"{', '.join(parts)} {description}")
        kept = [part for part in latency["parts"] if part not in parts]
        if kept:
            sources.append(f"{', '.join(kept)} timed on this machine")
    if speed != 1.0:
        for times in latency["parts"].values():
            for key in times:
                times[key] /= speed
        sources.append(f"every time divided by speed {speed:g}")
    latency["profile"] = {"speed": speed, "measured": str(measured) if measured else None, "source": "; ".join(sources)}
    return report
