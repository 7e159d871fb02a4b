"""The split under analysis: the HND student and its teacher, both cut at the architecture's split module.

Loaded from a trained run's artifacts (`cfg.artifacts`) or from the model config with random weights
(counts and timings do not depend on weight values, so nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from hnd_lightning.models import build_student, build_teacher, split_teacher
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import split_parts

PART_LABELS = {
    "student_device": "HND split, device: encoder + 8-bit quantization",
    "student_server": "HND split, server: dequantization + decoder + tail",
    "teacher_device": "teacher split, device: teacher head",
    "teacher_server": "teacher split, server: teacher tail",
    "teacher_full": "whole teacher",
}
# Timed parts per side. The whole teacher is timed on both sides: it is the all-on-device and the
# all-on-server strategy.
ROLE_PARTS = {
    "device": ("student_device", "teacher_device", "teacher_full"),
    "server": ("student_server", "teacher_server", "teacher_full"),
}


class SplitUnderAnalysis:
    """The HND student and the teacher, both cut at the architecture's split module.

    `parts` maps each part name of `PART_LABELS` to its module; `inputs(name, batch_size)` makes what
    that module takes (random images, or what the part before it sends).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        architecture: str,
        input_size: int,
        resize_size: int,
        description: dict,
    ) -> None:
        self.description = description
        self.input_size = input_size
        self.resize_size = resize_size
        self.student_device, self.student_server = split_parts(student.eval(), quantized=True)
        self.teacher = teacher.eval()
        self.teacher_head, self.teacher_tail = split_teacher(self.teacher, architecture)

    def images(self, batch_size: int) -> torch.Tensor:
        """Random normalized images, (batch_size, 3, input_size, input_size) float32."""
        return torch.randn(batch_size, 3, self.input_size, self.input_size)

    @property
    def parts(self) -> dict[str, nn.Module]:
        return {
            "student_device": self.student_device,
            "student_server": self.student_server,
            "teacher_device": self.teacher_head,
            "teacher_server": self.teacher_tail,
            "teacher_full": self.teacher,
        }

    @torch.no_grad()
    def inputs(self, part: str, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Inputs of `part` for `batch_size` random images, on the CPU."""
        images = self.images(batch_size)
        if part == "student_server":
            return self.student_device(images)  # (bottleneck uint8, scale, zero_point)
        if part == "teacher_server":
            return (self.teacher_head(images),)
        return (images,)

    @torch.no_grad()
    def link_shapes(self) -> dict[str, tuple[int, ...]]:
        """One image's tensor sent by each split: {"student": (B, h, w), "teacher": (C, H, W)}."""
        images = self.images(1)
        return {
            "student": tuple(self.student_device.encoder(images).shape[1:]),
            "teacher": tuple(self.teacher_head(images).shape[1:]),
        }


def load_split_under_analysis(cfg: DictConfig) -> SplitUnderAnalysis:
    """From `cfg.artifacts` (a trained run) when set, else from `cfg.model` with random weights."""
    if cfg.get("artifacts"):
        artifacts = load_split_artifacts(cfg.artifacts)
        meta = artifacts.metadata
        architecture, input_size = meta["architecture"], meta["input"]["shape"][-1]
        resize_size = meta["input"].get("resize_size") or input_size
        teacher = build_teacher(architecture, meta["num_classes"], weights=None)
        description: dict[str, Any] = {
            "source": f"artifacts {Path(cfg.artifacts).resolve()} (trained student; teacher of the same shape, random weights)",
            "method": meta["method"],
            "num_classes": meta["num_classes"],
        }
        student, bottleneck_channels = artifacts.model(), meta["bottleneck_channels"]
    else:
        architecture, input_size = cfg.model.architecture, cfg.model.input_size
        resize_size = cfg.model.get("resize_size") or input_size
        bottleneck_channels = cfg.model.bottleneck_channels
        teacher = build_teacher(architecture, cfg.model.num_classes, weights=None)
        student, _ = build_student(teacher, architecture, bottleneck_channels, input_size)
        description = {
            "source": "model config, random weights (counts and timings do not depend on weight values)",
            "method": None,
            "num_classes": cfg.model.num_classes,
        }
    description = {
        "architecture": architecture,
        "bottleneck_channels": bottleneck_channels,
        "input_size": input_size,
        **description,
    }
    return SplitUnderAnalysis(student, teacher, architecture, input_size, resize_size, description)
