"""Fused multi-bottleneck HND: `method=hnd model.bottleneck_channels=[3,6,9,12]` trains one student per size.

Every bottleneck size of a sweep distills the same frozen teacher head on the same data, so one run
loads and augments each batch once and runs the teacher head once, then steps every student head
with its own optimizer and LR scheduler. Each student is otherwise trained exactly as if alone:

- its weights start as in a single run with the same seed (the RNG is rewound to the same state
  before each student is built), so the first student sees the very batches its single run sees;
- its metrics are logged as `val/b<B>/acc1`, `test/b<B>/acc1`, ...; `val/acc1` (what the run's
  checkpoint callback monitors) and `test/acc1` are those of the first student listed;
- its best head (on its own `val/b<B>/acc1`) is kept in the checkpoint and exported to
  `artifacts/b<B>/`, which `load_split_artifacts` loads exactly like a single run's `artifacts/`.

The frozen tail is shared by all students: it never trains, so one copy serves every size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from hnd_lightning.methods.base import OptimizerFactory, SchedulerFactory, SplitComputingMethod
from hnd_lightning.models import SplitModel, build_student, validate_bottleneck_channels
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata

STUDENTS_JSON = "students.json"


def student_name(bottleneck_channels: int) -> str:
    """Key of a student in metrics, checkpoints and artifact folders: 3 -> "b3"."""
    return f"b{bottleneck_channels}"


def fused_method_config(method_cfg: DictConfig) -> DictConfig:
    """The `method` config of a single HND run, retargeted at `FusedHNDMethod` (same optimizer and schedule)."""
    if method_cfg.get("_target_") not in ("hnd_lightning.methods.HNDMethod", "hnd_lightning.methods.hnd.HNDMethod"):
        raise ValueError(
            f"A list of bottleneck sizes trains several HND students in one run, but method is "
            f"{method_cfg.get('_target_')!r}. Use `method=hnd`, or one integer `model.bottleneck_channels=B` "
            f"per run for the other methods."
        )
    fused = OmegaConf.to_container(method_cfg)
    fused["_target_"] = "hnd_lightning.methods.FusedHNDMethod"
    return OmegaConf.create(fused)


class FusedHNDMethod(SplitComputingMethod):
    """Several HND student heads, one per bottleneck size, trained on one data stream and teacher head.

    Args:
        teacher: the frozen teacher (from `build_teacher`).
        bottleneck_channels: the sizes, e.g. [3, 6, 9, 12]; the first one is the run's main student.
        optimizer, scheduler: partial factories, called once per student (own state, own schedule).
    """

    method_name = "hnd"

    def __init__(
        self,
        teacher: nn.Module,
        architecture: str,
        num_classes: int,
        input_size: int,
        bottleneck_channels: list[int],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        sizes = [validate_bottleneck_channels(size) for size in bottleneck_channels]
        if not sizes or len(set(sizes)) != len(sizes):
            raise ValueError(
                f"model.bottleneck_channels must list distinct sizes, e.g. [3,6,9,12]; got {list(bottleneck_channels)}."
            )
        super().__init__(architecture, num_classes, input_size, optimizer, scheduler, sizes)
        self.automatic_optimization = False  # one optimizer per student, stepped in training_step
        # Each student starts from the RNG state a single run has when it builds its student; afterwards
        # the RNG continues as in the first student's single run (same shuffling and augmentation).
        rng_before = torch.get_rng_state()
        self.students = nn.ModuleDict()
        rng_after_first = None
        for size in sizes:
            torch.set_rng_state(rng_before)
            student, teacher_head = build_student(teacher, architecture, size, input_size)
            rng_after_first = rng_after_first if rng_after_first is not None else torch.get_rng_state()
            if self.students:
                student.tail = next(iter(self.students.values())).tail  # frozen and identical: share one copy
            self.students[student_name(size)] = student
        torch.set_rng_state(rng_after_first)
        self.teacher_head = teacher_head
        self.freeze(self.teacher_head, self.main_student.tail)
        metrics = self.val_metrics
        self.student_val_metrics = nn.ModuleDict({n: metrics.clone(prefix=f"val/{n}/") for n in self.students})
        self.student_test_metrics = nn.ModuleDict({n: metrics.clone(prefix=f"test/{n}/") for n in self.students})
        # Per student: best val/b<B>/acc1 so far, its epoch and a copy of its head at that epoch.
        self.best: dict[str, dict[str, Any]] = {}

    @property
    def main_student(self) -> SplitModel:
        return next(iter(self.students.values()))

    @property
    def model(self) -> SplitModel:
        """The evaluated model of the run (`val/acc1`, `test/acc1`, `forward`): the first student."""
        return self.main_student

    # ----------------------------------------------------------------- training
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, _ = batch
        with torch.no_grad():
            target = self.teacher_head(images)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for (name, student), optimizer in zip(self.students.items(), optimizers):
            # One student at a time: its graph is freed before the next one is built.
            loss = F.mse_loss(student.head(images), target, reduction="sum")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.log(f"train/{name}/loss", loss.detach(), on_step=True, on_epoch=True, batch_size=images.shape[0])
            if name == next(iter(self.students)):
                self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0])

    def on_train_epoch_end(self) -> None:
        # Manual optimization leaves the epoch-interval schedulers to the module.
        schedulers = self.lr_schedulers() or []
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def configure_optimizers(self) -> Any:
        optimizers, schedulers = [], []
        for student in self.students.values():
            optimizer = self.optimizer_factory([p for p in student.head.parameters() if p.requires_grad])
            optimizers.append(optimizer)
            if self.scheduler_factory is not None:
                schedulers.append({"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"})
        return (optimizers, schedulers) if schedulers else optimizers

    # ----------------------------------------------------------------- evaluation
    def _evaluate_students(self, batch, metrics: nn.ModuleDict, prefix: str) -> None:
        images, labels = batch
        for name, student in self.students.items():
            logits = student(images)
            metrics[name].update(logits, labels)
            loss = F.cross_entropy(logits, labels)
            self.log(f"{prefix}/{name}/loss", loss, batch_size=images.shape[0], sync_dist=True)
            if name == next(iter(self.students)):
                self.log(f"{prefix}/loss", loss, batch_size=images.shape[0], sync_dist=True)

    def _log_epoch(self, metrics: nn.ModuleDict, prefix: str) -> dict[str, dict[str, float]]:
        """Log every student's metrics and the main (first) student's as `<prefix>/acc1`, ...; reset them."""
        values = {}
        for name, collection in metrics.items():
            computed = collection.compute()
            collection.reset()
            self.log_dict(computed, prog_bar=False)
            values[name] = {key.rsplit("/", 1)[-1]: float(value) for key, value in computed.items()}
            if name == next(iter(self.students)):
                self.log_dict({f"{prefix}/{key.rsplit('/', 1)[-1]}": value for key, value in computed.items()}, prog_bar=True)
        return values

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate_students(batch, self.student_val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate_students(batch, self.student_test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch(self.student_val_metrics, "val")
        if self.trainer.sanity_checking:
            return
        for name, student in self.students.items():
            acc1 = values[name]["acc1"]
            # Strictly better, as ModelCheckpoint(mode="max") decides for a single run.
            if name not in self.best or acc1 > self.best[name]["val_acc1"]:
                head = {key: value.detach().cpu().clone() for key, value in student.head.state_dict().items()}
                self.best[name] = {"val_acc1": acc1, "epoch": self.current_epoch, "head": head}

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.student_test_metrics, "test")

    # ----------------------------------------------------------------- checkpoints and artifacts
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["fused_hnd_best"] = self.best

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best = checkpoint.get("fused_hnd_best", {})

    def load_best_weights(self, checkpoint_path: str | Path) -> None:
        """The run's best checkpoint, then every student's own best head (the checkpoint holds them)."""
        super().load_best_weights(checkpoint_path)
        self.load_best_heads()

    def load_best_heads(self) -> None:
        """Put every student's best head (on its own val/b<B>/acc1) back in place; final weights where none."""
        for name, student in self.students.items():
            if name in self.best:
                student.head.load_state_dict(self.best[name]["head"])

    def student_summary(self) -> dict[str, dict[str, Any]]:
        """Per student: bottleneck size, best epoch and best val/acc1 (None before any validation)."""
        sizes = self.hparams.bottleneck_channels
        return {
            name: {
                "bottleneck_channels": size,
                "best_epoch": self.best.get(name, {}).get("epoch"),
                "best_val_acc1": self.best.get(name, {}).get("val_acc1"),
            }
            for name, size in zip(self.students, sizes)
        }

    def export_artifacts(self, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        """Load each student's best head, then write `directory/b<B>/` per student (a single run's layout)
        and `directory/students.json` (size, best epoch and best val/acc1 per student)."""
        self.load_best_heads()
        directory = Path(directory)
        written = []
        for (name, student), size in zip(self.students.items(), self.hparams.bottleneck_channels):
            metadata = split_metadata(
                student,
                architecture=self.hparams.architecture,
                bottleneck_channels=size,
                num_classes=self.hparams.num_classes,
                input_size=self.hparams.input_size,
                method=self.method_name,
                **data_info,
            )
            written += save_split_artifacts(directory / name, student, metadata)
        (directory / STUDENTS_JSON).write_text(json.dumps(self.student_summary(), indent=2))
        return [*written, directory / STUDENTS_JSON]
