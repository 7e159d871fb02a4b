"""Multi-stage workflows run by `python -m hnd_lightning.train experiment=<name>`.

An experiment config with a `pipeline` block runs its `stages` in order, each a full training run
of one method composed from the real `train.yaml` (plus the stage's `config` overrides):

- a stage with `method: original` trains the teacher; it is stored under
  `pipeline.teacher_root/<architecture>-<digest of its settings>/` and reused by later runs with the
  same settings unless `pipeline.retrain_teacher=true`;
- every other stage trains a student from that teacher (`model.teacher.checkpoint`) into
  `<run dir>/<stage>/`.

At the end a results table is printed and written as `<pipeline name>.md`, `.csv` and `.json` into
the run directory: top-1/top-5, trainable parameters, wall time (total and per epoch) of each stage
and the payload each student sends per image.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from hnd_lightning.models.artifacts import TEACHER_FILE
from hnd_lightning.runs.record import completed_results
from hnd_lightning.runs.training import train

log = logging.getLogger(__name__)

def _without_method_choice(overrides: Sequence[str]) -> list[str]:
    """Drop `method=...` group choices from `overrides`: each stage picks its own method."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "method"]


def compose_stage(overrides: Sequence[str], method: str, updates: DictConfig | None, output_dir: Path) -> DictConfig:
    """Compose `train.yaml` with the run's overrides, the stage's method and its config updates."""
    cfg = compose(config_name="train", overrides=[*_without_method_choice(overrides), f"method={method}"])
    if updates is not None:
        cfg = OmegaConf.merge(cfg, updates)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.pop("pipeline", None)
    return cfg


def teacher_digest(cfg: DictConfig) -> str:
    """Digest of everything that shapes a trained teacher (model, data, method, trainer, seed)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["model"]["teacher"].pop("checkpoint", None)
    settings["model"].pop("bottleneck_channels", None)
    settings["trainer"].pop("default_root_dir", None)
    settings["data"].pop("num_workers", None)
    relevant = {key: settings[key] for key in ("model", "data", "method", "trainer", "seed")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def _stage_row(stage: str, results: dict[str, Any], seconds: float, reused: bool) -> dict[str, Any]:
    metrics = results["metrics"]
    epochs = max(int(results.get("epochs") or 0), 1)
    row = {
        "stage": stage,
        "method": results["method"],
        "architecture": results["architecture"],
        "bottleneck_channels": results.get("bottleneck_channels"),
        "test_acc1": metrics.get("test/acc1"),
        "test_acc5": metrics.get("test/acc5"),
        "best_val_acc1": metrics.get("best/val/acc1"),
        "trainable_parameters": results["trainable_parameters"],
        "epochs": epochs,
        "wall_seconds": round(seconds, 1),
        "seconds_per_epoch": round(results["fit_seconds"] / epochs, 1),
        "reused": reused,
    }
    sent = results.get("payload")  # None for the teacher, which sends no bottleneck
    if sent:
        row["payload_shape"] = "x".join(str(side) for side in sent["bottleneck_shape"])
        row.update({f"payload_{key}": value for key, value in sent.items() if key != "bottleneck_shape"})
    return row


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _round(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| stage | method | test top-1 % | test top-5 % | trainable params | wall time s | s / epoch "
        "| bottleneck | payload float32 B | payload 8-bit B | input uint8 B | 8-bit % of input |\n"
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n"
    )
    lines = []
    for row in rows:
        reused = " (reused)" if row["reused"] else ""
        lines.append(
            f"| {row['stage']} | {row['method']} | {_percent(row['test_acc1'])} | {_percent(row['test_acc5'])} "
            f"| {row['trainable_parameters']:,} | {row['wall_seconds']}{reused} | {row['seconds_per_epoch']} "
            f"| {row.get('payload_shape', '-')} | {row.get('payload_bytes_float32', '-')} "
            f"| {row.get('payload_bytes_uint8', '-')} | {row.get('payload_input_bytes_uint8', '-')} "
            f"| {_round(row.get('payload_percent_of_input'))} |"
        )
    return header + "\n".join(lines) + "\n"


def write_tables(run_dir: Path, name: str, rows: list[dict[str, Any]]) -> str:
    """Write `<name>.md`, `<name>.csv` and `<name>.json` into `run_dir`; return the markdown."""
    table = markdown_table(rows)
    teacher = next((row for row in rows if row["method"] == "original"), None)
    notes = []
    for row in rows:
        if teacher and row["method"] != "original" and row["test_acc1"] is not None and teacher["test_acc1"] is not None:
            gap = 100 * (row["test_acc1"] - teacher["test_acc1"])
            notes.append(f"- {row['stage']}: {abs(gap):.2f} points top-1 {'above' if gap > 0 else 'below'} the teacher")
    markdown = table + ("\n" + "\n".join(notes) + "\n" if notes else "")
    (run_dir / f"{name}.md").write_text(markdown)
    (run_dir / f"{name}.json").write_text(json.dumps(rows, indent=2))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(run_dir / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def run_pipeline(cfg: DictConfig, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """Run `cfg.pipeline.stages` in order (see module docstring); return one table row per stage."""
    spec = cfg.pipeline
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher_checkpoint: Path | None = None
    rows = []
    for stage, stage_spec in spec.stages.items():
        stage_cfg = compose_stage(overrides, stage_spec.method, stage_spec.get("config"), run_dir / stage)
        started = time.perf_counter()
        if stage_spec.method == "original":
            teacher_dir = Path(spec.teacher_root) / f"{stage_cfg.model.architecture}-{teacher_digest(stage_cfg)}"
            teacher_checkpoint = teacher_dir / "artifacts" / TEACHER_FILE
            finished = completed_results(teacher_dir) is not None and teacher_checkpoint.is_file()
            reused = finished and not spec.retrain_teacher
            stage_cfg.paths.output_dir = str(teacher_dir)
            if reused:
                log.info("Reusing the teacher in %s (pipeline.retrain_teacher=true retrains it)", teacher_dir)
                results = completed_results(teacher_dir)
            else:
                log.info("Stage %s: training the teacher into %s", stage, teacher_dir)
                results = train(stage_cfg)
        else:
            if teacher_checkpoint is None:
                raise ValueError(f"Pipeline stage {stage!r} needs a teacher: put a `method: original` stage before it.")
            stage_cfg.model.teacher.checkpoint = str(teacher_checkpoint)
            log.info("Stage %s: %s student from %s", stage, stage_spec.method, teacher_checkpoint)
            results = train(stage_cfg)
            reused = False
        seconds = results["fit_seconds"] if reused else time.perf_counter() - started
        rows.append(_stage_row(stage, results, seconds, reused))
    markdown = write_tables(run_dir, spec.name, rows)
    print(f"\n{spec.name} results ({run_dir}):\n\n{markdown}")
    return rows
