"""The data pipeline's rate: images/s of JPEG decoding + training augmentation per DataLoader worker count."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from hnd_lightning.benchmark.report import summarize
from hnd_lightning.benchmark.steps import timed


def bench_data_pipeline(cfg: DictConfig) -> list[dict[str, Any]]:
    """Images/s of decoding + training augmentation of a JPEG ImageFolder (`data_root/train`), per
    worker count in `data_workers`: the rate a run's loading can feed, to set against the train steps."""
    from torchvision import datasets

    from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD, train_transform

    folder = Path(cfg.data_root).expanduser() / "train"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data_root={cfg.data_root!r} has no train/ folder; pass an ImageFolder root or data_root=null."
        )
    transform = train_transform(cfg.model.input_size, cfg.model.resize_size, IMAGENET_MEAN, IMAGENET_STD)
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    records = []
    for workers in cfg.data_workers:
        loader = DataLoader(dataset, batch_size=cfg.batch, shuffle=True, num_workers=workers, drop_last=True)
        ends = []
        for _ in zip(range(cfg.warmup + cfg.data_batches), loader):
            ends.append(time.perf_counter())
        if len(ends) <= cfg.warmup:
            raise ValueError(
                f"{str(folder)!r} holds {len(dataset)} images: too few for warmup={cfg.warmup} plus one timed "
                f"batch of {cfg.batch}; lower data_batches or batch."
            )
        seconds = timed(ends, cfg.warmup)
        record = summarize("pipeline", "data", f"{workers}_workers", cfg.batch, [seconds], None)
        # Workers deliver batches in bursts, so the rate is images over the whole timed span, not a median.
        record["images_per_s"] = cfg.batch * len(seconds) / sum(seconds)
        records.append(record)
    return records
