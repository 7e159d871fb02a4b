"""A trained split model loaded from its artifacts, as a LightningModule that `trainer.test` evaluates."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hnd_lightning.methods.base import SplitComputingMethod
from hnd_lightning.methods.entropic_student import coded_evaluation, coded_payload
from hnd_lightning.methods.evaluation import student_name
from hnd_lightning.models.artifacts import SplitArtifacts


class LoadedSplitModel(SplitComputingMethod):
    """The composed student of `load_split_artifacts`, evaluated like a trained method's (`test/acc1`,
    and `test_q8/acc1` with `test_quantized = True`; an entropy-coded split through its real bitstream,
    with its bytes in `payload_record`); nothing trains, so it takes no optimizer."""

    method_name = "artifacts"

    def __init__(self, artifacts: SplitArtifacts) -> None:
        metadata = artifacts.metadata
        super().__init__(
            metadata["architecture"],
            metadata["num_classes"],
            metadata["input"]["shape"][-1],
            bottleneck_channels=metadata["bottleneck_channels"],
            trained_with=metadata["method"],
        )
        self.model = artifacts.model()
        self.freeze(self.model)
        self.entropy_coded = artifacts.entropy_coded
        # an entropy-coded split's test codes every image (`coded_evaluation`): its strings' bytes
        self.coded_bytes: list[int] = []
        self.estimated_bytes: list[float] = []

    @property
    def models(self) -> dict[str, nn.Module]:
        return {student_name(self.hparams.bottleneck_channels): self.model}

    def evaluation_logits(self, name: str, model: nn.Module, images: torch.Tensor, stage: str) -> torch.Tensor:
        if not self.entropy_coded:
            return model(images)
        return coded_evaluation(self, model, images, stage)

    def payload_record(self, name: str, model: nn.Module) -> dict[str, Any] | None:
        if not self.entropy_coded:
            return super().payload_record(name, model)
        return coded_payload(model, self.hparams.input_size, self.coded_bytes, self.estimated_bytes)
