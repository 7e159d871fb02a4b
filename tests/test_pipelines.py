"""The bundled experiments (quickstart, compare, bottlenecks), scaled down, through the real command line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from hnd_lightning.files import sha256_of
from hnd_lightning.models.bundled_teacher import bundled_record

SCALED_DOWN = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "pipeline.stages.hnd.config.trainer.max_epochs=1",
]


def start_experiment(name: str, output_root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hnd_lightning.train",
            f"experiment={name}",
            f"paths.output_root={output_root}",
            *SCALED_DOWN,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )


def run_experiment(name: str, output_root: Path, *extra: str) -> str:
    process = start_experiment(name, output_root, *extra)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def latest_run(output_root: Path) -> Path:
    return sorted((output_root / "runs").glob("*/*"))[-1]


def test_quickstart_tests_the_bundled_teacher_distills_tests_8bit_and_writes_table_figure_and_artifacts(tmp_path):
    stdout = run_experiment("quickstart", tmp_path, "pipeline.split_inference.num_images=4")
    run_dir = latest_run(tmp_path)
    teacher, student = json.loads((run_dir / "quickstart.json").read_text())
    assert (teacher["stage"], teacher["method"], teacher["source"]) == ("teacher", "original", "bundled")
    assert teacher["epochs"] == bundled_record()["epochs"]  # the shipped teacher's training, not a new one
    assert not (tmp_path / "teachers").exists()
    assert student["method"] == "hnd" and student["test_q8_acc1"] is not None
    assert student["trainable_parameters"] < teacher["trainable_parameters"]
    # B = 12 channels at 5 x 5 for a 32 x 32 input: 300 values, 1,200 bytes as float32, 305 as 8-bit
    assert student["payload_shape"] == "12x5x5" and student["payload_bytes_float32"] == 1200
    assert student["payload_bytes_uint8"] == 305 and student["payload_input_bytes"] == 3 * 32 * 32
    assert "quickstart results" in stdout and "| teacher " in stdout
    assert (run_dir / "quickstart.png").stat().st_size > 10_000
    # the last stage ran the split for real: device client -> edge server over loopback
    split = json.loads((run_dir / "split_inference.json").read_text())
    assert split["images"] == 4 and split["predictions_match"] is True
    assert student["split_predictions_match"] is True and student["split_end_to_end_ms_p50"] > 0
    with open(run_dir / "quickstart.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    results = json.loads((run_dir / "hnd" / "results.json").read_text())
    assert results["teacher"] == {
        "source": "bundled",
        "file": "densenet169_fashion_mnist_32.safetensors",
        "sha256": bundled_record()["sha256"],
    }
    assert json.loads((run_dir / "hnd" / "artifacts" / "split.json").read_text())["teacher"] == results["teacher"]
    assert list((run_dir / "hnd" / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (run_dir / "hnd" / "artifacts").iterdir()} >= {
        "head.safetensors",
        "tail.safetensors",
        "split.json",
    }


def test_compare_runs_every_method_per_seed_with_epoch_curves_and_aggregates_them(tmp_path):
    run_experiment(
        "compare",
        tmp_path,
        "pipeline.seeds=[1,2]",
        "~pipeline.stages.kd",
        "pipeline.stages.naive.config.trainer.max_epochs=1",
    )
    run_dir = latest_run(tmp_path)
    rows = json.loads((run_dir / "compare.json").read_text())
    assert [row["stage"] for row in rows] == ["teacher", "hnd", "naive"]
    runs = json.loads((run_dir / "compare_runs.json").read_text())
    assert sorted((run["stage"], run["seed"]) for run in runs) == [("hnd", 1), ("hnd", 2), ("naive", 1), ("naive", 2)]
    hnd = rows[1]
    assert hnd["seeds"] == [1, 2]
    acc = [run["test_acc1"] for run in runs if run["stage"] == "hnd"]
    assert (
        abs(hnd["test_acc1"] - sum(acc) / 2) < 1e-9 and abs(hnd["test_acc1_std"] - abs(acc[0] - acc[1]) / 2**0.5) < 1e-9
    )
    for stage in ("hnd", "naive"):
        for seed in (1, 2):
            curve = json.loads((run_dir / stage / f"seed{seed}" / "epoch_curve.json").read_text())
            assert [point["epoch"] for point in curve] == [0, 1]  # before training, then after each epoch
            assert curve[0]["train_seconds"] < curve[1]["train_seconds"]
    assert rows[1]["trainable_parameters"] < rows[2]["trainable_parameters"]
    assert (run_dir / "compare.png").stat().st_size > 10_000
    assert "at equal training time" in (run_dir / "compare.md").read_text()


def test_bottlenecks_trains_one_fused_run_and_draws_accuracy_against_bytes(tmp_path):
    run_experiment("bottlenecks", tmp_path, "model.bottleneck_channels=[3,6]")
    run_dir = latest_run(tmp_path)
    teacher, *students = json.loads((run_dir / "bottlenecks.json").read_text())
    assert [row["bottleneck_channels"] for row in students] == [3, 6]
    assert [row["payload_bytes_float32"] for row in students] == [4 * 3 * 25, 4 * 6 * 25]
    assert all(row["test_q8_acc1"] is not None for row in students)
    assert (run_dir / "bottlenecks.png").stat().st_size > 10_000


def test_two_quickstarts_training_their_own_teacher_together_share_one(tmp_path):
    own_teacher = [
        "pipeline.train_teacher=true",
        "pipeline.teacher.config.trainer.max_epochs=1",
        "+pipeline.teacher.config.method.scheduler.warmup_epochs=0",
        "pipeline.split_inference.num_images=0",
    ]
    # own run directories: both start within the same second, which names the default one
    first, second = (
        start_experiment("quickstart", tmp_path, *own_teacher, f"hydra.run.dir={tmp_path}/runs/day/{name}")
        for name in ("a", "b")
    )
    for process in (first, second):
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
    teachers = [path for path in (tmp_path / "teachers").iterdir() if not path.name.startswith(".")]
    assert len(teachers) == 1 and (teachers[0] / "artifacts" / "teacher.safetensors").is_file()
    assert not [path for path in (tmp_path / "teachers").iterdir() if path.name.startswith(".staging")]
    tables = [json.loads(path.read_text()) for path in sorted((tmp_path / "runs").glob("*/*/quickstart.json"))]
    assert sorted(table[0]["source"] for table in tables) == ["cache", "trained"]
    identities = [
        json.loads(path.read_text())["teacher"] for path in sorted((tmp_path / "runs").glob("*/*/hnd/results.json"))
    ]
    # each student run recorded the shared file (its folder is named by the settings' digest) and its sha256
    shared = (teachers[0] / "artifacts" / "teacher.safetensors").resolve()
    assert identities[0] == identities[1] == {"source": "checkpoint", "file": str(shared), "sha256": sha256_of(shared)}
    for path in sorted((tmp_path / "runs").glob("*/*/hnd/artifacts/split.json")):
        assert json.loads(path.read_text())["teacher"] == identities[0]
