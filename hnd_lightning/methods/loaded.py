"""A trained split model loaded from its artifacts, as a LightningModule that `trainer.test` evaluates."""

from __future__ import annotations

from torch import nn

from hnd_lightning.methods.base import SplitComputingMethod
from hnd_lightning.methods.evaluation import student_name
from hnd_lightning.models.artifacts import SplitArtifacts


class LoadedSplitModel(SplitComputingMethod):
    """The composed student of `load_split_artifacts`, evaluated like a trained method's (`test/acc1`,
    and `test_q8/acc1` with `test_quantized = True`); nothing trains, so it takes no optimizer."""

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

    @property
    def models(self) -> dict[str, nn.Module]:
        return {student_name(self.hparams.bottleneck_channels): self.model}
