"""How the evaluated models of a method are named, counted and scored, and kept the same on every rank."""

from __future__ import annotations

import torch
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


@torch.no_grad()
def share_trained_buffers(module: nn.Module) -> None:
    """Copy rank zero's buffers of the modules that train (a student's batch-norm statistics) to every
    process, so every rank evaluates the model rank zero checkpoints and exports; a no-op on one process.

    Under DDP with `broadcast_buffers: false` (conf/trainer/ddp.yaml) each rank's statistics follow its own
    batches. Frozen modules' buffers never change and are left out. One broadcast per buffer dtype.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for child in module.modules():
        if any(p.requires_grad for p in child.parameters(recurse=False)):
            for buffer in child.buffers(recurse=False):
                by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = torch.cat([buffer.reshape(-1) for buffer in buffers])
        dist.broadcast(flat, src=0)
        for buffer, values in zip(buffers, flat.split([buffer.numel() for buffer in buffers])):
            buffer.copy_(values.view_as(buffer))
