"""The benchmark in reduced form: a couple of steps at a small input. Timings are never asserted."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from hnd_lightning.benchmark import memory
from hnd_lightning.benchmark.memory import SCOPES, PeakMemory
from hnd_lightning.benchmark.report import write_report
from hnd_lightning.benchmark.run import run_benchmark
from hnd_lightning.benchmark.settings import METHOD_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model=densenet169",
    "model.input_size=32",
    "model.num_classes=10",
    "batch=2",
    "rounds=2",
    "warmup=1",
    "repeats=1",
    "threads=1",
]


def compose_bench_config(overrides: list[str]):
    return compose_config("bench", overrides)


def _clear_refs_writable() -> bool:
    try:
        memory.CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _check_record(record: dict, timed_steps: int, batch: int = 2) -> None:
    """Images/s are the batch over the recorded step times: median, slowest, fastest."""
    seconds = [ms / 1e3 for ms in record["step_ms"]]
    assert len(seconds) == timed_steps
    if record["phase"] != "data":  # the data pipeline's rate is over the whole span, see bench_data_pipeline
        assert record["images_per_s"] == pytest.approx(batch / statistics.median(seconds))
    assert record["images_per_s_min"] == pytest.approx(batch / max(seconds))
    assert record["images_per_s_max"] == pytest.approx(batch / min(seconds))


def test_cli_writes_json_markdown_and_csv_with_every_method_and_part(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "hnd_lightning.bench", *TINY, f"output={output}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    settings = report["settings"]
    assert settings["device"] == "cpu" and settings["threads"] == 1 and settings["dtype"] == "float32"
    assert settings["batch"] == 2 and settings["input_size"] == 32 and settings["memory_format"] == "contiguous"
    results = report["results"]
    assert [r["method"] for r in results if r["phase"] == "train"] == list(METHOD_NAMES)
    assert [(r["method"], r["part"]) for r in results if r["phase"] == "plain_pytorch"] == [("hnd", None)]
    assert [r["part"] for r in results if r["phase"] == "infer"] == ["device", "server", "student", "teacher"]
    # memory is measured wherever this runs: per turn where VmHWM can be reset, else the process peak
    expected_scope = "turn" if _clear_refs_writable() else "process"
    for record in results:
        _check_record(record, timed_steps=2)
        assert record["peak_memory_mb"] > 0 and record["peak_memory_scope"] == expected_scope
    assert {"hnd_over_kd", "hnd_over_naive", "hnd_over_original", "lightning_hnd_over_plain_pytorch"} <= set(
        report["ratios"]
    )
    # the printed table and bench.md are the same markdown table, bench.csv holds the raw values
    markdown = (tmp_path / "bench.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(results) and "\n".join(table) in result.stdout
    with (tmp_path / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == [r["method"] for r in results]
    assert [float(row["images_per_s"]) for row in rows] == pytest.approx([r["images_per_s"] for r in results])


def test_bfloat16_channels_last_data_pipeline_and_process_wide_memory(image_folder, tmp_path, monkeypatch):
    # where /proc/self/clear_refs cannot be written, the meter falls back to the process's peak
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no-such-folder" / "clear_refs")
    cfg = compose_bench_config(
        TINY
        + [
            "dtype=bfloat16",
            "channels_last=true",
            "method_names=[kd,hnd]",
            f"data_root={image_folder}",
            "data_workers=[0,1]",
            "data_batches=2",
            "model.resize_size=36",
        ]
    )
    report = run_benchmark(cfg)
    assert report["settings"]["dtype"] == "bfloat16" and report["settings"]["autocast"] is True
    assert report["settings"]["memory_format"] == "channels_last"
    assert [r["method"] for r in report["results"] if r["phase"] == "train"] == ["kd", "hnd"]
    data = [r for r in report["results"] if r["phase"] == "data"]
    assert [(r["method"], r["part"]) for r in data] == [("pipeline", "0_workers"), ("pipeline", "1_workers")]
    measured = [r for r in report["results"] if r["phase"] != "data"]
    for record in report["results"]:
        _check_record(record, timed_steps=2)
    assert all(r["peak_memory_scope"] == "process" for r in measured)
    # each reading is the process's peak so far (every model built before the first turn), not a turn's own
    peaks = [r["peak_memory_mb"] for r in measured]
    final = memory.process_peak_bytes() / 2**20
    assert all(0.8 * final <= peak <= final + 1 for peak in peaks)
    paths = write_report(report, tmp_path / "b.json")
    assert (
        sorted(paths) == ["csv", "json", "md"] and json.loads(paths["json"].read_text())["ratios"] == report["ratios"]
    )
    assert SCOPES["process"] in paths["md"].read_text()


@pytest.mark.skipif(not _clear_refs_writable(), reason="/proc/self/clear_refs cannot be written here")
def test_peak_memory_per_turn_is_reset_between_turns():
    meter = PeakMemory(torch.device("cpu"), enabled=True)
    meter.start([])
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    first = meter.stop()
    meter.start([])
    second = meter.stop()
    assert meter.scope == "turn" and first >= 60 and second < 32


def test_peak_memory_is_unavailable_where_the_process_peak_cannot_be_read(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no-such-folder" / "clear_refs")
    monkeypatch.setattr(memory, "process_peak_bytes", lambda: None)
    meter = PeakMemory(torch.device("cpu"), enabled=True)
    meter.start([torch.nn.Linear(4, 4)])
    assert meter.stop() is None and meter.scope is None


@pytest.mark.parametrize(
    "override, message",
    [("dtype=float16", "Unknown dtype 'float16'"), ("method_names=[hnd,dino]", "Unknown method 'dino'")],
)
def test_bad_options_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark(compose_bench_config(TINY + [override, "memory=false"]))


def test_the_lightning_subjects_run_on_the_benchmarked_device():
    from hnd_lightning.benchmark.steps import lightning_devices

    # devices=1 would put a `device=cuda:2` benchmark's Lightning steps on GPU 0
    assert lightning_devices(torch.device("cuda:2")) == ("gpu", [2])
    assert lightning_devices(torch.device("cpu")) == ("cpu", 1)
