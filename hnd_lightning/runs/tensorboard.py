"""What TensorBoard shows of a run: its curves in one event file, the run described in words, and the
settings beside the final metrics.

Lightning's own `TensorBoardLogger` shows more than a user came to watch and splits a run in pieces:
it adds an `epoch` card to every logged dict, and it closes its writer when `fit` ends, so the test
that follows opens a second event file (and the HPARAMS record a third). `RunTensorBoardLogger`
(`conf/logger/tensorboard.yaml`) keeps one writer open from the first curve to the last record and
drops the `epoch` card; `describe_run` writes the run's method, model, bottleneck, trainable
parameters and payload as text (TEXT tab) when it starts; `log_final_hparams` (`runs.sweep`) links the
settings to the test metrics already logged, without repeating them as new one-point cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

# Lightning adds the epoch to every logged dict; the x axis is the step already.
EPOCH_KEY = "epoch"
# Written when the run starts (TEXT tab).
RUN_TEXT_TAG = "run"
# The final metrics the HPARAMS tab shows: the scalars the run logged under these prefixes, plus the
# checkpoint selection score (`best/val/acc1`), the one of them not logged during the run.
HPARAMS_METRIC_PREFIXES = ("val/", "test/", "test_q8/")
BEST_SCORE_KEY = "best/val/acc1"


class RunTensorBoardLogger(TensorBoardLogger):
    """A `TensorBoardLogger` writing one event file per run and no `epoch` card.

    Lightning calls `finalize("success")` after `fit` and again after `test`; here that flushes the
    writer and keeps it open, so the test's metrics and the final HPARAMS land in the same file as the
    training curves. `close()` ends the file (`runs.training.train` calls it when the run ends); a
    failed stage (`finalize("failed")`) closes it at once, as Lightning's does.
    """

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        shown = {key: value for key, value in metrics.items() if key != EPOCH_KEY}
        if shown:
            super().log_metrics(shown, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if status != "success":
            super().finalize(status)
            return
        if self._experiment is not None:
            self.experiment.flush()
        self.save()

    @rank_zero_only
    def close(self) -> None:
        """Flush and close the event file (a later log would open a new one)."""
        super().finalize("success")
        self._experiment = None

    @rank_zero_only
    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Markdown `text` under `tag` in the TEXT tab."""
        self.experiment.add_text(tag, text, global_step=step)

    @rank_zero_only
    def log_final_hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """The HPARAMS tab: `params` beside the run's final `metrics`.

        Metrics under `HPARAMS_METRIC_PREFIXES` were logged as scalars during the run, and the HPARAMS
        view reads their last value from there, so only `best/val/acc1` is written (once, at `step`).
        """
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
        from torch.utils.tensorboard.summary import hparams

        # lists (a fused run's sizes, swept values) and None become text, as Lightning's own hparams do
        settings = self._sanitize_params(_flatten_dict(_convert_params(dict(params))))
        shown = {key: value for key, value in metrics.items() if key.startswith(HPARAMS_METRIC_PREFIXES)}
        if BEST_SCORE_KEY in metrics:
            shown[BEST_SCORE_KEY] = metrics[BEST_SCORE_KEY]
            self.experiment.add_scalar(BEST_SCORE_KEY, metrics[BEST_SCORE_KEY], global_step=step)
        if not shown:
            return
        writer = self.experiment._get_file_writer()
        for summary in hparams(settings, shown):
            writer.add_summary(summary)
        self.experiment.flush()


def run_loggers(trainer: Any) -> list[RunTensorBoardLogger]:
    """The trainer's `RunTensorBoardLogger`s (none when `logger` is another one or switched off)."""
    return [logger for logger in trainer.loggers if isinstance(logger, RunTensorBoardLogger)]


def describe_run(trainer: Any, summary: Mapping[str, Any]) -> None:
    """Write `summary` (name -> value: method, model, bottleneck, parameters, payload) as a table (TEXT tab)."""
    rows = "\n".join(f"| {name} | {value} |" for name, value in summary.items())
    for logger in run_loggers(trainer):
        logger.log_text(RUN_TEXT_TAG, f"| | |\n|---|---|\n{rows}")


def close_run_loggers(trainer: Any) -> None:
    """End every run logger's event file (the run's last record has been written)."""
    for logger in run_loggers(trainer):
        logger.close()
