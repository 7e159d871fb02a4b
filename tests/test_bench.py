"""The benchmark in reduced form: a couple of steps at a small input. Timings are never asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_config
from hnd_lightning.bench import METHOD_NAMES, run_benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=densenet169", "model.input_size=32", "model.num_classes=10", "batch=2", "rounds=2", "warmup=1", "repeats=1", "threads=1"]


def compose_bench_config(overrides: list[str]):
    return compose_config("bench", overrides)


def _check_record(record: dict, memory: bool) -> None:
    assert {"method", "phase", "part", "images_per_s", "peak_memory_mb", "step_ms", "spread"} <= set(record)
    assert record["phase"] in ("train", "infer", "plain_pytorch", "data")
    assert math.isfinite(record["images_per_s"]) and record["images_per_s"] > 0
    assert record["images_per_s_min"] <= record["images_per_s"] <= record["images_per_s_max"]
    assert len(record["step_ms"]) == 2  # rounds x repeats (data: data_batches)
    if memory:
        assert record["peak_memory_mb"] > 0
    else:
        assert record["peak_memory_mb"] is None


def test_cli_writes_json_with_every_method_and_part(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "hnd_lightning.bench", *TINY, f"output={output}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    settings = report["settings"]
    assert settings["device"] == "cpu" and settings["threads"] == 1 and settings["dtype"] == "float32"
    assert settings["batch"] == 2 and settings["input_size"] == 32 and settings["memory_format"] == "contiguous"
    results = report["results"]
    assert [r["method"] for r in results if r["phase"] == "train"] == list(METHOD_NAMES)
    assert [(r["method"], r["part"]) for r in results if r["phase"] == "plain_pytorch"] == [("hnd", None)]
    assert [r["part"] for r in results if r["phase"] == "infer"] == ["device", "server", "student"]
    on_linux = Path("/proc/self/clear_refs").exists()
    for record in results:
        _check_record(record, memory=on_linux)
    assert {"hnd_over_kd", "hnd_over_naive", "hnd_over_original", "lightning_hnd_over_plain_pytorch"} <= set(report["ratios"])
    # the table for people names every method
    for name in (*METHOD_NAMES, "plain_pytorch", "device", "server"):
        assert name in result.stdout


def test_bfloat16_autocast_channels_last_and_the_data_pipeline_run_and_are_recorded(image_folder, tmp_path):
    cfg = compose_bench_config(
        TINY + ["dtype=bfloat16", "channels_last=true", "method_names=[kd,hnd]", "memory=false", f"output={tmp_path / 'b.json'}",
                f"data_root={image_folder}", "data_workers=[0,1]", "data_batches=2", "model.resize_size=36"]
    )
    report = run_benchmark(cfg)
    assert report["settings"]["dtype"] == "bfloat16" and report["settings"]["autocast"] is True
    assert report["settings"]["memory_format"] == "channels_last"
    assert [r["method"] for r in report["results"] if r["phase"] == "train"] == ["kd", "hnd"]
    data = [r for r in report["results"] if r["phase"] == "data"]
    assert [(r["method"], r["part"]) for r in data] == [("pipeline", "0_workers"), ("pipeline", "1_workers")]
    for record in report["results"]:
        _check_record(record, memory=False)
    assert json.loads((tmp_path / "b.json").read_text())["ratios"].keys() == report["ratios"].keys()


@pytest.mark.parametrize(
    "override, message",
    [("dtype=float16", "Unknown dtype 'float16'"), ("method_names=[hnd,dino]", "Unknown method 'dino'")],
)
def test_bad_options_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark(compose_bench_config(TINY + [override, "memory=false"]))
