"""scripts/gpu_check.py, the first GPU measurement: its commands compose, and its CPU dry run runs every step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plan_composes_every_command_with_hydra(tmp_path, capsys):
    gpu_check = load_script()
    assert gpu_check.main(["--plan", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("python -m hnd_lightning.")]
    assert [line.split()[2] for line in lines] == ["hnd_lightning.bench"] * 3 + [
        "hnd_lightning.train",
        "hnd_lightning.loadtest",
    ]
    benches = lines[:3]
    assert all("method_names=[kd,hnd]" in line and "batch=32" in line and "device=cuda" in line for line in benches)
    assert ["dtype=float32" in benches[0], "dtype=bfloat16" in benches[1], "channels_last=true" in benches[2]] == [
        True
    ] * 3
    assert "data_workers=[0,4,8]" in benches[0]  # the loader's rate beside the step rates
    assert "server.device=cuda" in lines[4]
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_the_dry_run_runs_every_step_on_the_cpu_and_writes_the_report(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--dry-run", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [step["status"] for step in report["steps"]] == ["ok"] * 5
    rows = {(row["what"], row["variant"]) for row in report["medians"]}
    assert {
        ("hnd train", "fp32"),
        ("hnd train", "bf16"),
        ("hnd train", "bf16_cl"),
        ("pipeline data 0_workers", "fp32"),
    } <= rows
    assert {what for what, _ in rows if what.startswith("serve")} == {"serve dynamic grpc", "serve batch1 grpc"}
    assert "| hnd train | bf16_cl |" in (tmp_path / "gpu_check.md").read_text()
