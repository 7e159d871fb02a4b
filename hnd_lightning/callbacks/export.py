"""Writes the deployable artifacts of the best checkpoint when training ends."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from hnd_lightning.methods.base import SplitComputingMethod

log = logging.getLogger(__name__)


def data_info(trainer: pl.Trainer) -> dict:
    """Normalization, resize size and class names of the trainer's DataModule, for `split.json`."""
    datamodule = trainer.datamodule
    return {
        "normalization": {
            "mean": list(getattr(datamodule, "mean", ())),
            "std": list(getattr(datamodule, "std", ())),
        },
        "resize_size": getattr(datamodule, "resize_size", None),
        "classes": list(getattr(datamodule, "classes", []) or []) or None,
    }


class SplitArtifactExport(pl.Callback):
    """On fit end: load the best checkpoint's weights (chosen on `val/acc1`) and export them.

    Writes into `dirpath` the files of `SplitComputingMethod.export_artifacts`: head.safetensors,
    tail.safetensors and split.json for students, teacher.safetensors and teacher.json for
    `method=original`. Without a best checkpoint (e.g. `fast_dev_run`) the final weights are exported.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.exported: list[Path] = []

    def on_fit_end(self, trainer: pl.Trainer, pl_module: SplitComputingMethod) -> None:
        best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best_path and Path(best_path).is_file():
            # On every rank, so that the test after fit sees the best weights everywhere.
            pl_module.load_best_weights(best_path)
            log.info("Exporting the best checkpoint %s", best_path)
        elif best_path:
            # Under DDP every rank loads the best weights before testing, so all must see the file.
            log.warning(
                "Best checkpoint %s not found on rank %d (run directories must be on a filesystem shared by "
                "all nodes); exporting the final weights", best_path, trainer.global_rank,
            )
        else:
            log.info("No best checkpoint (checkpointing off); exporting the final weights")
        self._export(trainer, pl_module)

    @rank_zero_only
    def _export(self, trainer: pl.Trainer, pl_module: SplitComputingMethod) -> None:
        self.exported = pl_module.export_artifacts(self.dirpath, data_info(trainer))
        log.info("Artifacts written: %s", ", ".join(str(path) for path in self.exported))
