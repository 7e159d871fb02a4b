"""Sweeps: what a job of a Hydra multirun does for its sweep, and the summary written when it ends.

A multirun (`python -m hnd_lightning.train -m model.bottleneck_channels=3,6,9,12`) writes one run
directory per job under the sweep directory, each with a `results.json` (`runs.record`). When the
sweep ends, `SweepSummary` (configured under `hydra.callbacks`) reads them all (`runs.sweep_rows`)
and writes summary.csv, summary.md and summary.png into the sweep directory
(`reporting.sweep_summary`). `python -m hnd_lightning.summarize SWEEP_DIR` writes the same files
again, e.g. after a re-run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from hnd_lightning.reporting.sweep_summary import write_summary_files
from hnd_lightning.runs.record import in_multirun
from hnd_lightning.runs.sweep_jobs import override_values
from hnd_lightning.runs.sweep_rows import collect_rows, unfinished

log = logging.getLogger(__name__)


def _dirname_part(value: Any) -> str:
    """`3` -> "3", `[3, 6, 9]` (a fused run) -> "3-6-9": run directory names without spaces or brackets."""
    return "-".join(str(item) for item in value) if isinstance(value, (list, tuple, ListConfig)) else str(value)


# conf/hydra/default.yaml names each job's run directory with it (imported before Hydra resolves the names).
OmegaConf.register_new_resolver("hnd_dirname", _dirname_part, replace=True)
# `${hnd_sum:${data.num_workers},1}`: conf/hydra/launcher/slurm.yaml's cores per task
OmegaConf.register_new_resolver("hnd_sum", lambda *values: sum(int(value) for value in values), replace=True)


# ----------------------------------------------------------------------------- one job of a sweep
def log_sweep_hparams(trainer: Any, results: dict[str, Any]) -> None:
    """Put the run's settings beside its final metrics in TensorBoard's HPARAMS view.

    The settings are model, method, bottleneck channels, payload, trainable parameters and input size
    plus every command-line override of the job (so whatever a sweep varied shows up); the metrics are
    the run's final `val/`, `test/` and `test_q8/` metrics and `best/val/acc1` (`runs.tensorboard`).
    Each run directory of a sweep holds its own TensorBoard folder, so `tensorboard --logdir <sweep dir>`
    compares them side by side.
    """
    from hydra.core.hydra_config import HydraConfig

    from hnd_lightning.runs.tensorboard import run_loggers

    payload = results.get("payload") or {}
    params: dict[str, Any] = {
        "model": results.get("architecture"),
        "method": results.get("method"),
        "bottleneck_channels": results.get("bottleneck_channels") or 0,
        "input_size": results.get("input_size"),
        "payload_bytes_float32": payload.get("bytes_float32", 0),
        "trainable_parameters": results.get("trainable_parameters"),
    }
    if HydraConfig.initialized():
        for key, value in override_values(list(HydraConfig.get().overrides.task)).items():
            params.setdefault(key, value)
    for logger in run_loggers(trainer):
        logger.log_final_hparams(params, results.get("metrics", {}), trainer.global_step)


def refuse_ddp_subprocesses_in_multirun(trainer: Any) -> None:
    """Stop a multirun job that Lightning would run as DDP by re-launching the script per rank.

    Lightning's subprocess launcher starts ranks 1..N-1 with the command line of the main process;
    inside a Hydra multirun that command line is the whole sweep (`-m` and the value lists), so
    every extra rank would start the sweep over (Lightning issue 11300). Single runs are fine.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if in_multirun() and isinstance(launcher, _SubprocessScriptLauncher) and trainer.world_size > 1 and not external:
        raise RuntimeError(
            f"trainer=ddp with {trainer.world_size} processes cannot start its processes inside a Hydra multirun "
            "with the basic launcher (each extra rank would re-run the whole sweep). Use one of: "
            "the SLURM launcher (`hydra/launcher=slurm`, one task per GPU), a single run per job "
            "(no -m), or torchrun with a fixed `hydra.run.dir`. See the manual: how-to, scaling out (docs/howto/scaling-out.md)."
        )


# ----------------------------------------------------------------------------- the summary
def write_summary(sweep_dir: str | Path) -> dict[str, Any]:
    """Read every job under `sweep_dir` and write summary.csv, summary.md and summary.png there.

    Returns {"rows": [...], "csv": Path, "markdown": Path, "plot": Path}.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"Sweep directory {str(sweep_dir)!r} does not exist: pass the folder given by hydra.sweep.dir."
        )
    rows, columns = collect_rows(sweep_dir)
    return write_summary_files(rows, columns, sweep_dir)


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, write the sweep summary into `hydra.sweep.dir`.

    Args:
        fail_on_error: exit with status 1 after writing the summary when a job failed or wrote no
            results, so scripts and schedulers notice (failed jobs never stop the sweep itself).
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if rank_zero_only.rank != 0:  # a multirun started on every rank (torchrun) summarizes once
            return
        summary = write_summary(config.hydra.sweep.dir)
        log.info("Sweep summary (%d rows): %s", len(summary["rows"]), summary["markdown"])
        log.info("\n%s", summary["markdown"].read_text())
        failed = unfinished(summary["rows"])
        if failed:
            log.error(
                "%d of %d rows did not finish: %s",
                len(failed),
                len(summary["rows"]),
                ", ".join(r["job"] for r in failed),
            )
            log.error(
                "Re-run only those with the same command plus hydra.sweep.dir=%s skip_completed=true",
                config.hydra.sweep.dir,
            )
            if self.fail_on_error:
                # SystemExit passes through Hydra's callback guard (which only warns on exceptions).
                raise SystemExit(1)
