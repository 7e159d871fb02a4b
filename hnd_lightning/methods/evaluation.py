"""How the evaluated models of a method are named, counted and scored."""

from __future__ import annotations

from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def student_name(bottleneck_channels: int) -> str:
    """Name of a student in metrics, checkpoints and artifact folders: 3 -> "b3"."""
    return f"b{bottleneck_channels}"


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 and top-5 accuracy ("acc1", "acc5") over (N, num_classes) logits and (N,) labels."""
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }
    )
