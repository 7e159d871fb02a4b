"""Which layout, architecture, B and class count a loaded checkpoint holds, checked tensor by tensor.

The layout is recognised from the keys (never from the file name: the original's `_mimic-` stem is a
raw pickle in `hnd/` and a state dict in `naive/` and `kd/`). The architecture comes from the file
where it says so (`type`, `config`) or from the tensors, B from the bottleneck conv's shape, the class
count from the classifier's; a value given on the command line is checked against the file. Every
tensor's name and shape must then be exactly what this project's model of that architecture, B and
class count has, or the error names the model, B and the first tensor that disagrees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hnd_lightning.models.architectures import ARCHITECTURES, get_architecture
from hnd_lightning.models.artifacts import build_head, build_parts
from hnd_lightning.models.conversion.layouts import (
    DENSEBLOCK3_LAYERS,
    FAMILIES,
    LAYOUTS,
    ORIGINAL,
    Layout,
    count_children,
    head_key,
    key_map,
    tail_keys_map,
)
from hnd_lightning.models.conversion.safe_load import ConversionError

BOTTLENECK_CONV = "encoder.6.weight"
GUESS_CHANNELS, GUESS_CLASSES = 12, 1000


@dataclass
class Fit:
    """A checkpoint matched to this project's model: its parts (on the meta device; `tail` None for a
    head-only file) and, per project key ("head.…", "tail.…"), the file's key."""

    layout: Layout
    architecture: str
    bottleneck_channels: int
    num_classes: int
    mapping: dict[str, str]
    head: nn.Module
    tail: nn.Module | None


def _parts(
    whole: bool, architecture: str, bottleneck_channels: int, num_classes: int
) -> tuple[nn.Module, nn.Module | None]:
    """This project's head (and tail, for a `whole` model), built on the meta device: shapes only."""
    spec = get_architecture(architecture)
    with torch.device("meta"):
        if whole:
            return build_parts(spec, bottleneck_channels, num_classes)
        return build_head(spec, bottleneck_channels), None


@cache
def _project_names(architecture: str) -> tuple[list[str], list[str]]:
    """The keys of this project's head and tail (built once per architecture: for refusals only)."""
    head, tail = _parts(True, architecture, GUESS_CHANNELS, GUESS_CLASSES)
    return list(head.state_dict()), list(tail.state_dict())


def _shapes(head: nn.Module, tail: nn.Module | None) -> dict[str, list[int]]:
    """Project key ("head.…", "tail.…") -> shape."""
    parts = (("head", head), ("tail", tail)) if tail is not None else (("head", head),)
    return {f"{name}.{key}": list(value.shape) for name, part in parts for key, value in part.state_dict().items()}


def unwrap(content: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, the checkpoint dict around it) of a loaded file: `content["model"]` or a bare state dict.

    A `module.` prefix on every key (a DataParallel model saved as is) is dropped.
    """
    container = content if isinstance(content, dict) else {}
    state = container.get("model") if isinstance(container.get("model"), dict) else container
    if not state or not all(isinstance(key, str) for key in state):
        raise ConversionError(
            f"{path}: holds no state dict (tensors by name, bare or under 'model'), but {type(content).__name__} "
            f"with keys {list(container)[:8]}. Pass a checkpoint of one of the published models."
        )
    bad = next((key for key, value in state.items() if not isinstance(value, torch.Tensor)), None)
    if bad is not None:
        raise ConversionError(
            f"{path}: entry {bad!r} of its state dict is a {type(state[bad]).__name__}, not a tensor."
        )
    around = container if state is not container else {}
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state), around


def detect_layout(state: Mapping[str, torch.Tensor], container: Mapping[str, Any]) -> Layout | None:
    """The layout whose marker keys the state dict has (see `layouts`), or None."""
    if "head_modules.0.weight" in state or "student_model.head_modules.0.weight" in state:
        return LAYOUTS["original_head"]  # use_aux=True; `fit` refuses it by its keys
    if "extractor.0.weight" in state:
        return LAYOUTS["original_head"]
    if "student_model.extractor.0.weight" in state:
        # model_distiller.py saves `config` and `args`; model_runner.py `type`, `acc`, `epoch`
        kd = "args" in container or "config" in container
        return LAYOUTS["original_kd" if kd else "original_naive"]
    if "features.bottleneck.encoder.0.weight" in state or "bottleneck.encoder.0.weight" in state:
        return LAYOUTS["torchdistill"]
    if "bottleneck_layer.encoder.0.weight" in state:
        return LAYOUTS["sc2bench_idx8" if "bottleneck_layer.encoder.7.weight" in state else "sc2bench_idx7"]
    return None


def architecture_hint(container: Mapping[str, Any]) -> tuple[str, str] | None:
    """(architecture, where the file says it) from the checkpoint dict's `type` or `config`, if it does."""
    for where in ("type", "config.mimic_model.type", "config.models.student_model.name"):
        value: Any = container
        for key in where.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            name = value.removeprefix("custom_").removesuffix("_mimic").removesuffix("_head")
            if name in ARCHITECTURES:
                return name, where
    return None


