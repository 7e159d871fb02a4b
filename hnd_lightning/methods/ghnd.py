"""`method=ghnd` (Generalized HND, Matsubara & Levorato, ICPR 2020): HND's student and recipe, with the loss
taken at the split tensor *and* at the outputs of later stages of the frozen tail.

    loss = MSE_sum(decoder output, teacher at the split) + sum over `Architecture.ghnd_stages` s of
           MSE_sum(student tail's output at s, teacher's output at s)

(every weight 1, no label term, as the authors' torchdistill configs). Only the head trains; the
student's tail is frozen (no gradients, eval mode) but in the autograd graph, so every later term's
gradient reaches the head through it. The teacher runs once per batch, in eval mode and without
gradients, and yields all its stage outputs in that one pass (`TeacherPart.collect`).

Frozen means eval mode here, by the project's rule: torchdistill's GHND only sets `requires_grad=False`
and leaves the frozen tail in train mode, so its batch norms normalize with batch statistics and their
running statistics drift during GHND training; here they stay the teacher's.

`method=fused_ghnd` trains one GHND student per bottleneck size in one run (`FusedGHNDMethod`, the
fused HND machinery of `methods/fused_hnd.py` with this loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.fused_hnd import FusedHNDMethod
from hnd_lightning.methods.student import StudentMethod
from hnd_lightning.models import SplitModel, TeacherPart, get_architecture, split_teacher


def teacher_stage_outputs(
    teacher_head: TeacherPart, teacher_tail: TeacherPart, images: torch.Tensor, stages: Sequence[str]
) -> dict[str, torch.Tensor]:
    """One teacher pass: {split module: split tensor, each of `stages`: its output}, without gradients."""
    with torch.no_grad():
        split = teacher_head(images)
        return {teacher_head.stage_names[-1]: split, **teacher_tail.collect(split, stages)}


def stage_losses(
    split: torch.Tensor, tail: TeacherPart, targets: dict[str, torch.Tensor], split_module: str
) -> dict[str, torch.Tensor]:
    """MSE (sum) of the student's split tensor and of its tail's later stage outputs against `targets`.

    `split` is the student head's output (N, C, h, w); `targets` holds the teacher's output at
    `split_module` and at each later stage. Returns one scalar per stage, in forward order.
    """
    later = [name for name in targets if name != split_module]
    outputs = {split_module: split, **tail.collect(split, later)}
    return {name: F.mse_loss(outputs[name], targets[name], reduction="sum") for name in [split_module, *later]}


class GHNDMethod(StudentMethod):
    """HND's student head trained on GHND's loss; the teacher and the student's tail stay frozen."""

    method_name = "ghnd"

    def __init__(self, teacher: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(teacher, *args, **kwargs)
        self.teacher_head, self.teacher_tail = split_teacher(teacher, self.hparams.architecture)
        self.freeze(self.teacher_head, self.teacher_tail, self.model.tail)
        self.distilled_stages = get_architecture(self.hparams.architecture).ghnd_stages

    def loss_terms(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """GHND's terms for a batch of (N, 3, H, W) images: stage name -> MSE (sum)."""
        targets = teacher_stage_outputs(self.teacher_head, self.teacher_tail, images, self.distilled_stages)
        return stage_losses(self.model.head(images), self.model.tail, targets, self.teacher_head.stage_names[-1])

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        terms = self.loss_terms(images)
        for name, term in terms.items():
            self.log(f"train/loss_{name}", term.detach(), on_step=False, on_epoch=True, batch_size=images.shape[0])
        return torch.stack(list(terms.values())).sum()


class FusedGHNDMethod(FusedHNDMethod):
    """`method=fused_ghnd 'model.bottleneck_channels=[3,6,9,12]'`: one GHND student per size, one data
    stream and one teacher pass per batch, each student with its own optimizer (as `FusedHNDMethod`).
    The students share one frozen tail: it never trains, and each student's loss runs through it."""

    method_name = "ghnd"

    def __init__(self, teacher: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(teacher, *args, **kwargs)
        _, self.teacher_tail = split_teacher(teacher, self.hparams.architecture)
        self.freeze(self.teacher_tail)
        self.distilled_stages = get_architecture(self.hparams.architecture).ghnd_stages

    def teacher_targets(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return teacher_stage_outputs(self.teacher_head, self.teacher_tail, images, self.distilled_stages)

    def student_loss(self, student: SplitModel, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = stage_losses(student.head(images), student.tail, targets, self.teacher_head.stage_names[-1])
        return torch.stack(list(terms.values())).sum()
