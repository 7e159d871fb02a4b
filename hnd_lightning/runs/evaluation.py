"""Accuracy of a composed student, also with its bottleneck sent as 8 bits (`test_q8/...`)."""

from __future__ import annotations

import itertools
import logging
import math

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from hnd_lightning.models.quantization import with_quantized_bottleneck
from hnd_lightning.models.split import SplitModel

log = logging.getLogger(__name__)


@torch.no_grad()
def accuracy(
    model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device | str, max_batches: float = math.inf
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of `model` over `loader`'s first `max_batches` (images, labels) batches:
    {"acc1", "acc5"}."""
    metrics = MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }
    ).to(device)
    was_training = model.training
    model.eval()
    try:
        for images, labels in itertools.islice(loader, None if math.isinf(max_batches) else int(max_batches)):
            metrics.update(model(images.to(device)), labels.to(device))
    finally:
        model.train(was_training)
    return {name: float(value) for name, value in metrics.compute().items()}


def quantized_test_metrics(method: pl.LightningModule, datamodule: pl.LightningDataModule) -> dict[str, float]:
    """`test_q8/acc1` and `test_q8/acc5` of a trained method's composed student with the 8-bit link.

    Used by `train.py` when `test_quantized=true`. A method with several students (`method.students`,
    fused HND) also gets `test_q8/<student>/acc1` and `/acc5` for each, next to its `test/<student>/...`;
    `method.model` is then its first student. A `method=original` teacher has no bottleneck, so it gets
    no quantized metrics (a warning says so).
    """
    if not isinstance(method.model, SplitModel):
        log.warning("test_quantized: method=%s has no bottleneck to quantize; skipped", method.method_name)
        return {}
    students = dict(getattr(method, "students", None) or {})
    # the batches `trainer.test` just ran (all of them unless `limit_test_batches` or `fast_dev_run`)
    trainer = method._trainer
    max_batches = trainer.num_test_batches[0] if trainer is not None and trainer.num_test_batches else math.inf
    metrics = {}
    for name, student in (students or {"": method.model}).items():
        result = accuracy(
            with_quantized_bottleneck(student), datamodule.test_dataloader(), method.hparams.num_classes,
            method.device, max_batches,
        )
        metrics.update({f"test_q8/{name}/{key}" if name else f"test_q8/{key}": value for key, value in result.items()})
        if student is method.model:
            metrics.update({f"test_q8/{key}": value for key, value in result.items()})
    return metrics
