"""Shared base of every method: its evaluated models, their evaluation and best weights, export,
optimizer wiring and frozen-module handling."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from hnd_lightning.files import write_json
from hnd_lightning.methods.evaluation import accuracy_metrics, count_parameters, share_trained_buffers
from hnd_lightning.models import SplitModel, with_quantized_bottleneck
from hnd_lightning.models.quantization import model_payload

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

# The checkpoint entry holding every model's best weights so far (`SplitComputingMethod.best`).
BEST_WEIGHTS_KEY = "best_models"
# Written next to the per-model artifact folders of a method with several models (fused HND).
STUDENTS_JSON = "students.json"


class SplitComputingMethod(pl.LightningModule):
    """A method over one or more evaluated models (`models`: name -> model; `model` is the first).

    Subclasses build their models, `freeze` what must not train, and implement `models`,
    `training_loss(images, labels)` (or their own `training_step`) and `export_model`. Everything
    else is the same for every method:

    - metrics: `<stage>/acc1`, `<stage>/acc5`, `<stage>/loss` of the first model (stage: val, test);
      with several models also `<stage>/<name>/...` for each (`metric_keys`);
    - `test_quantized = True`, set before `trainer.test`, also tests every model with a bottleneck
      through the 8-bit link: `test_q8/acc1`, `test_q8/acc5` (and `test_q8/<name>/...`);
    - best weights: each model's trained weights at its best `val/.../acc1` so far (strictly better,
      as `ModelCheckpoint(mode="max")` decides) are kept in `best`, saved in every checkpoint, and put
      back in place when a test starts (`use_best_weights`), so the test and the export that follows
      it see every model at its own best epoch;
    - `model_summary()`: per model its bottleneck, payload, trainable parameters, best epoch and
      val/acc1, and its test results; `export_artifacts` writes every model's deployable files.

    Args:
        architecture: teacher architecture name, e.g. "densenet169".
        num_classes: classifier outputs.
        input_size: square input side the models are built for.
        optimizer: a partial optimizer taking the trainable parameters (Hydra `_partial_: true`);
            `conf/method/*.yaml` sets each method's. Needed only to train.
        scheduler: a partial LR scheduler taking the optimizer, or None.
    """

    method_name: ClassVar[str] = ""

    def __init__(
        self,
        architecture: str,
        num_classes: int,
        input_size: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        bottleneck_channels: int | list[int] | None = None,
        **method_hparams: Any,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.save_hyperparameters(
            {
                "method": self.method_name,
                "architecture": architecture,
                "num_classes": num_classes,
                "input_size": input_size,
                "bottleneck_channels": bottleneck_channels,
                **method_hparams,
            }
        )
        self.test_quantized = False
        self._frozen: list[nn.Module] = []
        # stage ("val", "test", "test_q8") -> model name -> MetricCollection; built in `setup`
        self.evaluation_metrics = nn.ModuleDict()
        # model name -> {"val_acc1", "epoch", "weights"}: the trained weights at its best epoch
        self.best: dict[str, dict[str, Any]] = {}
        # model name -> {"test_acc1", "test_acc5", "test_q8_acc1", "test_q8_acc5"} of the last test
        self.test_results: dict[str, dict[str, float]] = {}

    # ----------------------------------------------------------------- models
    @property
    def models(self) -> Mapping[str, nn.Module]:
        """The evaluated models by name: one student `b<B>` per bottleneck size, or `teacher`."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized images -> (N, num_classes) logits of the first model."""
        return self.model(images)

    def metric_keys(self, stage: str, name: str, metric: str) -> list[str]:
        """Where model `name`'s `metric` is logged: `<stage>/<name>/<metric>` when there are several
        models, and `<stage>/<metric>` for the first one (what checkpoints monitor and sweeps read)."""
        names = list(self.models)
        keys = [f"{stage}/{name}/{metric}"] if len(names) > 1 else []
        return keys + ([f"{stage}/{metric}"] if name == names[0] else [])

    # ----------------------------------------------------------------- frozen modules
    def freeze(self, *modules: nn.Module) -> None:
        """Stop `modules` from training: no gradients, eval mode (batch-norm statistics never move)."""
        for module in modules:
            module.requires_grad_(False)
            module.eval()
            self._frozen.append(module)

    def train(self, mode: bool = True) -> SplitComputingMethod:
        # Lightning switches the whole module to train mode every epoch; frozen parts stay in eval.
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def on_fit_start(self) -> None:
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = count_parameters(self)
        # the terminal's line; TensorBoard shows the count as text and in HPARAMS (`runs.tensorboard`)
        log.info("%s: %s trainable of %s parameters", self.method_name, f"{trainable:,}", f"{total:,}")

    # ----------------------------------------------------------------- training
    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.training_loss(images, labels)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0])
        return loss

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise ValueError(
                f"method={self.method_name} has no optimizer to train with: set `method.optimizer` "
                f"(each conf/method/*.yaml sets one, e.g. the papers' SGD or Adam at lr 1e-3)."
            )
        return self.optimizer_factory(parameters)

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    # ----------------------------------------------------------------- evaluation
    def setup(self, stage: str) -> None:
        if len(self.evaluation_metrics):
            return
        template = accuracy_metrics(self.hparams.num_classes)
        for evaluation in ("val", "test"):
            self.evaluation_metrics[evaluation] = nn.ModuleDict({name: template.clone() for name in self.models})
        with_bottleneck = [name for name, model in self.models.items() if isinstance(model, SplitModel)]
        self.evaluation_metrics["test_q8"] = nn.ModuleDict({name: template.clone() for name in with_bottleneck})

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        if images.shape[0] == 0:  # every image of the batch was unreadable and skipped (data.on_bad_image=skip)
            return
        quantized = self.evaluation_metrics["test_q8"] if stage == "test" and self.test_quantized else {}
        for name, model in self.models.items():
            logits = self.evaluation_logits(name, model, images, stage)
            self.evaluation_metrics[stage][name].update(logits, labels)
            loss = F.cross_entropy(logits, labels)
            for key in self.metric_keys(stage, name, "loss"):
                self.log(key, loss, batch_size=images.shape[0], sync_dist=True)
            if name in quantized:
                quantized[name].update(with_quantized_bottleneck(model)(images), labels)

    def evaluation_logits(self, name: str, model: nn.Module, images: torch.Tensor, stage: str) -> torch.Tensor:
        """The logits model `name` is scored on in `stage` ("val", "test"): `model(images)`; an
        entropy-coded student's test goes through its real bitstream instead."""
        return model(images)

    def _log_epoch(self, stage: str) -> dict[str, dict[str, float]]:
        """Compute, log and reset `stage`'s metrics of every model; return {name: {"acc1", "acc5"}}."""
        values = {}
        for name, collection in self.evaluation_metrics[stage].items():
            computed = collection.compute()
            collection.reset()
            for metric, value in computed.items():
                for key in self.metric_keys(stage, name, metric):
                    # torchmetrics already reduced it over processes: averaging equal values changes nothing
                    self.log(key, value, prog_bar=key == f"{stage}/{metric}", sync_dist=True)
            values[name] = {metric: float(value) for metric, value in computed.items()}
        return values

    def on_validation_epoch_start(self) -> None:
        share_trained_buffers(self)  # under DDP every rank evaluates rank zero's batch-norm statistics

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        for name, model in self.models.items():
            acc1 = values[name]["acc1"]
            if name not in self.best or acc1 > self.best[name]["val_acc1"]:
                self.best[name] = {
                    "val_acc1": acc1,
                    "epoch": self.current_epoch,
                    "weights": self._trained_weights(model),
                }

    def on_test_start(self) -> None:
        self.use_best_weights()
        if self.test_quantized:
            for name in self.models:
                if name not in self.evaluation_metrics["test_q8"]:
                    log.warning(
                        "test_quantized: %s (method=%s) has no bottleneck to quantize; skipped", name, self.method_name
                    )

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        stages = ["test", "test_q8"] if self.test_quantized else ["test"]
        self.test_results = {}
        for stage in stages:
            for name, values in self._log_epoch(stage).items():
                self.test_results.setdefault(name, {}).update(
                    {f"{stage}_{metric}": value for metric, value in values.items()}
                )

    # ----------------------------------------------------------------- best weights
    def _trained_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of `model`'s state without its frozen parts (they never change)."""
        frozen = {id(t) for module in self._frozen for t in itertools.chain(module.parameters(), module.buffers())}
        return {
            key: value.detach().cpu().clone()
            for key, value in model.state_dict(keep_vars=True).items()
            if id(value) not in frozen
        }

    def use_best_weights(self) -> None:
        """Put every model's best weights (on its own val acc1) in place; models never validated keep theirs."""
        for name, model in self.models.items():
            if name in self.best:
                unexpected = model.load_state_dict(self.best[name]["weights"], strict=False).unexpected_keys
                if unexpected:
                    raise RuntimeError(f"Best weights of {name} do not fit the model: unexpected keys {unexpected[:5]}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[BEST_WEIGHTS_KEY] = self.best

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming fills an empty record; testing the best checkpoint after fit merges its (older)
        # record with the one in memory: per model the higher val acc1, the earlier epoch on a tie.
        for name, entry in checkpoint.get(BEST_WEIGHTS_KEY, {}).items():
            kept = self.best.get(name)
            if kept is None or (entry["val_acc1"], -entry["epoch"]) > (kept["val_acc1"], -kept["epoch"]):
                self.best[name] = entry

    # ----------------------------------------------------------------- summary and artifacts
    def model_summary(self) -> dict[str, dict[str, Any]]:
        """Per model: `bottleneck_channels` and `payload` (None for a teacher), `trainable_parameters`,
        `best_epoch` and `best_val_acc1` (None before any validation), and the last test's
        `test_acc1`, `test_acc5` (and `test_q8_acc1`, `test_q8_acc5` when tested quantized)."""
        summary = {}
        for name, model in self.models.items():
            payload = self.payload_record(name, model)
            best = self.best.get(name, {})
            summary[name] = {
                "bottleneck_channels": payload["bottleneck_shape"][0] if payload else None,
                "payload": payload,
                "trainable_parameters": count_parameters(model, trainable_only=True),
                "best_epoch": best.get("epoch"),
                "best_val_acc1": best.get("val_acc1"),
                **self.test_results.get(name, {}),
            }
        return summary

    def payload_record(self, name: str, model: nn.Module) -> dict[str, Any] | None:
        """What model `name` sends per image (`quantization.model_payload`; None for a teacher)."""
        return model_payload(model, self.hparams.input_size)

    def export_model(self, model: nn.Module, directory: Path, data_info: dict[str, Any]) -> list[Path]:
        """Write one model's deployable files into `directory`; return them."""
        raise NotImplementedError

    def export_artifacts(self, directory: str | Path, data_info: dict[str, Any]) -> list[Path]:
        """Write every model's deployable files (`export_model`) with its current weights; return them.

        One model writes into `directory`; several write into `directory/<name>/` each (a single
        run's layout) plus `directory/students.json`, the `model_summary`. `data_info`: the
        normalization, resize size and class names of the data and the teacher's identity
        (`teacher`), which `split.json` records.
        """
        directory = Path(directory)
        several = len(self.models) > 1
        written = []
        for name, model in self.models.items():
            written += self.export_model(model, directory / name if several else directory, data_info)
        if several:
            written.append(write_json(directory / STUDENTS_JSON, self.model_summary()))
        return written
