"""A published checkpoint in, this project's artifacts out: head.safetensors, tail.safetensors, split.json.

`import_checkpoint` reads the file without running its code (`safe_load`), recognises its layout and
matches it to an architecture, B and class count (`detect`), takes the tail from the file or, for a
head-only file, from the teacher it was distilled from, and writes what a finished run exports (with
the same writer), with `source` (layout, file, sha256, the file's own epoch and score) and `teacher`
in split.json, so `load_split_artifacts` and every command built on it take the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hnd_lightning.files import sha256_of
from hnd_lightning.models.architectures import get_architecture
from hnd_lightning.models.artifacts import (
    SPLIT_JSON,
    SplitArtifacts,
    save_split_artifacts,
    split_metadata,
)
from hnd_lightning.models.conversion.detect import Fit, choose_layout, fit_checkpoint, unwrap
from hnd_lightning.models.conversion.safe_load import ConversionError, load_checkpoint
from hnd_lightning.models.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_IMAGENET_CLASSES,
    imagenet_class_names,
    imagenet_wnids,
)
from hnd_lightning.models.split import SplitModel
from hnd_lightning.models.split_schema import read_split_json
from hnd_lightning.models.teacher import build_teacher, load_teacher_checkpoint, split_teacher
from hnd_lightning.models.teacher_weights import teacher_identity

log = logging.getLogger(__name__)

METHODS = ("naive", "kd", "hnd")
UNKNOWN_METHOD = "unknown"
# what the file itself says about its training, recorded in split.json's `source`
SCORE_KEYS = ("best_valid_value", "best_value", "acc")


def _teacher_tail(architecture: str, weights: str | None, checkpoint: str | None) -> tuple[nn.Module, dict]:
    """The tail of the teacher a head-only file was distilled from (torchvision names), and its identity."""
    if weights is None and checkpoint is None:
        raise ConversionError(
            "A head-only file takes its tail from its teacher, and none is set: pass model.teacher.weights=imagenet "
            "(torchvision's IMAGENET1K_V1, the papers' teachers) or model.teacher.checkpoint=PATH."
        )
    num_classes = NUM_IMAGENET_CLASSES
    if checkpoint is not None:
        classifier = f"{get_architecture(architecture).stages[-1]}.weight"
        num_classes = int(load_teacher_checkpoint(checkpoint).get(classifier, torch.empty(num_classes)).shape[0])
    teacher = build_teacher(architecture, num_classes, weights=weights, checkpoint=checkpoint)
    _, tail = split_teacher(teacher, architecture)
    return tail, teacher_identity(architecture, weights, checkpoint)


def _load(fit: Fit, state: dict[str, torch.Tensor], prefix: str, module: nn.Module) -> nn.Module:
    """Allocate `module` (built on the meta device) and load the file's tensors through `fit.mapping`,
    as float32; a missing BN counter is 0 (`detect` checked every other tensor)."""
    tensors = {}
    for key, reference in module.state_dict().items():
        value = state.get(fit.mapping[f"{prefix}.{key}"])
        value = torch.zeros((), dtype=reference.dtype) if value is None else value
        tensors[key] = value.float() if value.is_floating_point() else value
    module.to_empty(device="cpu")
    module.load_state_dict(tensors, strict=True)
    return module


def _method(fit: Fit, stated: str | None) -> str:
    """The method split.json records: the one stated (checked by the caller), else the layout's, else unknown."""
    if stated is not None:
        if fit.layout.method not in (None, stated):
            log.warning(
                "The %s layout says method %s; recording method=%s as stated",
                fit.layout.name,
                fit.layout.method,
                stated,
            )
        return stated
    if fit.layout.method is None:
        log.warning(
            "The %s file does not say how it was trained; recording method=unknown (state it with method=hnd|kd|naive)",
            fit.layout.name,
        )
    return fit.layout.method or UNKNOWN_METHOD


