"""Top-1/top-5 of a trained split model with and without the 8-bit bottleneck.

    python -m hnd_lightning.evaluate artifacts=outputs/runs/<date>/<time>/artifacts data.root=/data/ilsvrc2012

Input size, resize size, normalization and the number of classes come from the artifacts'
`split.json`, so the data is fed exactly as in training; class folders that differ from the run's
classes are refused (`allow_relabelled=true` for renamed folders). The test is the training runs'
own (`trainer.test` of the LightningModule), so `trainer.*` settings apply. Writes `evaluation.json`
into the run directory (`outputs/evaluate/<date>/<time>/` by default); see `runs.evaluation`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hnd_lightning.runs.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["metrics"][f"{cfg.split}_q8/acc1"]


if __name__ == "__main__":
    main()
