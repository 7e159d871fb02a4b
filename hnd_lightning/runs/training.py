"""One training run, from a composed `train.yaml` config to its results record.

`train(cfg)` seeds, builds the DataModule, the method (teacher + student) and the Trainer, fits, tests
the best weights and writes `results.json`. The train command and the multi-stage pipelines both run
it; every run writes into its run directory (`paths.output_dir`):

    checkpoints/   `last.ckpt` (resume=auto continues from it) and the best checkpoint on val/acc1
    artifacts/     the deployable head and tail (or teacher) weights and their JSON description
    tensorboard/   TensorBoard event files
    results.json   the run's settings and final metrics (`runs.record`)
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from hnd_lightning.methods import SplitComputingMethod, count_parameters
from hnd_lightning.models import build_teacher
from hnd_lightning.runs import resume
from hnd_lightning.runs.export import ARTIFACTS_DIR, export_artifacts
from hnd_lightning.runs.record import (
    RESULTS_FILE,
    RunInterrupted,
    interrupted_results,
    interruption_reason,
    teacher_record,
    write_results,
)
from hnd_lightning.runs.sweep import log_sweep_hparams, refuse_ddp_subprocesses_in_multirun
from hnd_lightning.runs.tensorboard import close_run_loggers, describe_run

log = logging.getLogger(__name__)


# What the terminal shows of a run: the progress bars, the data, the parameters and the results. Frozen
# teachers and tails are in eval mode on purpose (see SplitComputingMethod.freeze); Lightning's own
# pytree deprecation and its advertisement for a cloud logger say nothing about the run.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


class _WithoutTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WithoutTips())


def build_method(cfg: DictConfig) -> SplitComputingMethod:
    """Build the teacher described by `cfg.model` and the LightningModule of `cfg.method` around it."""
    model_cfg = cfg.model
    teacher = build_teacher(
        model_cfg.architecture,
        model_cfg.num_classes,
        weights=model_cfg.teacher.weights,
        checkpoint=model_cfg.teacher.checkpoint,
        input_size=model_cfg.input_size,
    )
    return instantiate(
        cfg.method,
        teacher=teacher,
        architecture=model_cfg.architecture,
        num_classes=model_cfg.num_classes,
        input_size=model_cfg.input_size,
        bottleneck_channels=model_cfg.bottleneck_channels,
    )


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    return [instantiate(item) for item in (group or {}).values() if item is not None and "_target_" in item]


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value) for key, value in metrics.items() if torch.is_tensor(value) or isinstance(value, (int, float))
    }


def setup_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, SplitComputingMethod, pl.Trainer]:
    """Seed, then build the DataModule, the method (with its models) and the Trainer of `cfg`."""
    pl.seed_everything(cfg.seed, workers=True)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    method = build_method(cfg)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, method, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and export one run described by a composed `train.yaml` config.

    Returns the contents of `results.json`: settings, trainable parameters, wall time and metrics.
    Continues from the run directory's last checkpoint when `resume=auto` finds one (`runs.resume`).
    Raises `RunInterrupted` (a SystemExit, code 143 on SIGTERM) after recording status "interrupted".
    """
    started = time.perf_counter()
    trainer = None
    try:
        if rank_zero_only.rank == 0:
            resume.remove_leftovers(cfg)
        with resume.sigterm_raises():
            datamodule, method, trainer = setup_run(cfg)
        refuse_ddp_subprocesses_in_multirun(trainer)
        resume.refuse_empty_training(trainer)
        resume.prepare_resume(cfg, method, trainer)
        results = fit_and_test(cfg, datamodule, method, trainer)
    except (SystemExit, KeyboardInterrupt) as interruption:
        # SIGTERM (Lightning's SIGTERMException), Ctrl+C, a scheduler's exit: record it, exit non-zero
        raise record_interruption(cfg, interruption, trainer, time.perf_counter() - started) from interruption
    # The job's whole time (models, data and test included), for the sweep summary.
    results["wall_seconds"] = time.perf_counter() - started
    if trainer.is_global_zero:
        write_results(cfg.paths.output_dir, results)
    log_sweep_hparams(trainer, results)
    close_run_loggers(trainer)
    return results


def record_interruption(
    cfg: DictConfig, interruption: BaseException, trainer: pl.Trainer | None, wall_seconds: float
) -> RunInterrupted:
    """Write results.json with status "interrupted" (where training stopped, the checkpoint to continue from)."""
    if isinstance(interruption, RunInterrupted):
        return interruption
    progress: dict[str, Any] = {}
    if trainer is not None:
        progress = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        last = resume.latest_checkpoint(cfg, trainer)
        if last is not None:
            progress["checkpoint"] = str(last)
    results = interrupted_results(cfg, interruption, wall_seconds, progress)
    if rank_zero_only.rank == 0:
        write_results(cfg.paths.output_dir, results)
        log.error("Run %s; recorded in %s", results["error"], Path(cfg.paths.output_dir) / RESULTS_FILE)
    return RunInterrupted(interruption_reason(interruption)[1], results)


