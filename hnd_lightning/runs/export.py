"""A run's deployable artifacts, exported after the test from the weights just tested.

`runs.training.fit_and_test` calls `export_artifacts` on rank zero once the test has put every
model's best weights in place (`SplitComputingMethod.use_best_weights`). It writes into
`<run dir>/artifacts/` what `SplitComputingMethod.export_artifacts` writes: head.safetensors,
tail.safetensors and split.json per student, teacher.safetensors and teacher.json for
`method=original`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from hnd_lightning.methods import SplitComputingMethod

log = logging.getLogger(__name__)

ARTIFACTS_DIR = "artifacts"


def data_info(datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Normalization, resize size and class names of `datamodule`, as `split.json` records them."""
    return {
        "normalization": {
            "mean": list(getattr(datamodule, "mean", ())),
            "std": list(getattr(datamodule, "std", ())),
        },
        "resize_size": getattr(datamodule, "resize_size", None),
        "classes": list(getattr(datamodule, "classes", []) or []) or None,
    }


def export_artifacts(
    method: SplitComputingMethod,
    datamodule: pl.LightningDataModule,
    directory: str | Path,
    teacher: dict[str, Any] | None = None,
) -> list[Path]:
    """Write `method`'s models with their current weights into `directory`; return the files written.

    `teacher`: the teacher's identity (`runs.record.teacher_record`), recorded in each split.json.
    """
    written = method.export_artifacts(Path(directory), {**data_info(datamodule), "teacher": teacher})
    log.info("Artifacts written: %s", ", ".join(str(path) for path in written))
    return written
