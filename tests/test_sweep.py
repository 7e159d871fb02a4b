"""Hydra multirun sweeps: the summary table and plot, failed jobs, re-runs and TensorBoard hparams."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides
from PIL import Image

from hnd_lightning import summarize
from hnd_lightning.models.quantization import bottleneck_payload
from hnd_lightning.reporting.sweep_summary import SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG
from hnd_lightning.runs.sweep import write_summary


def run_sweep(sweep_dir: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m hnd_lightning.train -m ...` of tiny densenet169 runs into `sweep_dir`."""
    tiny = [o for o in tiny_overrides("densenet169", "hnd", data_root) if not o.startswith("model.bottleneck_channels")]
    command = [
        sys.executable,
        "-m",
        "hnd_lightning.train",
        "-m",
        *tiny,
        *overrides,
        f"paths.output_root={sweep_dir.parent}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(command, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=600)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def markdown_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the markdown table in `path`, as {header: cell text}."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def test_sweep_over_bottleneck_sizes_writes_table_and_plot(image_folder, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, image_folder, "model.bottleneck_channels=3,6,9", "test_quantized=true")
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_csv(sweep_dir / SUMMARY_CSV)
    assert [row["job"] for row in rows] == ["0_densenet169_hnd_b3", "1_densenet169_hnd_b6", "2_densenet169_hnd_b9"]
    assert all(row["status"] == "ok" and row["model"] == "densenet169" and row["method"] == "hnd" for row in rows)
    # input 32: the bottleneck is B x 5 x 5, the uint8 image 3 x 32 x 32 = 3072 bytes; 8-bit adds a
    # float32 scale and a uint8 zero point per image
    assert [int(row["payload_bytes_float32"]) for row in rows] == [4 * 25 * b for b in (3, 6, 9)]
    assert [int(row["payload_bytes_uint8"]) for row in rows] == [25 * b + 5 for b in (3, 6, 9)]
    assert float(rows[0]["payload_percent_of_input"]) == pytest.approx(100 * 80 / 3072)
    # each job's results.json carries what the table shows (test_q8: asked for with test_quantized)
    for row in rows:
        written = json.loads((sweep_dir / row["job"] / "results.json").read_text())
        assert written["status"] == "ok" and written["payload"]["bottleneck_shape"] == [
            int(row["bottleneck_channels"]),
            5,
            5,
        ]
        for column, key in (("test_acc1", "test/acc1"), ("test_acc5", "test/acc5"), ("test_q8_acc1", "test_q8/acc1")):
            assert float(row[column]) == pytest.approx(written["metrics"][key]), column
        assert int(row["trainable_parameters"]) == written["trainable_parameters"]
        assert float(row["wall_seconds"]) == pytest.approx(written["wall_seconds"])

    table = markdown_rows(sweep_dir / SUMMARY_MD)
    assert [row["job"] for row in table] == [row["job"] for row in rows]
    assert table[0]["test_acc1 (%)"] == f"{100 * float(rows[0]['test_acc1']):.2f}"
    with Image.open(sweep_dir / SUMMARY_PNG) as image:
        assert image.format == "PNG" and image.width > 300

    # the standalone command writes the same table again
    (sweep_dir / SUMMARY_CSV).unlink()
    assert summarize.main([str(sweep_dir)]) == 0
    assert read_csv(sweep_dir / SUMMARY_CSV) == rows


def test_failed_job_is_reported_and_a_rerun_fills_in_only_unfinished_jobs(image_folder, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, image_folder, "model.bottleneck_channels=3,0")
    # the failure neither stops the sweep nor the summary, but the sweep exits non-zero
    assert result.returncode == 1
    rows = {row["job"]: row for row in read_csv(sweep_dir / SUMMARY_CSV)}
    assert rows["0_densenet169_hnd_b3"]["status"] == "ok"
    failed = rows["1_densenet169_hnd_b0"]
    assert failed["status"] == "failed" and failed["test_acc1"] == ""
    assert "bottleneck_channels must be a positive integer" in failed["error"]
    assert [row["status"] for row in markdown_rows(sweep_dir / SUMMARY_MD)] == ["ok", "failed"]
    assert (sweep_dir / SUMMARY_PNG).is_file()

    finished = sweep_dir / "0_densenet169_hnd_b3" / "results.json"
    failed_results = sweep_dir / "1_densenet169_hnd_b0" / "results.json"
    finished_before, failed_before = finished.read_text(), failed_results.read_text()
    rerun = run_sweep(sweep_dir, image_folder, "model.bottleneck_channels=3,0", "skip_completed=true")
    assert rerun.returncode == 1
    assert "Skipping" in rerun.stderr + rerun.stdout
    assert finished.read_text() == finished_before  # not trained again
    assert failed_results.read_text() != failed_before  # tried again (new wall time)
    assert json.loads(failed_results.read_text())["status"] == "failed"


def _write_job(sweep_dir: Path, name: str, results: dict | None, config: dict | None = None) -> None:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config or {}))  # JSON is valid YAML
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))


