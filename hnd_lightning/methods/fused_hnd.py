"""Fused multi-bottleneck HND: `method=fused_hnd model.bottleneck_channels=[3,6,9,12]` trains one student per size.

Every bottleneck size of a sweep distills the same frozen teacher head on the same data, so one run
loads and augments each batch once and runs the teacher head once, then steps every student head
with its own optimizer and LR scheduler (under DDP after one backward of the students' summed losses). Each student is otherwise trained exactly as if alone:

- its weights start as in a single run with the same seed (the RNG is rewound to the same state
  before each student is built), so the first student sees the very batches its single run sees;
- evaluation, best weights and export are the base's, per student (`SplitComputingMethod`):
  metrics `val/b<B>/acc1`, `test/b<B>/acc1`, ... (`val/acc1`, which the checkpoint callback
  monitors, and `test/acc1` are the first student's); each student's best head on its own
  `val/b<B>/acc1`, kept in every checkpoint; artifacts in `artifacts/b<B>/`, which
  `load_split_artifacts` loads exactly like a single run's `artifacts/`.

The frozen tail is shared by all students: it never trains, so one copy serves every size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory, SplitComputingMethod
from hnd_lightning.methods.evaluation import student_name
from hnd_lightning.methods.student import export_student
from hnd_lightning.models import SplitModel, build_student, split_teacher, validate_bottleneck_channels


class FusedHNDMethod(SplitComputingMethod):
    """Several HND student heads, one per bottleneck size, trained on one data stream and teacher head.

    Args:
        teacher: the frozen teacher (from `build_teacher`).
        bottleneck_channels: the sizes, e.g. [3, 6, 9, 12] (one integer: a single student); the first
            one is the run's main student.
        optimizer: a partial optimizer factory, called once per student (each gets its own state).
        scheduler: a partial LR scheduler factory, called once per student (each its own schedule).
    """

    method_name = "hnd"

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: int | Sequence[int],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        listed = list(bottleneck_channels) if isinstance(bottleneck_channels, Sequence) else [bottleneck_channels]
        sizes = [validate_bottleneck_channels(size) for size in listed]
        if not sizes or len(set(sizes)) != len(sizes):
            raise ValueError(f"model.bottleneck_channels must list distinct sizes, e.g. [3,6,9,12]; got {listed}.")
        super().__init__(architecture, num_classes, input_size, optimizer, scheduler, sizes)
        self.automatic_optimization = False  # one optimizer per student, stepped in training_step
        # Each student starts from the RNG state a single run has when it builds its student; afterwards
        # the RNG continues as in the first student's single run (same shuffling and augmentation).
        rng_before = torch.get_rng_state()
        self.students = nn.ModuleDict()
        rng_after_first = None
        for size in sizes:
            torch.set_rng_state(rng_before)
            student, _ = build_student(teacher, architecture, size, input_size)
            rng_after_first = rng_after_first if rng_after_first is not None else torch.get_rng_state()
            if self.students:
                student.tail = self.model.tail  # frozen and identical: share one copy
            self.students[student_name(size)] = student
        torch.set_rng_state(rng_after_first)
        self.teacher_head, _ = split_teacher(teacher, architecture)
        self.freeze(self.teacher_head, self.model.tail)

    @property
    def models(self) -> nn.ModuleDict:
        return self.students

    @property
    def model(self) -> SplitModel:
        """The run's main student (`val/acc1`, `test/acc1`, `forward`): the first size listed."""
        return next(iter(self.students.values()))

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.precision == "16-mixed":
            # Lightning's MixedPrecision.optimizer_step calls GradScaler.update() after every optimizer's
            # step, so from the second optimizer on the gradients are unscaled with a changed scale.
            raise ValueError(
                "method=fused_hnd cannot train with trainer.precision=16-mixed: Lightning updates the fp16 loss "
                "scale after each of the students' optimizers, so the later students' gradients are unscaled "
                "wrongly. Use trainer.precision=bf16-mixed (GPUs with bfloat16: A100, H100, L4, RTX 30xx and "
                "newer) or 32-true, or train one size per run with method=hnd (16-mixed works there)."
            )

    def teacher_targets(self, images: torch.Tensor) -> Any:
        """What every student distills, computed once per batch: the teacher head's split tensor."""
        return self.teacher_head(images)

    def student_loss(self, student: SplitModel, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """One student's loss against `teacher_targets`: HND's MSE (sum) at the split."""
        return F.mse_loss(student.head(images), targets, reduction="sum")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, _ = batch
        with torch.no_grad():
            target = self.teacher_targets(images)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        # DDP all-reduces every trained parameter's gradient within one backward, so there the students'
        # summed loss has a single backward; they share no trained parameter, so each still gets exactly
        # the gradient of its own loss. On one device each student's graph is freed before the next is built.
        together = self.trainer.world_size > 1
        losses = {}
        for name, student in self.students.items():
            losses[name] = self.student_loss(student, images, target)
            if not together:
                self.manual_backward(losses[name])
        if together:
            self.manual_backward(torch.stack(list(losses.values())).sum())
        for (name, loss), optimizer in zip(losses.items(), optimizers):
            optimizer.step()
            for key in self.metric_keys("train", name, "loss"):
                self.log(
                    key,
                    loss.detach(),
                    prog_bar=key == "train/loss",
                    on_step=True,
                    on_epoch=True,
                    batch_size=images.shape[0],
                )

    def on_train_epoch_end(self) -> None:
        # Manual optimization leaves the epoch-interval schedulers to the module.
        schedulers = self.lr_schedulers() or []
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def configure_optimizers(self) -> Any:
        optimizers, schedulers = [], []
        for student in self.students.values():
            optimizer = self.build_optimizer([p for p in student.head.parameters() if p.requires_grad])
            optimizers.append(optimizer)
            if self.scheduler_factory is not None:
                schedulers.append({"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"})
        return (optimizers, schedulers) if schedulers else optimizers

    def export_model(self, model: nn.Module, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        return export_student(self, model, directory, data_info)
