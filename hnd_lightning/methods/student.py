"""The base of the methods that train bottleneck-injected students, and how a student is exported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory, SplitComputingMethod
from hnd_lightning.methods.evaluation import student_name
from hnd_lightning.models import SplitModel, build_student
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata
from hnd_lightning.models.quantization import model_payload


def export_student(
    method: SplitComputingMethod, student: SplitModel, directory: Path, data_info: dict[str, Any]
) -> list[Path]:
    """A student's head.safetensors, tail.safetensors and split.json (`models.artifacts`) in `directory`."""
    payload = model_payload(student, method.hparams.input_size)
    metadata = split_metadata(
        student,
        architecture=method.hparams.architecture,
        bottleneck_channels=payload["bottleneck_shape"][0],
        num_classes=method.hparams.num_classes,
        input_size=method.hparams.input_size,
        method=method.method_name,
        **data_info,
    )
    return save_split_artifacts(directory, student, metadata)


class StudentMethod(SplitComputingMethod):
    """Base of the methods that train one bottleneck-injected student (naive, KD, HND).

    Builds the student `model` from `teacher` (its tail starts as a copy of the teacher's tail); the
    teacher itself is kept only by the methods that use it. Exports head, tail and split.json.
    """

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        **method_hparams: Any,
    ) -> None:
        if isinstance(bottleneck_channels, Sequence) and not isinstance(bottleneck_channels, str):
            raise ValueError(
                f"model.bottleneck_channels={list(bottleneck_channels)} lists several sizes: train them in one run "
                f"with `method=fused_hnd` (HND students only), or one run per size with "
                f"`-m model.bottleneck_channels={','.join(str(size) for size in bottleneck_channels)}`."
            )
        super().__init__(
            architecture, num_classes, input_size, optimizer, scheduler, bottleneck_channels, **method_hparams
        )
        self.model, _ = build_student(teacher, architecture, bottleneck_channels, input_size)

    @property
    def models(self) -> dict[str, nn.Module]:
        return {student_name(self.hparams.bottleneck_channels): self.model}

    def export_model(self, model: nn.Module, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        return export_student(self, model, directory, data_info)