def _source_record(path: Path, fit: Fit, container: dict[str, Any]) -> dict[str, Any]:
    epoch = container.get("epoch")
    score = next((container[key] for key in SCORE_KEYS if isinstance(container.get(key), (int, float))), None)
    return {
        "layout": fit.layout.name,
        "file": path.name,
        "sha256": sha256_of(path),
        "epoch": epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        "best_value": float(score) if score is not None and not isinstance(score, bool) else None,
    }


def import_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    architecture: str | None = None,
    bottleneck_channels: int | None = None,
    num_classes: int | None = None,
    source: str | None = None,
    method: str | None = None,
    teacher_weights: str | None = "imagenet",
    teacher_checkpoint: str | None = None,
    input_size: int | None = None,
    resize_size: int | None = None,
    overwrite: bool = False,
) -> SplitArtifacts:
    """Convert a published checkpoint into artifacts in `output_dir`; return them (with the split.json written).

    Args:
        checkpoint: the original code's head-only, naive or KD file, a torchdistill 0.3.3 `custom_*`
            checkpoint or bare state dict, or an sc2bench `splittable_*` state dict (bottleneck idx 7 or 8).
        architecture, bottleneck_channels, num_classes: checked against the file when given (else taken
            from it; a head-only file's classes from its teacher).
        source: "original", "torchdistill" or "sc2bench" to insist on a family; None detects it.
        method: "naive", "kd" or "hnd" to record; None takes the layout's (HND for head-only files).
        teacher_weights, teacher_checkpoint: a head-only file's teacher (`model.teacher.*`).
        input_size, resize_size: the input the artifacts describe; None for the architecture's (224/256,
            299/327 for Inception-v3).
        overwrite: replace artifacts already in `output_dir`.

    Raises:
        ConversionError: the file is refused (see `safe_load`, `detect`), or `output_dir` holds artifacts.
    """
    path, output_dir = Path(checkpoint), Path(output_dir)
    if method is not None and method not in METHODS:
        raise ConversionError(f"method={method} cannot be recorded for a converted model; allowed: {list(METHODS)}.")
    if (output_dir / SPLIT_JSON).exists() and not overwrite:
        raise ConversionError(f"{output_dir} already holds {SPLIT_JSON}; pass another output_dir or overwrite=true.")
    state, container = unwrap(load_checkpoint(path), path)
    layout = choose_layout(state, container, path, source)
    fit = fit_checkpoint(state, container, path, layout, architecture, bottleneck_channels)
    spec = get_architecture(fit.architecture)
    head = _load(fit, state, "head", fit.head)
    if layout.whole:
        tail, teacher, found_classes = _load(fit, state, "tail", fit.tail), None, fit.num_classes
    else:
        tail, teacher = _teacher_tail(fit.architecture, teacher_weights, teacher_checkpoint)
        found_classes = int(tail.state_dict()[f"{spec.stages[-1]}.weight"].shape[0])
    if num_classes is not None and num_classes != found_classes:
        raise ConversionError(
            f"{path}: model.num_classes={num_classes}, but its {'classifier' if layout.whole else 'teacher'} has "
            f"{found_classes} outputs; drop model.num_classes or pass {found_classes}."
        )
    num_classes = found_classes
    student = SplitModel(head.encoder, head.decoder, tail).eval()
    input_size = input_size or spec.input_size
    imagenet = num_classes == NUM_IMAGENET_CLASSES
    metadata = split_metadata(
        student,
        architecture=fit.architecture,
        bottleneck_channels=fit.bottleneck_channels,
        num_classes=num_classes,
        input_size=input_size,
        method=_method(fit, method),
        normalization={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        resize_size=resize_size or (spec.resize_size if input_size == spec.input_size else input_size),
        classes=imagenet_wnids() if imagenet else None,
        teacher=teacher,
        source=_source_record(path, fit, container),
        class_names=imagenet_class_names() if imagenet else None,
    )
    save_split_artifacts(output_dir, student, metadata)
    log.info(
        "Converted %s (%s, %s, B=%d) into %s", path, layout.name, fit.architecture, fit.bottleneck_channels, output_dir
    )
    return SplitArtifacts(student.head, tail, read_split_json(output_dir / SPLIT_JSON))
