"""What `load_split_artifacts` checks before it builds anything: split.json's schema, its files, their tensors.

An artifact folder may come from elsewhere (a download, a shared disk, a hand edit) or be damaged (a
full disk, a copy cut short). Nothing in it is trusted: every field of `split.json` is type-checked and
bounded, the weight files must lie inside the folder, their recorded digests must match, and the
shapes in their safetensors headers must be the ones `split.json` describes, all before a tensor is
allocated. Every error is an `ArtifactError` naming the file and the field (or tensor) at fault.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from hnd_lightning.files import sha256_of
from hnd_lightning.models.architectures import ARCHITECTURES
from hnd_lightning.models.split_provenance import is_digest, provenance_problem

FORMAT_VERSION = 1
# Bounds a real split stays far inside (the papers: B = 3..12, 1000 classes, 224 / 299 pixels); they
# stop a crafted file from asking for gigabytes before any weight is read.
MAX_SPLIT_JSON_BYTES = 16 * 2**20
MAX_BOTTLENECK_CHANNELS = 1024
MAX_NUM_CLASSES = 100_000
MAX_INPUT_SIZE = 2048
MAX_RESIZE_SIZE = 2 * MAX_INPUT_SIZE
FILE_ROLES = ("head", "tail")
FIX = "Re-export the artifacts from their training run (split.json is written by training, not by hand)."
# The optional field of an entropy-coded split (`method=entropic_student`), checked by `entropic_schema`.
ENTROPY_FIELD = "entropy_bottleneck"


class ArtifactError(ValueError):
    """A damaged or crafted artifact folder; the message names the file and the field or tensor at fault."""


def _fail(path: Path, field: str, problem: str) -> NoReturn:
    raise ArtifactError(f"{path}: field {field!r} {problem}. {FIX}")


def _get(metadata: Mapping[str, Any], field: str, path: Path) -> Any:
    """The value at dotted `field` (e.g. "input.shape"), failing when a level is missing or not an object."""
    value: Any = metadata
    for depth, key in enumerate(field.split(".")):
        if not isinstance(value, dict):
            _fail(path, ".".join(field.split(".")[:depth]), f"must be a JSON object, got {_describe(value)}")
        if key not in value:
            _fail(path, field, "is missing")
        value = value[key]
    return value


def _describe(value: Any) -> str:
    kind = {str: "the string", bool: "the boolean", type(None): "null", list: "a list", dict: "an object"}
    return f"{kind.get(type(value), type(value).__name__)} {json.dumps(value)[:60]}"


def _integer(metadata: Mapping[str, Any], field: str, path: Path, low: int, high: int) -> int:
    value = _get(metadata, field, path)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, field, f"must be an integer, got {_describe(value)}")
    if not low <= value <= high:
        _fail(path, field, f"must be between {low} and {high}, got {value}")
    return value


def _string(metadata: Mapping[str, Any], field: str, path: Path, allowed: tuple[str, ...] | None = None) -> str:
    value = _get(metadata, field, path)
    if not isinstance(value, str) or not value or len(value) > 200:
        _fail(path, field, f"must be a non-empty string, got {_describe(value)}")
    if allowed is not None and value not in allowed:
        _fail(path, field, f"must be one of {list(allowed)}, got {value!r}")
    return value


def _shape(metadata: Mapping[str, Any], field: str, path: Path) -> list[int]:
    value = _get(metadata, field, path)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        _fail(path, field, f"must be a list of three integers (channels, height, width), got {_describe(value)}")
    return value


def read_split_json(path: Path) -> dict[str, Any]:
    """Parse `split.json` strictly (no NaN, at most `MAX_SPLIT_JSON_BYTES`) into a dict."""
    size = path.stat().st_size
    if size > MAX_SPLIT_JSON_BYTES:
        raise ArtifactError(f"{path}: {size} bytes, more than the {MAX_SPLIT_JSON_BYTES} a split.json can hold. {FIX}")

    def refuse_constant(name: str) -> NoReturn:
        raise ArtifactError(f"{path}: {name} is not valid JSON. {FIX}")

    try:
        metadata = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error}); the file is damaged or cut short. {FIX}") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: must hold a JSON object, got {_describe(metadata)}. {FIX}")
    return metadata


def check_split_metadata(metadata: Mapping[str, Any], path: Path) -> None:
    """Check every field of a `split.json` that a consumer reads: types, bounds and allowed values.

    Raises:
        ArtifactError: naming `path` and the first field at fault.
    """
    version = _get(metadata, "format_version", path)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        _fail(path, "format_version", f"must be {FORMAT_VERSION}, got {_describe(version)}")
    _string(metadata, "architecture", path, tuple(sorted(ARCHITECTURES)))
    _string(metadata, "method", path)
    _integer(metadata, "bottleneck_channels", path, 1, MAX_BOTTLENECK_CHANNELS)
    num_classes = _integer(metadata, "num_classes", path, 1, MAX_NUM_CLASSES)
    classes = metadata.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or len(classes) != num_classes
        or not all(isinstance(name, str) for name in classes)
    ):
        _fail(path, "classes", f"must be null or a list of num_classes={num_classes} strings, got {_describe(classes)}")
    channels, height, width = _shape(metadata, "input.shape", path)
    if channels != 3 or height != width or not 1 <= height <= MAX_INPUT_SIZE:
        _fail(
            path, "input.shape", f"must be [3, S, S] with 1 <= S <= {MAX_INPUT_SIZE}, got {[channels, height, width]}"
        )
    resize_size = _get(metadata, "input", path).get("resize_size")
    if resize_size is not None:
        _integer(metadata, "input.resize_size", path, 1, MAX_RESIZE_SIZE)
    for key in ("mean", "std"):
        values = _get(metadata, "input", path).get(key)
        if values in (None, []):
            continue
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and (key == "mean" or v > 0)
                for v in values
            )
        ):
            _fail(
                path,
                f"input.{key}",
                f"must be three finite numbers{' > 0' if key == 'std' else ''}, got {_describe(values)}",
            )
    for field in ("input.dtype", "bottleneck_tensor.dtype", "split_tensor.dtype"):
        _string(metadata, field, path, ("float32",))
    _shape(metadata, "bottleneck_tensor.shape", path)
    _shape(metadata, "split_tensor.shape", path)
    _string(metadata, "split_tensor.module", path, (_split_module(metadata),))
    for role in FILE_ROLES:
        _string(metadata, f"files.{role}", path)
    digests = metadata.get("sha256")
    if digests is not None:
        for role in FILE_ROLES:
            digest = _get(metadata, f"sha256.{role}", path)
            if not is_digest(digest):
                _fail(path, f"sha256.{role}", f"must be 64 lowercase hex digits, got {_describe(digest)}")
    problem = provenance_problem(metadata, num_classes)
    if problem is not None:
        _fail(path, *problem)


def _split_module(metadata: Mapping[str, Any]) -> str:
    spec = ARCHITECTURES[metadata["architecture"]]
    # an entropy-coded head splits where its own layout says (the Entropic Student's ResNet: layer1)
    return spec.entropic.split_module if ENTROPY_FIELD in metadata and spec.entropic else spec.split_module


def artifact_file(directory: Path, metadata: Mapping[str, Any], role: str, path: Path) -> Path:
    """The weight file `files.<role>` names: a plain relative name of a regular file inside `directory`."""
    field, name = f"files.{role}", metadata["files"][role]
    if Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
        _fail(path, field, f"must name a file inside the artifact folder, got {name!r}")
    file = directory / name
    if not file.resolve().is_relative_to(directory.resolve()):
        _fail(path, field, f"{name!r} leads outside the artifact folder (a symbolic link to {str(file.resolve())!r})")
    if not file.is_file():
        _fail(path, field, f"names {name!r}, which is not a file in {str(directory)!r}")
    return file


def check_digest(file: Path, metadata: Mapping[str, Any], role: str, path: Path) -> None:
    """When `split.json` records `sha256.<role>`, the file must match it (else it was changed or torn)."""
    expected = (metadata.get("sha256") or {}).get(role)
    if expected is not None and sha256_of(file) != expected:
        _fail(
            path,
            f"sha256.{role}",
            f"does not match {file.name} (the file was changed, damaged or is from another export)",
        )


def safetensors_shapes(file: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header, without reading its data."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # the Rust reader raises its own error type for every kind of damage
        raise ArtifactError(
            f"{file}: not a readable safetensors file ({error}); it is damaged or cut short. {FIX}"
        ) from None


def read_safetensors(file: Path, device: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device=device)
    except Exception as error:
        raise ArtifactError(
            f"{file}: not a readable safetensors file ({error}); it is damaged or cut short. {FIX}"
        ) from None


def check_tensors(
    file: Path, module: nn.Module, metadata: Mapping[str, Any], fields: tuple[str, ...], path: Path
) -> None:
    """The tensors in `file` must be exactly `module`'s state (names and shapes), which `fields` of `path` describe."""
    found = safetensors_shapes(file)
    expected = {key: list(value.shape) for key, value in module.state_dict().items()}
    described = f"{path.name}'s " + ", ".join(f"{field}={metadata[field]}" for field in fields)
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unexpected:
        raise ArtifactError(
            f"{file}: tensors do not match {described}: missing {missing[:5]}, unexpected {unexpected[:5]}. {FIX}"
        )
    for key, shape in expected.items():
        if found[key] != shape:
            raise ArtifactError(
                f"{file}: tensor {key!r} has shape {found[key]}, but {described} ask for {shape}. {FIX}"
            )


@torch.no_grad()
def check_split_shapes(head: nn.Module, tail: nn.Module, metadata: Mapping[str, Any], path: Path) -> None:
    """The recorded bottleneck and split tensor shapes must be what `head` computes from `input.shape`,
    and `tail` must map the split tensor to `num_classes` logits (run on the meta device: no memory)."""
    head.eval(), tail.eval()
    image = torch.zeros(1, *metadata["input"]["shape"], device="meta")
    try:
        bottleneck = list(head.encoder(image).shape[1:])
        split = head.decoder(torch.zeros(1, *bottleneck, device="meta"))
        logits = list(tail(split).shape[1:])
    except (RuntimeError, ValueError) as error:
        _fail(path, "input.shape", f"{metadata['input']['shape']} does not fit {metadata['architecture']} ({error})")
    for field, computed in (("bottleneck_tensor.shape", bottleneck), ("split_tensor.shape", list(split.shape[1:]))):
        if _get(metadata, field, path) != computed:
            _fail(path, field, f"is {_get(metadata, field, path)}, but the head computes {computed} from input.shape")
    if logits != [metadata["num_classes"]]:
        _fail(path, "input.shape", f"gives {logits} logits through the tail, not num_classes={metadata['num_classes']}")
