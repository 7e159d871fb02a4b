"""Rate against accuracy: codec baselines as the papers count them, the rate table and its claims, beta sweeps."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hnd_lightning.reporting.rate_figure import rate_accuracy_figure
from hnd_lightning.runs.codecs import codec_rate_accuracy, codec_round_trip
from hnd_lightning.runs.rate_accuracy import claims, rate_rows
from hnd_lightning.runs.sweep import write_summary


def textured(seed: int, brightness: float = 128.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(brightness + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8))


def test_codec_bytes_are_what_pil_writes_and_grow_with_quality():
    view = textured(0)
    for codec, pil_format in (("jpeg", "JPEG"), ("webp", "WEBP")):
        sizes = []
        for quality in (10, 100):
            decoded, size = codec_round_trip(view, codec, quality)
            buffer = io.BytesIO()
            view.save(buffer, format=pil_format, quality=quality)
            assert size == len(buffer.getvalue()) and decoded.mode == "RGB" and decoded.size == view.size
            sizes.append(size)
        assert sizes[0] < sizes[1], codec
    with pytest.raises(ValueError, match="jpeg, webp"):
        codec_round_trip(view, "png", 50)
    with pytest.raises(ValueError, match="1..100"):
        codec_round_trip(view, "jpeg", 0)


def test_the_codec_baseline_classifies_the_decoded_views_with_the_teacher():
    # a "teacher" that tells bright from dark images; the codecs keep brightness, so it is always right
    teacher = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        teacher[2].weight.copy_(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        teacher[2].bias.zero_()
    views = [textured(i, 60.0) for i in range(3)] + [textured(i, 200.0) for i in range(3)]
    labels = [0, 0, 0, 1, 1, 1]
    rows = codec_rate_accuracy(teacher, views, labels, {"mean": [0.5] * 3, "std": [0.25] * 3}, qualities=(20, 90))
    assert [(row["method"], row["quality"]) for row in rows] == [("jpeg", 20), ("jpeg", 90), ("webp", 20), ("webp", 90)]
    assert all(row["test_acc1"] == 1.0 and row["images"] == 6 for row in rows)
    expected = np.mean([codec_round_trip(view, "webp", 20)[1] for view in views])
    assert rows[2]["bytes_mean"] == pytest.approx(expected)


def _student(stage: str, method: str, bottleneck: int, acc: float, acc_q8: float | None, **extra) -> dict:
    return {
        "stage": stage,
        "method": method,
        "bottleneck_channels": bottleneck,
        "test_acc1": acc,
        "test_q8_acc1": acc_q8,
        "payload_bytes_float32": 4 * bottleneck * 25,
        "payload_bytes_uint8": bottleneck * 25 + 5,
        "seconds_per_epoch": 10.0,
        **extra,
    }


def test_the_rate_table_has_a_row_per_method_and_setting_and_states_the_papers_comparisons(tmp_path):
    students = [
        _student("hnd B=3", "hnd", 3, 0.80, 0.79),
        _student("hnd B=6", "hnd", 6, 0.84, 0.83),
        _student("ghnd B=3", "ghnd", 3, 0.82, 0.80),
        {
            **_student("entropic_1", "entropic_student", 24, 0.81, None),
            "coding": "entropy_coded",
            "coded_bytes_mean": 30.0,
            "coded_bytes_p95": 34.0,
            "estimated_bytes_mean": 24.0,
            "beta": 0.1,
            "seconds_per_epoch_stage1": 20.0,
            "seconds_per_epoch_stage2": 30.0,
        },
    ]
    codecs = [
        {"method": "webp", "quality": 10, "bytes_mean": 130.0, "bytes_p95": 150.0, "test_acc1": 0.70, "images": 10},
        {"method": "jpeg", "quality": 10, "bytes_mean": 700.0, "bytes_p95": 710.0, "test_acc1": 0.85, "images": 10},
    ]
    rows = rate_rows({"test_acc1": 0.87, "seconds_per_epoch": 113.6}, students, codecs)
    assert [(r["method"], r["setting"], r["link"]) for r in rows] == [
        ("teacher", "whole image on one side", "-"),
        ("HND", "B=3", "float32"),
        ("HND", "B=3", "8-bit"),
        ("HND", "B=6", "float32"),
        ("HND", "B=6", "8-bit"),
        ("GHND", "B=3", "float32"),
        ("GHND", "B=3", "8-bit"),
        ("Entropic Student", "beta=0.1", "entropy-coded"),
        ("WebP", "q=10", "input codec"),
        ("JPEG", "q=10", "input codec"),
    ]
    entropic = rows[7]
    assert (entropic["bytes_mean"], entropic["bytes_p95"], entropic["estimated_bytes_mean"]) == (30.0, 34.0, 24.0)
    assert (entropic["seconds_per_epoch"], entropic["seconds_per_epoch_stage2"]) == (20.0, 30.0)
    assert (rows[2]["bytes_mean"], rows[2]["test_acc1"]) == (80, 0.79)
    lines = claims(rows)
    assert "- GHND vs HND at B=3 (float32): +2.00 points top-1" in lines
    assert "- GHND vs HND at B=3 (8-bit): +1.00 points top-1" in lines
    # 30 B is below every 8-bit payload: compared with the smallest one (HND B=3, 80 B, 79 %)
    assert any(
        line.startswith("- Entropic Student beta=0.1 (30.0 B): +2.00 points") and "80 B" in line for line in lines
    )
    # at <= 130 B (WebP q=10, 70 %) the best learned setting is the Entropic Student (30 B, 81 %)
    assert any(
        "at <= 130 B" in line and "Entropic Student beta=0.1 (entropy-coded) +11.00 points" in line for line in lines
    )
    path = rate_accuracy_figure(tmp_path / "rate_accuracy.png", rows, 0.87, 3072)
    assert path.stat().st_size > 10_000


def test_a_beta_sweep_summary_has_the_bytes_columns_and_ignores_the_phase_folders(tmp_path):
    for job, beta, coded, acc in (("0_densenet169_entropic_student_b12", 0.1, 40.0, 0.8), ("1_x", 1.0, 12.0, 0.6)):
        folder = tmp_path / job
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("model: {architecture: densenet169}\n")
        payload = {"bottleneck_shape": [24, 2, 2], "coding": "entropy_coded", "coded_bytes_mean": coded}
        payload.update(coded_bytes_p95=coded + 2, estimated_bytes_mean=coded - 5, input_bytes_uint8=3072)
        model = {"bottleneck_channels": 24, "payload": payload, "test_acc1": acc, "beta": beta, "stage": 2}
        results = {
            "status": "ok",
            "method": "entropic_student",
            "architecture": "densenet169",
            "models": {"b24": model},
        }
        (folder / "results.json").write_text(json.dumps(results))
        for stage in ("stage1", "stage2"):  # each phase's own record, inside the job
            (folder / stage).mkdir()
            (folder / stage / "results.json").write_text(json.dumps(results))
    summary = write_summary(tmp_path)
    assert [row["job"] for row in summary["rows"]] == ["0_densenet169_entropic_student_b12", "1_x"]
    assert [(row["beta"], row["coded_bytes_mean"]) for row in summary["rows"]] == [(0.1, 40.0), (1.0, 12.0)]
    header = summary["csv"].read_text().splitlines()[0].split(",")
    assert {"beta", "coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean"} <= set(header)
    assert "coded_bytes_mean" in summary["markdown"].read_text() and summary["plot"].stat().st_size > 5_000


@pytest.mark.slow
def test_the_rate_accuracy_experiment_runs_scaled_down(tmp_path):
    overrides = [
        "experiment=rate_accuracy",
        f"paths.output_root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "model.bottleneck_channels=[3,6]",
        "pipeline.stages.hnd.config.trainer.max_epochs=1",
        "pipeline.stages.ghnd.config.trainer.max_epochs=1",
        "~pipeline.stages.entropic_3",
        "~pipeline.stages.entropic_4",
        "pipeline.codecs.num_images=20",
        "pipeline.codecs.qualities=[10,90]",
    ]
    for stage in ("entropic_1", "entropic_2"):
        overrides += [
            f"pipeline.stages.{stage}.config.method.phases.{phase}.trainer.max_epochs=1"
            for phase in ("stage1", "stage2")
        ]
    process = subprocess.run(
        [sys.executable, "-m", "hnd_lightning.train", *overrides], capture_output=True, text=True, timeout=3000
    )
    assert process.returncode == 0, process.stderr[-3000:]
    run_dir = tmp_path / "run"
    rows = json.loads((run_dir / "rate_accuracy.json").read_text())
    kinds = {(row["method"], row["link"]) for row in rows}
    assert kinds == {
        ("teacher", "-"),
        *((method, link) for method in ("HND", "GHND") for link in ("float32", "8-bit")),
        ("Entropic Student", "entropy-coded"),
        ("JPEG", "input codec"),
        ("WebP", "input codec"),
    }
    assert len(rows) == 1 + 2 * 2 * 2 + 2 + 2 * 2
    entropic = [row for row in rows if row["method"] == "Entropic Student"]
    assert [row["setting"] for row in entropic] == ["beta=0.02", "beta=0.1"] and all(
        row["bytes_mean"] > 0 for row in entropic
    )
    assert (run_dir / "rate_accuracy.png").stat().st_size > 10_000
    assert "GHND vs HND at B=3" in (run_dir / "rate_accuracy.md").read_text()
    assert len(json.loads((run_dir / "codecs.json").read_text())) == 4
