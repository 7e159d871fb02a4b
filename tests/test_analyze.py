"""`python -m hnd_lightning.analyze`: counts, payload, timings JSON per side, combine, table and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from PIL import Image

from hnd_lightning.analysis.roles import analyze
from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD
from hnd_lightning.models import build_student, build_teacher
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
# a tiny, quick setting of the real config: DenseNet-169 at 32 x 32, B = 3, 3 classes, 2 timed runs
TINY = [
    "model=densenet169",
    "model.input_size=32",
    "model.resize_size=32",
    "model.bottleneck_channels=3",
    "data.num_classes=3",
    "timing.repeats=2",
    "timing.warmup=1",
    "timing.batch_size=2",
]
# encoder MACs at 32 x 32, B = 3: Conv(7, 2, 3) 3->64 on a 16 x 16 output, then Conv(2, 2, 1) 64->3 on 5 x 5
ENCODER_MACS = 16 * 16 * 64 * 3 * 7 * 7 + 5 * 5 * 3 * 64 * 2 * 2


def analyze_config(overrides: list[str], output_dir: Path):
    return compose_config("analyze", overrides, output_dir)


def test_analyze_both_roles_here_writes_table_json_and_plot(tmp_path, capsys):
    analysis = analyze(analyze_config(TINY, tmp_path))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "analysis.json",
        "analysis.md",
        "latency_vs_bandwidth.png",
        "timings_device.json",
        "timings_server.json",
    ]
    assert json.loads((tmp_path / "analysis.json").read_text()) == analysis
    with Image.open(tmp_path / "latency_vs_bandwidth.png") as plot:
        assert plot.format == "PNG" and plot.width > 300

    compute = analysis["compute"]
    assert compute["student_device"]["macs"] == ENCODER_MACS
    assert compute["teacher_full"]["macs"] == compute["teacher_device"]["macs"] + compute["teacher_server"]["macs"]
    assert (
        compute["teacher_full"]["parameters"]
        == compute["teacher_device"]["parameters"] + compute["teacher_server"]["parameters"]
    )

    payload = analysis["payload"]
    assert payload["input"]["bytes_uint8"] == 3 * 32 * 32
    assert payload["student"]["shape"] == [3, 5, 5]
    assert payload["student"]["bytes"] == {"float32": 300, "float16": 150, "uint8": 80}
    assert payload["teacher"]["shape"] == [256, 2, 2]
    assert payload["student"]["percent_of_input"]["uint8"] == pytest.approx(100 * 80 / 3072)
    assert "generated image" in payload["jpeg"]["source"] and payload["jpeg"]["quality"] == 90
    assert payload["student"]["ratio_to_jpeg"]["uint8"] == pytest.approx(80 / payload["jpeg"]["bytes"])

    rows = analysis["end_to_end"]
    assert [row["bandwidth_mbps"] for row in rows] == [1, 3, 10, 30, 100]
    for row in rows:
        assert row["fastest"] == min(row["latency_ms"], key=row["latency_ms"].get)
    device, server = analysis["latency"]["device"]["parts"], analysis["latency"]["server"]["parts"]
    assert set(device) == {"student_device", "teacher_device", "teacher_full"}
    assert set(server) == {"student_server", "teacher_server", "teacher_full"}
    assert all(times["batch_1_ms"] > 0 and times["batch_2_ms_per_image"] > 0 for times in {**device, **server}.values())
    # the split pays device + 80 bytes at 1 Mbit/s (0.64 ms) + server
    expected_split = device["student_device"]["batch_1_ms"] + 0.64 + server["student_server"]["batch_1_ms"]
    assert rows[0]["latency_ms"]["split"] == pytest.approx(expected_split)
    assert analysis["latency"]["device"]["settings"] == {
        "warmup": 1,
        "repeats": 2,
        "batch_sizes": [1, 2],
        "statistic": "median, parts timed in turn",
    }

    table = capsys.readouterr().out
    assert table == (tmp_path / "analysis.md").read_text()
    assert "HND bottleneck 3 x 5 x 5" in table and "median of 2 runs after 1 warm-up" in table
    bandwidth_rows = [
        line
        for line in table.splitlines()
        if line.split("|")[1:2] and line.split("|")[1].strip() in {"1", "3", "10", "30", "100"}
    ]
    assert len(bandwidth_rows) == 5 and all(line.count("*") == 1 for line in bandwidth_rows)  # one fastest each


def _write_artifacts(directory: Path) -> Path:
    torch.manual_seed(0)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    save_split_artifacts(directory, student, split_metadata(student, "densenet169", 3, 3, 32, "hnd", normalization, 32))
    return directory


def test_device_and_server_timed_apart_then_combined_on_the_command_line(image_folder, tmp_path):
    # the device side analyzes a trained run's artifacts and takes JPEG sizes from real images
    device = analyze(
        analyze_config(
            [
                *TINY,
                "role=device",
                f"artifacts={_write_artifacts(tmp_path / 'artifacts')}",
                f"data.root={image_folder}",
                "payload.jpeg_quality=75",
            ],
            tmp_path / "device",
        )
    )
    server = analyze(analyze_config([*TINY, "role=server"], tmp_path / "server"))
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == ["timings_device.json"]
    assert sorted(p.name for p in (tmp_path / "server").iterdir()) == ["timings_server.json"]
    assert device["role"] == "device" and set(device["latency"]["parts"]) == {
        "student_device",
        "teacher_device",
        "teacher_full",
    }
    assert set(server["latency"]["parts"]) == {"student_server", "teacher_server", "teacher_full"}
    assert "artifacts" in device["model"]["source"] and device["model"]["method"] == "hnd"
    assert "6 real images" in device["payload"]["jpeg"]["source"] and device["payload"]["jpeg"]["quality"] == 75

    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hnd_lightning.analyze",
            "role=combine",
            "link.bandwidths_mbps=[2,20]",
            "link.rtt_ms=5",
            f"device_timings={tmp_path / 'device' / 'timings_device.json'}",
            f"server_timings={tmp_path / 'server' / 'timings_server.json'}",
            f"hydra.run.dir={tmp_path / 'combined'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    analysis = json.loads((tmp_path / "combined" / "analysis.json").read_text())
    assert (tmp_path / "combined" / "latency_vs_bandwidth.png").is_file()
    assert [row["bandwidth_mbps"] for row in analysis["end_to_end"]] == [2, 20]
    jpeg_ms = 1000 * 8 * device["payload"]["jpeg"]["bytes"] / 2e6
    expected = jpeg_ms + 5 + server["latency"]["parts"]["teacher_full"]["batch_1_ms"]
    assert analysis["end_to_end"][0]["latency_ms"]["server_only"] == pytest.approx(expected)
    assert (
        analysis["end_to_end"][0]["latency_ms"]["device_only"]
        == device["latency"]["parts"]["teacher_full"]["batch_1_ms"]
    )
    assert "End-to-end latency per image" in result.stdout

    # timings of two different models are refused
    other = {**server, "model": {**server["model"], "bottleneck_channels": 6}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    cfg = analyze_config(
        [
            "role=combine",
            f"device_timings={tmp_path / 'device' / 'timings_device.json'}",
            f"server_timings={tmp_path / 'other.json'}",
        ],
        tmp_path / "refused",
    )
    with pytest.raises(ValueError, match="different models.*bottleneck_channels"):
        analyze(cfg)