def test_payload_of_the_papers_bottlenecks():
    payload = bottleneck_payload("densenet169", 3, 224)
    assert payload["bottleneck_shape"] == [3, 29, 29]
    assert (payload["bytes_float32"], payload["bytes_float16"], payload["bytes_uint8"]) == (
        4 * 2523,
        2 * 2523,
        2523 + 5,
    )
    assert payload["input_bytes_uint8"] == 3 * 224 * 224
    assert payload["percent_of_input"] == pytest.approx(1.68, abs=0.01)  # the papers' figure
    assert bottleneck_payload("inception_v3", 3, 299)["percent_of_input"] == pytest.approx(1.53, abs=0.01)
    assert bottleneck_payload("densenet169", 0, 224) is None


def _model(size: int | None, **values) -> dict:
    payload = bottleneck_payload("densenet169", size, 224) if size else None
    return {"bottleneck_channels": size, "payload": payload, "trainable_parameters": 10 * (size or 100), **values}


def test_summary_has_a_row_per_model_with_quantized_accuracy_and_missing_jobs(tmp_path):
    common = {
        "architecture": "densenet169",
        "input_size": 224,
        "trainable_parameters": 10,
        "wall_seconds": 5.0,
        "status": "ok",
    }
    _write_job(
        tmp_path,
        "0_a",
        {
            **common,
            "method": "hnd",
            "bottleneck_channels": 3,
            "metrics": {"test/acc1": 0.7},
            "models": {"b3": _model(3, best_val_acc1=0.72, test_acc1=0.7, test_acc5=0.9, test_q8_acc1=0.69)},
        },
    )
    _write_job(
        tmp_path,
        "1_b",
        {
            **common,
            "method": "original",
            "bottleneck_channels": None,
            "models": {"teacher": _model(None, best_val_acc1=0.8, test_acc1=0.75, test_acc5=0.92)},
        },
    )
    # a job killed before it wrote results.json: the row comes from its Hydra config
    _write_job(
        tmp_path, "2_c", None, {"model": {"architecture": "densenet169", "bottleneck_channels": 6, "input_size": 224}}
    )
    # a fused HND run is one job with a row per student, each with its own payload, parameters and accuracy
    _write_job(
        tmp_path,
        "3_d",
        {
            **common,
            "method": "hnd",
            "bottleneck_channels": [3, 6],
            "metrics": {"test/acc1": 0.5},
            "models": {
                "b3": _model(3, best_val_acc1=0.4, test_acc1=0.5, test_acc5=0.8),
                "b6": _model(6, best_val_acc1=0.55, test_acc1=0.6, test_acc5=0.9),
            },
        },
    )
    # a failed job has no per-model record: one row from its run-level fields
    _write_job(
        tmp_path,
        "4_e",
        {
            **common,
            "status": "failed",
            "error": "ValueError: boom",
            "method": "kd",
            "bottleneck_channels": 9,
            "metrics": {},
        },
    )

    summary = write_summary(tmp_path)
    rows = {row["job"]: row for row in summary["rows"]}
    assert list(rows) == ["0_a", "1_b", "2_c", "3_d/b3", "3_d/b6", "4_e"]
    assert (rows["3_d/b6"]["bottleneck_channels"], rows["3_d/b6"]["payload_bytes_uint8"]) == (6, 5046 + 5)
    assert (rows["3_d/b6"]["test_acc1"], rows["3_d/b6"]["best_val_acc1"], rows["3_d/b6"]["trainable_parameters"]) == (
        0.6,
        0.55,
        60,
    )
    assert rows["0_a"]["test_q8_acc1"] == 0.69 and rows["0_a"]["best_val_acc1"] == 0.72
    assert rows["1_b"]["payload_bytes_float32"] is None and rows["1_b"]["test_acc1"] == 0.75
    assert rows["2_c"]["status"] == "missing" and rows["2_c"]["payload_bytes_uint8"] == 5046 + 5
    assert (rows["4_e"]["status"], rows["4_e"]["payload_bytes_uint8"], rows["4_e"]["error"]) == (
        "failed",
        7569 + 5,
        "ValueError: boom",
    )
    header = read_csv(summary["csv"])[0].keys()
    assert "test_q8_acc1" in header and "test_q8_acc5" not in header  # a column only where some job has it
    table = {row["job"]: row for row in markdown_rows(summary["markdown"])}
    assert table["0_a"]["test_q8_acc1 (%)"] == "69.00" and table["1_b"]["test_q8_acc1 (%)"] == "-"
    assert summarize.main([str(tmp_path)]) == 1  # a missing job is not a finished sweep
    assert summarize.main([str(tmp_path / "nowhere")]) == 2
