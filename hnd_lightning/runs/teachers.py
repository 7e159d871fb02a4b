"""Where a pipeline's students get their teacher: the one shipped with the package, or one trained here.

- `pipeline.train_teacher=false` (default): the bundled teacher (`model.teacher.weights=bundled`) is
  tested on the test split, so the table shows what the students are measured against.
- `pipeline.train_teacher=true`: `pipeline.teacher` (method and config) trains one into
  `pipeline.teacher_root/<architecture>-<digest of its settings>/`, reused by every later run with the
  same settings unless `pipeline.retrain_teacher=true`. Concurrent pipelines take a file lock around
  the check-and-train, so the second one waits and reuses the first one's teacher; the teacher is
  trained into a staging folder and renamed into place only once it finished.

Either way each student's run records the teacher's identity itself (`teacher` in its results.json and
split.json, `runs.record.teacher_record`): the bundled file and its sha256, or the trained
`teacher.safetensors` (whose folder name holds the settings' digest) and its sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from hnd_lightning.files import file_lock
from hnd_lightning.methods import count_parameters
from hnd_lightning.models.artifacts import TEACHER_FILE
from hnd_lightning.models.bundled_teacher import bundled_record
from hnd_lightning.runs.record import completed_results, write_results
from hnd_lightning.runs.tensorboard import close_run_loggers
from hnd_lightning.runs.training import setup_run, train

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """What the student stages need (`model.teacher` settings) and the teacher's row of the table."""

    model_teacher: dict[str, Any]
    row: dict[str, Any]


def teacher_digest(cfg: DictConfig) -> str:
    """Digest of everything that shapes a trained teacher (model, data, method, trainer, seed)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["model"]["teacher"].pop("checkpoint", None)
    settings["model"].pop("bottleneck_channels", None)
    settings["trainer"].pop("default_root_dir", None)
    settings["data"].pop("num_workers", None)
    relevant = {key: settings[key] for key in ("model", "data", "method", "trainer", "seed")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def test_bundled_teacher(cfg: DictConfig) -> Teacher:
    """Test the shipped teacher with `cfg` (a composed `method=original` config) on the test split."""
    with open_dict(cfg):
        cfg.model.teacher.weights = "bundled"
        cfg.model.teacher.checkpoint = None
    record = bundled_record()
    started = time.perf_counter()
    datamodule, method, trainer = setup_run(cfg)
    metrics = trainer.test(method, datamodule=datamodule, verbose=False)[0]
    close_run_loggers(trainer)
    row = {
        "method": "original",
        "source": "bundled",
        "architecture": cfg.model.architecture,
        "test_acc1": metrics.get("test/acc1"),
        "test_acc5": metrics.get("test/acc5"),
        "trainable_parameters": count_parameters(method.model),
        "epochs": record["epochs"],
        "wall_seconds": round(record["fit_seconds"], 1),
        "seconds_per_epoch": round(record["fit_seconds"] / record["epochs"], 1),
        "test_seconds": round(time.perf_counter() - started, 1),
        "reused": True,
    }
    return Teacher({"weights": "bundled", "checkpoint": None}, row)


def trained_teacher(cfg: DictConfig, teacher_root: Path, retrain: bool) -> Teacher:
    """Train the teacher `cfg` describes (or reuse the cached one with the same settings)."""
    digest = teacher_digest(cfg)
    teacher_dir = teacher_root / f"{cfg.model.architecture}-{digest}"
    checkpoint = teacher_dir / "artifacts" / TEACHER_FILE
    with file_lock(teacher_root / f".{teacher_dir.name}.lock"):
        results = completed_results(teacher_dir) if checkpoint.is_file() else None
        reused = results is not None and not retrain
        started = time.perf_counter()
        if reused:
            log.info("Reusing the teacher in %s (pipeline.retrain_teacher=true retrains it)", teacher_dir)
        else:
            staging = teacher_root / f".staging-{teacher_dir.name}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            cfg.paths.output_dir = str(staging)
            log.info("Training the teacher into %s (moved to %s when it finishes)", staging, teacher_dir)
            results = train(cfg)
            if results.get("status") != "ok":
                raise RuntimeError(f"Training the teacher in {staging} did not finish: {results.get('status')!r}")
            # Paths in the record point at the final folder once it is moved there.
            results = json.loads(json.dumps(results).replace(str(staging), str(teacher_dir)))
            write_results(staging, results)
            if teacher_dir.exists():
                shutil.rmtree(teacher_dir)
            os.replace(staging, teacher_dir)
    epochs = max(int(results.get("epochs") or 0), 1)
    row = {
        "method": results["method"],
        "source": "cache" if reused else "trained",
        "architecture": results["architecture"],
        "test_acc1": results["metrics"].get("test/acc1"),
        "test_acc5": results["metrics"].get("test/acc5"),
        "best_val_acc1": results["metrics"].get("best/val/acc1"),
        "trainable_parameters": results["trainable_parameters"],
        "epochs": epochs,
        "wall_seconds": round(results["fit_seconds"] if reused else time.perf_counter() - started, 1),
        "seconds_per_epoch": round(results["fit_seconds"] / epochs, 1),
        "reused": reused,
    }
    return Teacher({"weights": None, "checkpoint": str(checkpoint)}, row)
