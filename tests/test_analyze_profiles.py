"""analyze with device and server profiles: the closed-form crossover bandwidths against the latency model
and its formula, speeds as ratios or measured by a client or bench run, written into the table and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from PIL import Image

from hnd_lightning.analysis.latency import crossovers, end_to_end, link_ms, measured_crossing
from hnd_lightning.analysis.payload import tensor_payload
from hnd_lightning.analysis.roles import analyze

PAYLOAD_BYTES, JPEG_BYTES = 12 * 28 * 28 + 5, 20_000  # the 8-bit B = 12 bottleneck at 224, a JPEG of the view


def side_report(role: str, parts_ms: dict[str, float]) -> dict:
    """A timings file as `analyze role=<role>` writes it, with the given batch-1 part times (synthetic)."""
    input_bytes = 3 * 224 * 224
    names = ("student_device", "student_server", "teacher_device", "teacher_server", "teacher_full")
    return {
        "role": role,
        "model": {
            "architecture": "densenet169",
            "bottleneck_channels": 12,
            "input_size": 224,
            "num_classes": 1000,
            "source": "synthetic",
        },
        "compute": {name: {"parameters": 1000, "macs": 10_000} for name in names},
        "payload": {
            "input": {"shape": [3, 224, 224], "elements": input_bytes, "bytes_uint8": input_bytes},
            "jpeg": {
                "quality": 90,
                "bytes": JPEG_BYTES,
                "min_bytes": JPEG_BYTES,
                "max_bytes": JPEG_BYTES,
                "percent_of_input": 100 * JPEG_BYTES / input_bytes,
                "source": "synthetic",
            },
            "student": tensor_payload((12, 28, 28), input_bytes, JPEG_BYTES),
            "teacher": tensor_payload((128, 28, 28), input_bytes, JPEG_BYTES),
        },
        "latency": {
            "settings": {"warmup": 1, "repeats": 1, "batch_sizes": [1], "statistic": "synthetic"},
            "machine": {"device": "cpu", "device_name": "synthetic", "torch_threads": 1, "host": "here"},
            "parts": {name: {"batch_1_ms": ms} for name, ms in parts_ms.items()},
        },
    }


# a weak device (the split's device part 30 ms, the whole teacher 1200 ms) and a server 10x faster
DEVICE = {"student_device": 30.0, "teacher_device": 300.0, "teacher_full": 1200.0}
SERVER = {"student_server": 100.0, "teacher_server": 80.0, "teacher_full": 110.0}


def test_closed_form_crossovers_match_the_formula_and_the_latency_model():
    device, server = side_report("device", DEVICE), side_report("server", SERVER)
    rtt_ms = 5.0
    found = crossovers(device, server, rtt_ms)
    # the formulas of the docstring, by hand
    below = 8e-3 * (JPEG_BYTES - PAYLOAD_BYTES) / (30 + 100 - 110)
    above = 8e-3 * PAYLOAD_BYTES / (1200 - 30 - 100 - rtt_ms)
    assert found["split_vs_server_only"] == {"mbps": pytest.approx(below), "split_wins": "below"}
    assert found["split_vs_device_only"] == {"mbps": pytest.approx(above), "split_wins": "above"}
    assert found["split_fastest"] == {"from_mbps": pytest.approx(above), "to_mbps": pytest.approx(below)}
    # at each crossing the latency model gives the two strategies the same time; either side, the claimed winner
    for key, other in (("split_vs_server_only", "server_only"), ("split_vs_device_only", "device_only")):
        crossing = found[key]["mbps"]
        (at,) = end_to_end(device, server, [crossing], rtt_ms)
        assert at["latency_ms"]["split"] == pytest.approx(at["latency_ms"][other], rel=1e-9)
        slower, faster = (
            (2 * crossing, crossing / 2) if found[key]["split_wins"] == "below" else (crossing / 2, 2 * crossing)
        )
        rows = {
            row["bandwidth_mbps"]: row["latency_ms"] for row in end_to_end(device, server, [slower, faster], rtt_ms)
        }
        assert rows[faster]["split"] < rows[faster][other] and rows[slower]["split"] > rows[slower][other]

    # the same device at this server's speed: its parts cost more than the teacher there, so it never wins
    fast = crossovers(side_report("device", {**DEVICE, "teacher_full": 110.0}), server, rtt_ms)
    assert fast["split_vs_device_only"] == {"mbps": None, "split_wins": "never"} and fast["split_fastest"] is None
    # a split whose two parts cost less than the teacher on the server beats the JPEG at every bandwidth
    cheap = crossovers(side_report("device", {**DEVICE, "student_device": 5.0}), server, rtt_ms)
    assert cheap["split_vs_server_only"] == {"mbps": None, "split_wins": "always"}
    assert cheap["split_fastest"]["to_mbps"] is None


def test_the_measured_crossing_of_model_latencies_is_the_closed_form():
    device, server = side_report("device", DEVICE), side_report("server", SERVER)
    grid = [0.5, 1, 2, 5, 10, 20, 50]
    latencies = {row["bandwidth_mbps"]: row["latency_ms"] for row in end_to_end(device, server, grid, 0.0)}
    closed = crossovers(device, server, 0.0)
    measured = measured_crossing(latencies, "server_only")
    assert measured["split_wins"] == "below" and measured["mbps"] == pytest.approx(
        closed["split_vs_server_only"]["mbps"]
    )
    assert measured["inside_grid"] and measured["sign_changes"] == 1
    # measured only above the crossing: the fitted form still finds it, outside the grid
    beyond = measured_crossing({bw: latencies[bw] for bw in grid[-3:]}, "server_only")
    assert (
        beyond["mbps"] == pytest.approx(measured["mbps"]) and not beyond["inside_grid"] and beyond["sign_changes"] == 0
    )
    on_device = measured_crossing(latencies, "device_only")
    assert on_device["split_wins"] == "above" and on_device["mbps"] == pytest.approx(
        closed["split_vs_device_only"]["mbps"]
    )
    # noise on the medians moves the fitted crossing a little, never to another side
    rng = np.random.default_rng(0)
    noisy = {bw: {k: v + rng.normal(0, 2) for k, v in ms.items()} for bw, ms in latencies.items()}
    assert measured_crossing(noisy, "server_only")["mbps"] == pytest.approx(measured["mbps"], rel=0.3)


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_analyze_combine_with_a_device_speed_writes_the_crossovers(tmp_path):
    device = write(tmp_path / "timings_device.json", side_report("device", {k: v / 10 for k, v in DEVICE.items()}))
    server = write(tmp_path / "timings_server.json", side_report("server", SERVER))
    out = tmp_path / "out"
    cfg = compose_config(
        "analyze",
        [
            "role=combine",
            f"device_timings={device}",
            f"server_timings={server}",
            "device_profile.speed=0.1",
            "link.bandwidths_mbps=[0.1,1,3,10,30]",
        ],
        out,
    )
    analysis = analyze(cfg)
    parts = analysis["latency"]["device"]["parts"]
    assert parts["teacher_full"]["batch_1_ms"] == pytest.approx(1200) and parts["student_device"][
        "batch_1_ms"
    ] == pytest.approx(30)
    assert analysis["latency"]["device"]["this_machine_parts"]["teacher_full"]["batch_1_ms"] == pytest.approx(120)
    expected = crossovers(side_report("device", DEVICE), side_report("server", SERVER), 0.0)
    assert analysis["crossovers"]["split_vs_server_only"]["mbps"] == pytest.approx(
        expected["split_vs_server_only"]["mbps"]
    )
    assert analysis["crossovers"]["split_vs_device_only"]["mbps"] == pytest.approx(
        expected["split_vs_device_only"]["mbps"]
    )
    report = (out / "analysis.md").read_text()
    below = expected["split_vs_server_only"]["mbps"]
    assert f"faster below {below:.3g} Mbit/s" in report and "Profile: every time divided by speed 0.1" in report
    with Image.open(out / "latency_vs_bandwidth.png") as plot:
        assert plot.format == "PNG"
    # one JPEG over the link at the crossing costs what the split's extra compute costs there
    at = link_ms(JPEG_BYTES - PAYLOAD_BYTES, below)
    assert at == pytest.approx(30 + 100 - 110)


def test_measured_profiles_from_a_client_and_a_bench_report(tmp_path):
    rows = [
        {"strategy": "split", "bandwidth_mbps": bw, "device_ms_p50": 40.0 + bw, "server_compute_ms_p50": 90.0}
        for bw in (1, 10, 50)
    ]
    rows += [
        {"strategy": "device_only", "bandwidth_mbps": bw, "device_ms_p50": 900.0, "server_compute_ms_p50": 0}
        for bw in (1, 10, 50)
    ]
    rows += [
        {"strategy": "server_only", "bandwidth_mbps": bw, "device_ms_p50": 0, "server_compute_ms_p50": 100.0}
        for bw in (1, 10, 50)
    ]
    client = write(tmp_path / "client.json", {"summary": rows, "records": [], "weak_device": {"mechanism": "cgroup"}})
    bench_results = [
        {"phase": "infer", "part": "server", "step_ms_median": 160.0},
        {"phase": "infer", "part": "teacher", "step_ms_median": 200.0},
        {"phase": "infer_unthrottled", "part": "teacher", "step_ms_median": 1.0},
    ]
    bench = write(tmp_path / "bench.json", {"settings": {"batch": 2}, "results": bench_results})
    device = write(tmp_path / "timings_device.json", side_report("device", DEVICE))
    server = write(tmp_path / "timings_server.json", side_report("server", SERVER))
    overrides = ["role=combine", f"device_timings={device}", f"server_timings={server}"]
    overrides += [f"device_profile.measured={client}", f"server_profile.measured={bench}", "server_profile.speed=2"]
    analysis = analyze(compose_config("analyze", overrides, tmp_path / "out"))
    device_parts = analysis["latency"]["device"]["parts"]
    assert device_parts["student_device"]["batch_1_ms"] == 50.0  # the median over bandwidths of the split's device time
    assert device_parts["teacher_full"]["batch_1_ms"] == 900.0
    assert device_parts["teacher_device"]["batch_1_ms"] == DEVICE["teacher_device"]  # not in the profile: timed here
    assert "measured by the client" in analysis["latency"]["device"]["profile"]["source"]
    server_parts = analysis["latency"]["server"]["parts"]
    # bench: per image at its batch of 2, then halved again by speed 2; the part bench lacks keeps this machine's / 2
    assert server_parts["student_server"]["batch_1_ms"] == 40.0 and server_parts["teacher_full"]["batch_1_ms"] == 50.0
    assert server_parts["teacher_server"]["batch_1_ms"] == SERVER["teacher_server"] / 2
    assert math.isfinite(analysis["crossovers"]["split_vs_device_only"]["mbps"])
    with pytest.raises(FileNotFoundError, match="device_profile.measured"):
        analyze(compose_config("analyze", [*overrides[:3], "device_profile.measured=/no/such.json"], tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"device_profile.speed=-1.0: a ratio to this machine > 0"):
        analyze(compose_config("analyze", [*overrides[:3], "device_profile.speed=-1"], tmp_path / "bad"))
