"""Train one method on one split model: `python -m hnd_lightning.train model=densenet169 method=hnd`.

A thin composition: `runs.phases.run_training` runs one job (`runs.training.train`, or each phase of a
method trained in phases such as `method=entropic_student`), `runs.pipeline.run_pipeline` the multi-stage
experiments (`experiment=quickstart`, `experiment=compare`, ...); `runs.record` records failures so a
sweep goes on and its summary (`runs.sweep`) sees them. A SIGTERM stops the job (and the sweep) with
status "interrupted" and a non-zero exit; re-running the same command continues it (`runs.resume`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from hnd_lightning.runs.phases import run_training
from hnd_lightning.runs.pipeline import run_pipeline
from hnd_lightning.runs.record import (
    RESULTS_FILE,
    RunInterrupted,
    completed_results,
    in_multirun,
    record_failure,
)
from hnd_lightning.runs.sweep import write_summary  # also registers the run-directory resolver before Hydra resolves

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("pipeline"):
        # Multi-stage experiments (experiment=quickstart, experiment=compare); see runs/pipeline.py.
        from hydra.core.hydra_config import HydraConfig

        run_pipeline(cfg, HydraConfig.get().overrides.task)
        return None
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("skip_completed") and (done := completed_results(output_dir)) is not None:
        log.info("Skipping %s: its results.json says status ok (skip_completed=true)", output_dir)
        return done["metrics"].get("test/acc1")
    started = time.perf_counter()
    try:
        results = run_training(cfg)  # one run, or each phase of a phased method (entropic_student)
    except RunInterrupted:
        # The signal ends the process, so Hydra would skip the sweep's end callbacks: summarize now
        # (the interrupted job as such, the jobs not started as missing), then exit non-zero.
        if in_multirun() and rank_zero_only.rank == 0:
            from hydra.core.hydra_config import HydraConfig

            log.error("Sweep interrupted; summary: %s", write_summary(HydraConfig.get().sweep.dir)["markdown"])
        raise
    except Exception as error:
        # Record the failure for the sweep summary; in a multirun, return so the other jobs still run
        # (Hydra's basic sweeper would stop the sweep and skip the summary on a raised error).
        record_failure(cfg, error, time.perf_counter() - started, rank_zero_only.rank)
        if not in_multirun():
            raise
        log.exception("Job failed; recorded in %s and the sweep goes on", output_dir / RESULTS_FILE)
        return None
    # Returned for Hydra sweepers that optimize a metric.
    return results["metrics"].get("test/acc1")


if __name__ == "__main__":
    main()
