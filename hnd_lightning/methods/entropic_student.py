"""`method=entropic_student` (Matsubara, Yang, Levorato, Mandt, WACV 2022; the SC2 benchmark): a student
head with a learned entropy model, trained in two stages and measured on its real bitstream.

- stage 1 (`stage=1`): encoder, entropy model (its quantiles included) and decoder train with one
  optimizer on distortion + `beta` x bits + the entropy model's auxiliary loss. Distortion: MSE (sum)
  between the decoder's output and the teacher's tensor at the head's split module, plus the same at
  each of the layout's `distillation_stages`, through the student's frozen tail (as GHND). Bits:
  -sum(log2 likelihood) of the noisy latent over the batch (bits per batch, as sc2bench's BppLoss).
- stage 2 (`stage=2`, `init_from` = stage 1's artifacts): `update()` builds the coder's tables; encoder
  and entropy model are frozen (eval mode); decoder and tail train on knowledge distillation from the
  whole teacher, fed the latent rounded as the coder does, round(y - median) + median, detached.

`runs.phases` runs both stages from one command (`method.phases`), each its own run. Validation scores
the eval-mode forward (the same rounding); the test codes every image with `compress()`, decodes it
with `decompress()` and classifies the decoded latent, recording the bytes of every string.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory, SplitComputingMethod
from hnd_lightning.methods.evaluation import student_name
from hnd_lightning.methods.ghnd import stage_losses, teacher_stage_outputs
from hnd_lightning.methods.kd import distillation_loss
from hnd_lightning.models import split_teacher
from hnd_lightning.models.architectures import entropic_layout
from hnd_lightning.models.artifacts import load_split_artifacts, save_split_artifacts, split_metadata
from hnd_lightning.models.entropic import (
    DEFAULT_LATENT_CHANNELS,
    EntropicSplitModel,
    build_entropic_student,
    estimated_bits,
)
from hnd_lightning.models.entropic_schema import describe_entropy_bottleneck
from hnd_lightning.models.split import output_shape
from hnd_lightning.models.split_schema import ENTROPY_FIELD

log = logging.getLogger(__name__)

STAGES = (1, 2)


class EntropicStudentMethod(SplitComputingMethod):
    """One stage of the Entropic Student (see the module docstring); `model` is the `EntropicSplitModel`.

    Args:
        teacher: the frozen teacher (from `build_teacher`).
        bottleneck_channels: HND's B from `model.bottleneck_channels`; not used (the latent has
            `latent_channels`).
        stage: 1 or 2.
        beta: weight of the bits per batch in stage 1's loss (ImageNet values do not transfer to
            other input sizes: pick them from measured rates).
        latent_channels: channels of the coded latent (the papers: 24).
        temperature, alpha: stage 2's knowledge distillation (the papers: 1 and 0.5).
        init_from: stage 2: the artifacts folder of stage 1's run, whose head (encoder, entropy model,
            decoder) and tail it starts from.
    """

    method_name = "entropic_student"

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        stage: int = 1,
        beta: float = 0.1,
        latent_channels: int = DEFAULT_LATENT_CHANNELS,
        temperature: float = 1.0,
        alpha: float = 0.5,
        init_from: str | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"method.stage must be 1 or 2, got {stage!r}; one command runs both (runs.phases).")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"method.beta must be a finite number >= 0 (the weight of the bits), got {beta!r}.")
        if stage == 2 and not init_from:
            raise ValueError("Stage 2 starts from stage 1: set method.init_from=<stage 1 run>/artifacts.")
        hparams = {"stage": stage, "beta": beta, "temperature": temperature, "alpha": alpha, "init_from": init_from}
        super().__init__(architecture, num_classes, input_size, optimizer, scheduler, latent_channels, **hparams)
        self.layout = entropic_layout(architecture)
        self.model, teacher_head = build_entropic_student(teacher, architecture, latent_channels, input_size)
        # per test image: bytes of its string, and -sum(log2 p) / 8 of its rounded latent
        self.coded_bytes: list[int] = []
        self.estimated_bytes: list[float] = []
        if stage == 1:
            _, self.teacher_tail = split_teacher(teacher, architecture, self.layout.split_module)
            self.teacher_head = teacher_head
            self.freeze(self.teacher_head, self.teacher_tail, self.model.tail)
        else:
            self.load_stage_one(Path(init_from))
            self.model.head.update()  # between the stages, as the papers do; nothing in it trains afterwards
            self.teacher = teacher
            self.freeze(self.teacher, self.model.encoder, self.model.entropy_bottleneck)

    def load_stage_one(self, artifacts_dir: Path) -> None:
        """Take head (entropy model and its tables included) and tail from stage 1's artifacts."""
        artifacts = load_split_artifacts(artifacts_dir)
        if not artifacts.entropy_coded or artifacts.metadata["architecture"] != self.hparams.architecture:
            raise ValueError(
                f"method.init_from={str(artifacts_dir)!r} is not a stage-1 Entropic Student of "
                f"{self.hparams.architecture} (split.json: {artifacts.metadata['method']}, "
                f"{artifacts.metadata['architecture']}); pass the artifacts/ of this run's stage 1."
            )
        self.model.head.load_state_dict(artifacts.head.state_dict())
        self.model.tail.load_state_dict(artifacts.tail.state_dict())

    @property
    def models(self) -> dict[str, nn.Module]:
        return {student_name(self.hparams.bottleneck_channels): self.model}

    # ----------------------------------------------------------------- training
    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.stage_one_loss(images) if self.hparams.stage == 1 else self.stage_two_loss(images, labels)

    def stage_one_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Distortion over the split and `distillation_stages` + beta x bits per batch + auxiliary loss."""
        targets = teacher_stage_outputs(self.teacher_head, self.teacher_tail, images, self.layout.distillation_stages)
        decoded, likelihoods = self.model.head.forward_with_likelihoods(images)
        distortion = torch.stack(
            list(stage_losses(decoded, self.model.tail, targets, self.layout.split_module).values())
        ).sum()
        bits = estimated_bits(likelihoods)
        aux = self.model.entropy_bottleneck.loss()  # reaches only the quantiles, which the same optimizer steps
        batch = images.shape[0]
        for key, value in (("distortion", distortion), ("bits_per_image", bits.mean()), ("aux_loss", aux)):
            self.log(f"train/{key}", value.detach(), on_step=False, on_epoch=True, batch_size=batch)
        return distortion + self.hparams.beta * bits.sum() + aux

    def stage_two_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Knowledge distillation of decoder and tail, fed the coder's rounding of the frozen encoder's latent."""
        with torch.no_grad():
            teacher_logits = self.teacher(images)
            latent = self.model.head.round_latent(self.model.encoder(images))
        logits = self.model.tail(self.model.decoder(latent))
        return distillation_loss(logits, teacher_logits, labels, self.hparams.temperature, self.hparams.alpha)

    # ----------------------------------------------------------------- evaluation through the bitstream
    def evaluation_logits(self, name: str, model: nn.Module, images: torch.Tensor, stage: str) -> torch.Tensor:
        return coded_evaluation(self, model, images, stage)

    def on_test_start(self) -> None:
        super().on_test_start()  # every model at its best weights first, then the tables from them
        self.model.head.update()
        self.coded_bytes, self.estimated_bytes = [], []

    def payload_record(self, name: str, model: nn.Module) -> dict[str, Any]:
        return coded_payload(model, self.hparams.input_size, self.coded_bytes, self.estimated_bytes)

    def model_summary(self) -> dict[str, dict[str, Any]]:
        """The base's summary, with the stage and beta it was trained with."""
        summary = super().model_summary()
        for entry in summary.values():
            entry.update(stage=self.hparams.stage, beta=self.hparams.beta)
        return summary

    # ----------------------------------------------------------------- artifacts
    def export_model(self, model: nn.Module, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        """head.safetensors (encoder, entropy model with its tables, decoder), tail.safetensors, split.json."""
        return export_entropic_student(self, model, directory, data_info)


def coded_evaluation(method: Any, model: EntropicSplitModel, images: torch.Tensor, stage: str) -> torch.Tensor:
    """The logits `method` scores `model` on: in a test through the real bitstream (compress, decompress),
    appending each string's bytes and estimate to `method.coded_bytes` / `estimated_bytes`; else the
    eval-mode forward (the same rounding). Logs `<stage>/estimated_bytes` (and `test/coded_bytes`)."""
    latent = model.encoder(images)
    rounded, likelihoods = model.entropy_bottleneck(latent, training=False)
    estimated = estimated_bits(likelihoods) / 8
    method.log(f"{stage}/estimated_bytes", estimated.mean(), batch_size=images.shape[0], sync_dist=True)
    if stage != "test":
        return model.tail(model.decoder(rounded))
    strings = model.head.compress(latent)
    decoded = model.head.decompress(strings, latent.shape[-2:]).to(latent.device)
    method.coded_bytes += [len(string) for string in strings]
    method.estimated_bytes += estimated.tolist()
    method.log("test/coded_bytes", float(np.mean([len(s) for s in strings])), batch_size=images.shape[0])
    return model.tail(model.decoder(decoded))


def coded_payload(
    model: EntropicSplitModel, input_size: int, coded: list[int], estimated: list[float]
) -> dict[str, Any]:
    """The payload record of an entropy-coded model: the latent's shape and the bytes of the strings of
    the last test (mean, 95th percentile) with the likelihood estimate beside them (None before a test)."""
    latent_shape = list(output_shape(model.encoder, (1, 3, input_size, input_size))[1:])
    mean = float(np.mean(coded)) if coded else None
    return {
        "bottleneck_shape": latent_shape,
        "coding": "entropy_coded",
        "symbols": math.prod(latent_shape),
        "coded_bytes_mean": mean,
        "coded_bytes_p95": float(np.percentile(coded, 95)) if coded else None,
        "estimated_bytes_mean": float(np.mean(estimated)) if coded else None,
        "images_coded": len(coded),
        "input_bytes_uint8": 3 * input_size * input_size,
        "percent_of_input": None if mean is None else 100 * mean / (3 * input_size * input_size),
    }


def export_entropic_student(
    method: SplitComputingMethod, student: EntropicSplitModel, directory: Path, data_info: dict[str, Any]
) -> list[Path]:
    """An Entropic Student's artifacts, its tables built from the weights exported (`entropic_schema`)."""
    student.head.update()
    metadata = split_metadata(
        student,
        architecture=method.hparams.architecture,
        bottleneck_channels=method.hparams.bottleneck_channels,
        num_classes=method.hparams.num_classes,
        input_size=method.hparams.input_size,
        method=method.method_name,
        **data_info,
    )
    metadata["split_tensor"]["module"] = entropic_layout(method.hparams.architecture).split_module
    metadata[ENTROPY_FIELD] = describe_entropy_bottleneck(
        student.entropy_bottleneck, metadata["bottleneck_tensor"]["shape"]
    )
    return save_split_artifacts(directory, student, metadata)
