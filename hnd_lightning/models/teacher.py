"""Teachers: torchvision classifiers with their weights, cut at the split point by module name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from hnd_lightning.models.architectures import Architecture, get_architecture
from hnd_lightning.models.teacher_weights import (
    BUNDLED,
    TeacherWeightsUnavailable,
    is_torchvision_weights,
    load_torchvision_state_dict,
    torchvision_weight_names,
)

__all__ = ["TeacherPart", "TeacherWeightsUnavailable", "build_teacher", "load_teacher_checkpoint", "split_teacher"]

log = logging.getLogger(__name__)


def _get_submodule_or_none(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


class TeacherPart(nn.Module):
    """A contiguous run of a teacher's stages, registered under their torchvision names.

    Because every stage keeps its dotted name (`features.denseblock3`, `layer3`, `fc`), the part's
    `state_dict` keys equal the teacher's, so teacher weights load into it strictly.
    `forward` runs exactly the listed stages: a head part never computes anything past its last stage.
    """

    def __init__(
        self,
        teacher: nn.Module,
        stage_names: Iterable[str],
        pre_ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.stage_names = tuple(stage_names)
        self.pre_ops = dict(pre_ops or {})
        for path in self.stage_names:
            *parents, leaf = path.split(".")
            container: nn.Module = self
            for parent in parents:
                if not hasattr(container, parent):
                    container.add_module(parent, nn.Module())
                container = getattr(container, parent)
            container.add_module(leaf, teacher.get_submodule(path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for path in self.stage_names:
            x = self._stage(path, x)
        return x

    def _stage(self, path: str, x: torch.Tensor) -> torch.Tensor:
        if path in self.pre_ops:
            x = self.pre_ops[path](x)
        return self.get_submodule(path)(x)

    def collect(self, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Run the stages in order up to the last of `names` and return each named stage's output.

        One pass computes them all (GHND's and the Entropic Student's later distillation terms);
        nothing past the last named stage runs.
        """
        wanted = set(names)
        unknown = sorted(wanted - set(self.stage_names))
        if unknown:
            raise ValueError(f"{unknown} are not stages of this part; it runs {list(self.stage_names)}")
        outputs = {}
        for path in self.stage_names:
            if len(outputs) == len(wanted):
                break
            x = self._stage(path, x)
            if path in wanted:
                outputs[path] = x
        return outputs


def load_teacher_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read teacher weights written by this project.

    Accepts `teacher.safetensors` (exported by `method=original`) or a Lightning `.ckpt` of a
    `method=original` run. Returns a state dict with torchvision key names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Teacher checkpoint {str(path)!r} does not exist. Pass the `teacher.safetensors` or a "
            f"`.ckpt` file of a `method=original` run as `model.teacher.checkpoint=PATH`."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint)
    prefix = "model."
    teacher_state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not teacher_state or checkpoint.get("hyper_parameters", {}).get("method") not in (None, "original"):
        raise ValueError(
            f"{str(path)!r} is not a checkpoint of a `method=original` run (no teacher weights under "
            f"'{prefix}'). Use the `teacher.safetensors` or `.ckpt` written by `method=original`."
        )
    return teacher_state


def _classifier_name(architecture: Architecture) -> str:
    return architecture.stages[-1]


