"""The quickstart and comparison experiments, scaled down, through the real command line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

SCALED_DOWN = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "pipeline.stages.teacher.config.trainer.max_epochs=1",
    "pipeline.stages.hnd.config.trainer.max_epochs=1",
]


def run_experiment(name: str, output_root: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "hnd_lightning.train", f"experiment={name}", f"paths.output_root={output_root}", *SCALED_DOWN, *extra],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def latest_run(output_root: Path) -> Path:
    return sorted((output_root / "runs").glob("*/*"))[-1]


def test_scaled_down_quickstart_writes_table_artifacts_and_logs_and_reuses_the_teacher(tmp_path):
    result = run_experiment("quickstart", tmp_path)
    run_dir = latest_run(tmp_path)
    rows = json.loads((run_dir / "quickstart.json").read_text())
    assert [row["stage"] for row in rows] == ["teacher", "hnd"]
    teacher, student = rows
    assert teacher["method"] == "original" and student["method"] == "hnd" and not teacher["reused"]
    assert 0 <= student["test_acc1"] <= 1 and 0 <= teacher["test_acc1"] <= 1
    assert student["trainable_parameters"] < teacher["trainable_parameters"]
    # B = 12 channels at 5 x 5 for a 32 x 32 input: 300 values, 1,200 bytes as float32
    assert student["payload_shape"] == "12x5x5" and student["payload_bytes_float32"] == 1200
    assert 300 < student["payload_bytes_uint8"] < 320
    assert student["payload_input_bytes_uint8"] == 3 * 32 * 32
    markdown = (run_dir / "quickstart.md").read_text()
    assert "| teacher | original |" in markdown and "| hnd | hnd |" in markdown
    assert "quickstart results" in result.stdout
    with open(run_dir / "quickstart.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    teacher_dirs = list((tmp_path / "teachers").iterdir())
    assert len(teacher_dirs) == 1
    assert (teacher_dirs[0] / "artifacts" / "teacher.safetensors").is_file()
    for stage_dir in (teacher_dirs[0], run_dir / "hnd"):
        assert list((stage_dir / "tensorboard").glob("events.out.tfevents.*")), stage_dir
    assert {p.name for p in (run_dir / "hnd" / "artifacts").iterdir()} == {"head.safetensors", "tail.safetensors", "split.json"}

    # the comparison reuses that teacher and adds naive and KD students with the same budget
    run_experiment(
        "compare", tmp_path,
        "pipeline.stages.naive.config.trainer.max_epochs=1", "pipeline.stages.kd.config.trainer.max_epochs=1",
    )
    rows = json.loads((latest_run(tmp_path) / "compare.json").read_text())
    assert [row["stage"] for row in rows] == ["teacher", "hnd", "naive", "kd"]
    assert rows[0]["reused"] is True
    assert len(list((tmp_path / "teachers").iterdir())) == 1
    by_method = {row["method"]: row for row in rows}
    assert by_method["hnd"]["trainable_parameters"] < by_method["naive"]["trainable_parameters"]
    assert by_method["naive"]["trainable_parameters"] == by_method["kd"]["trainable_parameters"]
    assert (latest_run(tmp_path) / "compare.csv").is_file()
