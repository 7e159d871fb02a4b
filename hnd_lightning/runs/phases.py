"""Methods trained in phases (`method.phases`, e.g. the Entropic Student's two stages), run by one command.

`run_training(cfg)` is what the train command and the pipelines run for one job: `training.train`, or,
when the method config has `phases`, each phase in order as a run of its own in `<run dir>/<phase>/`
(its checkpoints, TensorBoard log and results.json, all of `training.train`'s machinery):

    <run dir>/stage1/    checkpoints/last.ckpt, artifacts/, results.json ...
    <run dir>/stage2/    the same; `method.init_from` = stage1/artifacts
    <run dir>/results.json   the last phase's record, its `phases` (fit time, epochs per phase), summed times

A phase's config is the run's with `method.phases` removed and the phase's `trainer` and `method` blocks
merged in. Re-running the same command (resume=auto) skips a phase whose results.json says ok (after
checking that its checkpoint was trained with the same settings) and continues the phase that was
interrupted from its own last.ckpt (`runs.resume`); resume=never trains every phase again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from hnd_lightning.callbacks.checkpointing import LAST_CHECKPOINT
from hnd_lightning.runs import resume
from hnd_lightning.runs.record import RunInterrupted, completed_results, write_results
from hnd_lightning.runs.training import train

log = logging.getLogger(__name__)

PHASES_KEY = "phases"


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """One job of `cfg`: `training.train`, or every phase of a phased method (see the module docstring)."""
    return train_in_phases(cfg) if cfg.method.get(PHASES_KEY) else train(cfg)


def phase_config(cfg: DictConfig, name: str, phase: DictConfig, init_from: str | None) -> DictConfig:
    """The run's config for phase `name`: without `method.phases`, with the phase's blocks merged, writing
    into `<run dir>/<name>`; `method.init_from` is the previous phase's artifacts (None for the first)."""
    unknown = sorted(set(phase) - {"trainer", "method"})
    if unknown:
        raise ValueError(f"method.phases.{name} has {unknown}; a phase sets only `trainer` and `method` values.")
    phase_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(phase_cfg):
        phase_cfg.method.pop(PHASES_KEY)
        phase_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        phase_cfg.ckpt_path = None  # a ckpt_path names one phase's checkpoint: each phase finds its own
    phase_cfg = OmegaConf.merge(phase_cfg, {"trainer": phase.get("trainer") or {}, "method": phase.get("method") or {}})
    if init_from is not None:
        with open_dict(phase_cfg):
            phase_cfg.method.init_from = init_from
    return phase_cfg


def finished_phase(phase_cfg: DictConfig) -> dict[str, Any] | None:
    """The results of a phase that finished with these settings, or None if it must (re-)run.

    A finished phase whose checkpoint records other settings is an error naming them (as resume's).
    """
    if str(phase_cfg.get("resume", "auto")) != "auto":
        return None
    output_dir = Path(phase_cfg.paths.output_dir)
    results = completed_results(output_dir)
    checkpoint = output_dir / "checkpoints" / LAST_CHECKPOINT
    if results is None or not checkpoint.is_file():
        return None  # not finished, or nothing records its settings (e.g. fast_dev_run): run it again
    differences = resume.settings_differences(resume.read_checkpoint(checkpoint), resume.run_settings(phase_cfg), {})
    if differences:
        raise ValueError(
            f"{output_dir} holds a finished phase trained with other settings ({'; '.join(differences)}). Re-run "
            "with its settings, write this run into another directory (hydra.run.dir=...), or resume=never."
        )
    return results


def train_in_phases(cfg: DictConfig) -> dict[str, Any]:
    """Run every phase of `cfg.method.phases` in order; write and return the run's results (the last
    phase's, with `phases` and the summed `fit_seconds`, `epochs` and `wall_seconds`)."""
    started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    phases: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    init_from = None
    for name, phase in cfg.method[PHASES_KEY].items():
        phase_cfg = phase_config(cfg, name, phase, init_from)
        results = finished_phase(phase_cfg)
        if results is not None:
            log.info("Phase %s finished before (%s): skipped", name, phase_cfg.paths.output_dir)
        else:
            log.info("Phase %s into %s", name, phase_cfg.paths.output_dir)
            try:
                results = train(phase_cfg)
            except RunInterrupted as interruption:
                if rank_zero_only.rank == 0:
                    record = {**interruption.results, "phase": name, "phases": phases}
                    write_results(run_dir, {**record, "error": f"phase {name}: {record.get('error')}"})
                raise
        phases[name] = {
            key: results.get(key) for key in ("fit_seconds", "epochs", "wall_seconds", "run_dir", "artifacts")
        }
        phases[name]["run_dir"] = phase_cfg.paths.output_dir
        init_from = results["artifacts"]
    summed = {key: sum(phase[key] or 0 for phase in phases.values()) for key in ("fit_seconds", "epochs")}
    results = {**results, **summed, "phases": phases, "wall_seconds": time.perf_counter() - started}
    if rank_zero_only.rank == 0:
        write_results(run_dir, results)
    return results