def build_teacher(
    architecture: str,
    num_classes: int,
    weights: str | None = None,
    checkpoint: str | Path | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Build a torchvision teacher classifier.

    Args:
        architecture: one of `ARCHITECTURES` (e.g. "densenet169").
        num_classes: classifier outputs. With ImageNet weights and a number other than 1000, the
            classifier is replaced by a freshly initialized one (fine-tune it with `method=original`).
        weights: "imagenet" for torchvision's IMAGENET1K_V1 weights (the papers' teachers), another of
            torchvision's names for them ("IMAGENET1K_V2", "DEFAULT", ...; `models.teacher_weights`),
            "bundled" for the teacher shipped with the package (DenseNet-169, bundled data, 32 x 32;
            see `models.bundled_teacher`), or None for random weights.
        checkpoint: teacher weights written by this project (`method=original`); wins over `weights`.
        input_size: the run's input side; checked against the bundled teacher's (ignored otherwise).

    Returns:
        The teacher in eval mode, mapping (N, 3, H, W) images to (N, num_classes) logits.
    """
    spec = get_architecture(architecture)
    use_torchvision = is_torchvision_weights(architecture, weights)
    if not use_torchvision and weights not in (BUNDLED, None):
        raise ValueError(
            f"Unknown teacher weights {weights!r}. Allowed: 'imagenet' (torchvision's IMAGENET1K_V1, the papers' "
            f"teacher), torchvision's names {torchvision_weight_names(architecture)}, 'bundled' or null; for a "
            f"teacher trained by this project use `model.teacher.checkpoint=PATH`."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    use_imagenet = checkpoint is None and use_torchvision
    teacher = spec.builder(weights=None, num_classes=1000 if use_imagenet else num_classes, **spec.builder_kwargs)
    if hasattr(teacher, "AuxLogits"):
        # The auxiliary classifier is part of the ImageNet weights but of no student; drop it.
        teacher.AuxLogits = None
        teacher.aux_logits = False
    if checkpoint is not None:
        state_dict = load_teacher_checkpoint(checkpoint)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
        try:
            teacher.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"Teacher checkpoint {str(checkpoint)!r} does not fit {architecture} with "
                f"{num_classes} classes: {error}"
            ) from error
        log.info("Loaded teacher weights from %s", checkpoint)
    elif weights == BUNDLED:
        from hnd_lightning.models.bundled_teacher import load_bundled_state_dict

        teacher.load_state_dict(load_bundled_state_dict(architecture, num_classes, input_size), strict=True)
        log.info("Loaded the bundled teacher (%s, %d classes)", architecture, num_classes)
    elif use_imagenet:
        teacher.load_state_dict(load_torchvision_state_dict(architecture, weights), strict=True)
        log.info("Loaded torchvision's %s weights for %s", weights, architecture)
        if num_classes != 1000:
            old = teacher.get_submodule(_classifier_name(spec))
            setattr(teacher, _classifier_name(spec), nn.Linear(old.in_features, num_classes))
            log.warning(
                "ImageNet teacher for %d classes: the classifier is newly initialized; fine-tune the "
                "teacher with `method=original` before distilling.",
                num_classes,
            )
    return teacher.eval()


def split_teacher(
    teacher: nn.Module, architecture: str, split_module: str | None = None
) -> tuple[TeacherPart, TeacherPart]:
    """Cut `teacher` at its architecture's split module (or at `split_module`, another of its stages,
    e.g. the Entropic Student's `layer1`).

    Returns:
        (head, tail) sharing the teacher's modules. head: (N, 3, H, W) -> split tensor, e.g.
        (N, 256, 14, 14) for DenseNet at 224; tail: split tensor -> (N, num_classes) logits.
    """
    spec = get_architecture(architecture)
    split_module = split_module or spec.split_module
    if split_module not in spec.stages:
        raise ValueError(f"{split_module!r} is not a stage of {architecture}; its stages are {list(spec.stages)}")
    missing = [name for name in spec.stages if _get_submodule_or_none(teacher, name) is None]
    if missing:
        raise ValueError(f"Teacher has no modules {missing}; is it a torchvision {architecture}?")
    head_stages, tail_stages = spec.stages_through(split_module), spec.stages_after(split_module)
    head_ops = {k: v for k, v in spec.pre_ops.items() if k in head_stages}
    if spec.input_transform is not None and getattr(teacher, "transform_input", False):
        head_ops[spec.stages[0]] = spec.input_transform
    tail_ops = {k: v for k, v in spec.pre_ops.items() if k in tail_stages}
    return TeacherPart(teacher, head_stages, head_ops), TeacherPart(teacher, tail_stages, tail_ops)