def run_description(cfg: DictConfig, method: SplitComputingMethod) -> dict[str, str]:
    """What the run trains, in words (TensorBoard's TEXT tab): method, model, teacher, parameters, payload."""
    weights = cfg.model.teacher.weights
    teacher = cfg.model.teacher.checkpoint or (f"{weights} weights" if weights else "random weights (tests)")
    side = cfg.model.input_size
    description = {
        "method": method.method_name,
        "model": f"{cfg.model.architecture}, {side} x {side} input, {cfg.model.num_classes} classes",
        "teacher": str(teacher),
        "trainable parameters": f"{count_parameters(method, trainable_only=True):,} of {count_parameters(method):,}",
    }
    models = method.model_summary()
    for name, entry in models.items():
        payload = entry["payload"]
        if payload is not None:
            shape = " x ".join(str(size) for size in payload["bottleneck_shape"])
            key = "sent per image" if len(models) == 1 else f"sent per image, {name}"
            if payload.get("coding") == "entropy_coded":  # its bytes are known once its test has coded images
                description[key] = f"a {shape} latent, entropy-coded: bytes per image measured on its bitstream"
                continue
            description[key] = (
                f"a {shape} tensor: {payload['bytes_float32']:,} B as float32, {payload['bytes_uint8']:,} B over "
                f"the 8-bit link ({payload['percent_of_input']:.1f} % of the {payload['input_bytes_uint8']:,}-byte image)"
            )
    description["run directory"] = str(cfg.paths.output_dir)
    return description


def fit_and_test(
    cfg: DictConfig, datamodule: pl.LightningDataModule, method: SplitComputingMethod, trainer: pl.Trainer
) -> dict[str, Any]:
    """Fit; test every model at its best weights (`trainer.test(ckpt_path="best")`, then each model's
    own best, see `SplitComputingMethod`); export the weights just tested; return the results record."""
    output_dir = Path(cfg.paths.output_dir)
    describe_run(trainer, run_description(cfg, method))
    started = time.perf_counter()
    # Checkpoints hold tensors and plain containers only (this project writes them): load no pickled code.
    trainer.fit(method, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    fit_seconds = time.perf_counter() - started
    metrics = _scalars(trainer.callback_metrics)
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/val/acc1"] = float(checkpoint.best_model_score)

    if cfg.get("test"):
        tested = "best" if best_path and Path(best_path).is_file() else None
        if best_path and tested is None:
            # The weights tested are the same (the method keeps every model's best), but the file is not.
            log.warning(
                "Best checkpoint %s not found on rank %d (run directories must be on a filesystem shared by "
                "all nodes); testing the best weights kept in memory",
                best_path,
                trainer.global_rank,
            )
        method.test_quantized = bool(cfg.get("test_quantized"))
        trainer.test(method, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        metrics.update(_scalars(trainer.callback_metrics))
    else:
        method.use_best_weights()
    teacher = teacher_record(cfg)
    if trainer.is_global_zero:
        export_artifacts(method, datamodule, output_dir / ARTIFACTS_DIR, teacher)

    models = method.model_summary()
    # images skipped under data.on_bad_image=skip (this process's; each path once): never silently
    bad_images = list(getattr(datamodule, "bad_images", None) or [])
    results = {
        "status": "ok",
        "method": method.method_name,
        "architecture": cfg.model.architecture,
        # one size, a fused run's list of sizes, or None for `original`
        "bottleneck_channels": method.hparams.bottleneck_channels,
        "input_size": cfg.model.input_size,
        "num_classes": cfg.model.num_classes,
        # where the teacher's weights came from (also in split.json): torchvision's, a file's, bundled, random
        "teacher": teacher,
        # bytes per image sent over the link by the first model (None for `original`: no bottleneck)
        "payload": next(iter(models.values()))["payload"],
        "trainable_parameters": count_parameters(method, trainable_only=True),
        "fit_seconds": fit_seconds,
        "epochs": trainer.current_epoch,
        "best_checkpoint": best_path or None,
        "artifacts": str(output_dir / ARTIFACTS_DIR),
        "metrics": metrics,
        # per evaluated model (`b<B>` students, or `teacher`): payload, parameters, best epoch, test results
        "models": models,
        "bad_images": {"count": len(bad_images), "paths": bad_images[:100]},
    }
    if trainer.is_global_zero:
        log.info("Results: %s", json.dumps(results["metrics"], indent=None))
    return results
