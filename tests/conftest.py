"""Shared fixtures: tiny ImageFolder trees made on the fly and the real Hydra config, composed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# One intra-op thread for the tests and the commands they start: their tensors are tiny, and on a
# 2-core machine two threads per process stall badly as soon as a second process (a DDP rank, a CLI
# run, another job) holds a core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Smallest input each architecture supports in tests (paper sizes are covered by the shape tests).
TEST_INPUT_SIZE = {"densenet169": 32, "densenet201": 32, "resnet50": 32, "resnet152": 32, "inception_v3": 75}


def make_image_folder(root: Path, classes: int = 3, per_class: dict[str, int] | None = None, size: int = 40) -> Path:
    """Write a tiny ImageFolder tree (`train/`, `val/`) of JPEGs whose colour depends on the class."""
    per_class = per_class or {"train": 6, "val": 2}
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[label % 3] = 200
            for index in range(count):
                pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img{index}.jpg")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path | None = None, return_hydra_config: bool = False
) -> DictConfig:
    """Compose the real root config `conf/<config_name>.yaml` with `overrides`, writing into `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def compose_train_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose the real `conf/train.yaml` with `overrides`, writing into `output_dir`."""
    return compose_config("train", overrides, output_dir)


def tiny_overrides(model: str, method: str, data_root: Path, extra: list[str] | None = None) -> list[str]:
    """Overrides for a one-batch CPU run of `model` x `method` on a tiny tree with random teachers."""
    return [
        f"model={model}",
        f"method={method}",
        "debug=fast_dev_run",
        f"data.root={data_root}",
        "data.num_classes=3",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.holdout=1",
        f"model.input_size={TEST_INPUT_SIZE[model]}",
        f"model.resize_size={TEST_INPUT_SIZE[model]}",
        "model.teacher.weights=null",
        "model.bottleneck_channels=3",
        *(extra or []),
    ]