def _disagreement(state: Mapping[str, torch.Tensor], expected: Mapping[str, list[int]]) -> str | None:
    """What first differs between the file's tensors and the expected source keys and shapes, else None."""
    # a missing num_batches_tracked is filled in (it only counts BN updates); every other tensor must be there
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        found = [f"{len(missing)} missing (first {missing[0]!r})"] if missing else []
        found += [f"{len(unexpected)} unexpected (first {unexpected[0]!r})"] if unexpected else []
        return "tensors " + " and ".join(found)
    for key, shape in expected.items():
        if key in state and list(state[key].shape) != shape:
            return f"tensor {key!r} has shape {list(state[key].shape)} in the file, not {shape}"
    return None


def _plausible(layout: Layout, architecture: str, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether the file has a tensor under the architecture's first tail stage (saves building the others)."""
    if not layout.whole or layout.family == ORIGINAL:
        return True  # the original's whole models number every tail `features.<N>`
    stage = get_architecture(architecture).tail_stages[0]
    prefix = tail_keys_map(layout, architecture, [f"{stage}.x"])[f"{stage}.x"][:-1]
    if architecture in DENSEBLOCK3_LAYERS:
        layers = count_children(state, re.escape(prefix) + r"denselayer(\d+)\.")
        return layers == DENSEBLOCK3_LAYERS[architecture]
    return any(key.startswith(prefix) for key in state)


def _try(
    layout: Layout, architecture: str, state: Mapping[str, torch.Tensor], channels: int | None
) -> tuple[Fit, str | None]:
    """Fit the file to `architecture` (B: `channels`, else the file's; classes: the file's); what differs, or None."""
    conv = state.get(head_key(layout, architecture, BOTTLENECK_CONV))
    in_file = conv.shape[0] if conv is not None and conv.dim() == 4 else None
    classifier = f"{get_architecture(architecture).stages[-1]}.weight"
    weight = state.get(tail_keys_map(layout, architecture, [classifier])[classifier]) if layout.whole else None
    num_classes = weight.shape[0] if weight is not None and weight.dim() == 2 else GUESS_CLASSES
    bottleneck_channels = channels or in_file or GUESS_CHANNELS
    head, tail = _parts(layout.whole, architecture, bottleneck_channels, num_classes)
    shapes = _shapes(head, tail)
    mapping = key_map(layout, architecture, list(head.state_dict()), list(tail.state_dict()) if tail else [])
    expected = {source: shapes[project] for project, source in mapping.items()}
    fit = Fit(layout, architecture, bottleneck_channels, num_classes, mapping, head, tail)
    return fit, _disagreement(state, expected)


def _described(fit: Fit) -> str:
    classes = f", {fit.num_classes} classes" if fit.layout.whole else ""
    return f"{fit.architecture} with B={fit.bottleneck_channels}{classes}"


def fit_checkpoint(
    state: Mapping[str, torch.Tensor],
    container: Mapping[str, Any],
    path: Path,
    layout: Layout,
    architecture: str | None = None,
    bottleneck_channels: int | None = None,
) -> Fit:
    """Match the file to one architecture, B and class count; `architecture` / `bottleneck_channels`
    (the command line's, or None) are checked against it.

    Raises:
        ConversionError: the original's `use_aux` head, a file that contradicts the command line or
            itself, fits no architecture (naming each one's first disagreeing tensor) or fits both DenseNets.
    """
    if any(key.startswith(("head_modules.", "aux_seq.", "student_model.head_modules.")) for key in state):
        raise ConversionError(
            f"{path}: a head trained with the original's use_aux=True (keys head_modules.*, aux_seq.*), which none "
            "of the published configurations uses and this project's student does not have; it cannot be converted."
        )
    hint = architecture_hint(container)
    if architecture is not None and hint is not None and hint[0] != architecture:
        raise ConversionError(
            f"{path}: model={architecture} on the command line, but the file says {hint[0]} (its {hint[1]}). "
            f"Drop model=... or pass model={hint[0]}."
        )
    candidates = [architecture or (hint[0] if hint else None)]
    candidates = candidates if candidates[0] else sorted(ARCHITECTURES)
    candidates = [name for name in candidates if _plausible(layout, name, state)] or candidates
    tried = [_try(layout, name, state, bottleneck_channels) for name in candidates]
    fits = [fit for fit, problem in tried if problem is None]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        names = " or ".join(f"model={fit.architecture}" for fit in fits)
        raise ConversionError(
            f"{path}: fits {', '.join(fit.architecture for fit in fits)} alike (their heads are identical and the "
            f"file names none); say which with {names}."
        )
    reasons = "; ".join(f"{_described(fit)}: {problem}" for fit, problem in tried)
    raise ConversionError(
        f"{path}: in the {layout.name} layout, its tensors do not fit {reasons}. Check model=... and "
        f"model.bottleneck_channels=..., or pass the file of another configuration."
    )


def closest_layout(state: Mapping[str, torch.Tensor], family: str | None = None) -> str:
    """For a file that fits no layout: the nearest (layout, architecture) by key names, and its first
    missing and first unexpected key, in words."""
    best = None
    for layout in LAYOUTS.values():
        if family is not None and layout.family != family:
            continue
        for architecture in sorted(ARCHITECTURES):
            heads, tails = _project_names(architecture)
            expected = list(key_map(layout, architecture, heads, tails if layout.whole else []).values())
            known = set(expected)
            missing = [key for key in expected if key not in state]
            unexpected = [key for key in state if key not in known]
            if best is None or len(missing) + len(unexpected) < best[0]:
                best = (len(missing) + len(unexpected), layout.name, architecture, missing, unexpected)
    _, name, architecture, missing, unexpected = best
    first_missing = repr(missing[0]) if missing else "none"
    first_unexpected = repr(unexpected[0]) if unexpected else "none"
    return f"closest: {name} for {architecture}, first missing key {first_missing}, first unexpected key {first_unexpected}"


def choose_layout(
    state: Mapping[str, torch.Tensor], container: Mapping[str, Any], path: Path, source: str | None = None
) -> Layout:
    """The file's layout; `source` (original, torchdistill, sc2bench, or None) insists on a family."""
    if source is not None and source not in FAMILIES:
        raise ConversionError(f"source={source!r} is not one of {list(FAMILIES)} (or null to detect it).")
    layout = detect_layout(state, container)
    if layout is not None and source is not None and layout.family != source:
        raise ConversionError(
            f"{path}: source={source}, but its keys are the {layout.name} layout ({layout.family}); drop source=... "
            f"or pass source={layout.family}."
        )
    if layout is None:
        raise ConversionError(
            f"{path}: its keys fit no layout of {source or ', '.join(FAMILIES)} "
            f"({closest_layout(state, source)}). Is it a checkpoint of another model?"
        )
    return layout
