"""Deployable artifacts: the distilled head and the frozen tail as two safetensors files plus split.json.

Layout of an artifact directory (written by `runs.export` after a run's test into `<run dir>/artifacts/`):

    head.safetensors   encoder + decoder weights (keys `encoder.*`, `decoder.*`)
    tail.safetensors   the teacher's modules after the split point (torchvision key names)
    split.json         what is needed to rebuild and feed both parts (see `split_metadata`), with the
                       sha256 of both weight files

A `method=original` run writes `teacher.safetensors` and `teacher.json` instead; that file is what
`model.teacher.checkpoint=PATH` takes. Every file is written atomically with ordinary modes
(`hnd_lightning.files`), the weights first and the JSON last, so a folder whose JSON exists holds the
weights it describes (the recorded digests catch a mix of two exports). Loading checks everything first
(`split_schema`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hnd_lightning.files import save_safetensors, sha256_of, write_json
from hnd_lightning.models.architectures import Architecture, get_architecture
from hnd_lightning.models.entropic import EntropicHead, EntropicSplitModel
from hnd_lightning.models.entropic_schema import build_entropic_parts, check_entropy_metadata
from hnd_lightning.models.split import SplitModel, build_decoder, build_encoder, output_shape
from hnd_lightning.models.split_schema import (
    ENTROPY_FIELD,
    FORMAT_VERSION,
    artifact_file,
    check_digest,
    check_split_metadata,
    check_split_shapes,
    check_tensors,
    read_safetensors,
    read_split_json,
)
from hnd_lightning.models.teacher import build_teacher, split_teacher

HEAD_FILE = "head.safetensors"
TAIL_FILE = "tail.safetensors"
SPLIT_JSON = "split.json"
TEACHER_FILE = "teacher.safetensors"
TEACHER_JSON = "teacher.json"


def _save_state_dict(module: nn.Module, path: Path) -> Path:
    return save_safetensors(
        {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}, path
    )


def _versions() -> dict[str, str]:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


def split_metadata(
    student: SplitModel,
    architecture: str,
    bottleneck_channels: int,
    num_classes: int,
    input_size: int,
    method: str,
    normalization: dict[str, list[float]],
    resize_size: int | None = None,
    classes: list[str] | None = None,
    teacher: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Describe a split model for deployment: shapes and dtypes at the split, input and labels.

    The optional records (written only when given; `split_schema.check_provenance` checks them):
    `teacher`, where the teacher's weights came from (`models.teacher_weights.teacher_identity`);
    `source`, the file a converted model came from (`models.conversion`); `class_names`, a readable
    name per label (`classes` holds the dataset's folder names, e.g. ILSVRC wnids).
    """
    spec = get_architecture(architecture)
    image_shape = (1, 3, input_size, input_size)
    bottleneck_shape = output_shape(student.encoder, image_shape)[1:]
    teacher_split_shape = output_shape(student.head, image_shape)[1:]
    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "method": method,
        "bottleneck_channels": bottleneck_channels,
        "num_classes": num_classes,
        "classes": classes,
        "input": {
            "shape": [3, input_size, input_size],
            "resize_size": resize_size,
            "dtype": "float32",
            **normalization,
        },
        # The tensor sent from the device to the server: the encoder output.
        "bottleneck_tensor": {"shape": list(bottleneck_shape), "dtype": "float32"},
        # The decoder restores the teacher's tensor at this module, which the tail consumes.
        "split_tensor": {"module": spec.split_module, "shape": list(teacher_split_shape), "dtype": "float32"},
        "files": {"head": HEAD_FILE, "tail": TAIL_FILE},
        "versions": _versions(),
        **{
            key: value
            for key, value in (("teacher", teacher), ("source", source), ("class_names", class_names))
            if value is not None
        },
    }


def save_split_artifacts(directory: str | Path, student: SplitModel, metadata: dict[str, Any]) -> list[Path]:
    """Write head and tail weights, then `split.json` (with their sha256) into `directory`; return the three paths."""
    directory = Path(directory)
    head = _save_state_dict(student.head, directory / HEAD_FILE)
    tail = _save_state_dict(student.tail, directory / TAIL_FILE)
    digests = {"head": sha256_of(head), "tail": sha256_of(tail)}
    return [head, tail, write_json(directory / SPLIT_JSON, {**metadata, "sha256": digests})]


def save_teacher_artifacts(directory: str | Path, teacher: nn.Module, metadata: dict[str, Any]) -> list[Path]:
    """Write a trained teacher (`method=original`) as `teacher.safetensors`, then `teacher.json` (with its sha256)."""
    directory = Path(directory)
    weights = _save_state_dict(teacher, directory / TEACHER_FILE)
    record = {**metadata, "versions": _versions(), "sha256": {"teacher": sha256_of(weights)}}
    return [weights, write_json(directory / TEACHER_JSON, record)]


@dataclass
class SplitArtifacts:
    """Loaded artifacts: `head` (image -> split tensor), `tail` (split tensor -> logits), `metadata`.

    An entropy-coded split's `head` is an `EntropicHead` (encoder, entropy model with its tables, decoder).
    """

    head: nn.Module
    tail: nn.Module
    metadata: dict[str, Any]

    @property
    def encoder(self) -> nn.Module:
        return self.head.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.head.decoder

    @property
    def entropy_coded(self) -> bool:
        return isinstance(self.head, EntropicHead)

    def model(self) -> SplitModel | EntropicSplitModel:
        """The composed student, `tail(head(x))`, in eval mode."""
        if self.entropy_coded:
            return EntropicSplitModel(self.head, self.tail).eval()
        return SplitModel(self.head.encoder, self.head.decoder, self.tail).eval()


def build_head(spec: Architecture, bottleneck_channels: int) -> nn.Sequential:
    """A freshly initialized student head (`encoder`, `decoder`) as `head.safetensors` holds it."""
    return SplitModel(
        build_encoder(spec, bottleneck_channels), build_decoder(spec, bottleneck_channels), nn.Identity()
    ).head


def build_parts(spec: Architecture, bottleneck_channels: int, num_classes: int) -> tuple[nn.Sequential, nn.Module]:
    """A freshly initialized student head and teacher tail, as artifacts hold them (under
    `torch.device("meta")` only their shapes: nothing is allocated or initialized)."""
    _, tail = split_teacher(build_teacher(spec.name, num_classes, weights=None), spec.name)
    return build_head(spec, bottleneck_channels), tail


def load_split_artifacts(directory: str | Path, map_location: str | torch.device = "cpu") -> SplitArtifacts:
    """Rebuild head and tail from an artifact directory; weights load strictly, without unpickling.

    Everything is checked before memory is allocated for a weight: `split.json`'s fields (types,
    bounds), its files (inside `directory`, matching their recorded sha256), the tensor names and
    shapes in their headers against the parts `split.json` describes, and the recorded tensor shapes.

    Args:
        directory: a folder holding `split.json`, `head.safetensors` and `tail.safetensors`.
        map_location: device for the weights.

    Returns:
        `SplitArtifacts` with both parts in eval mode.

    Raises:
        FileNotFoundError: no `split.json` in `directory`.
        ArtifactError (a ValueError): a damaged or crafted file, naming the file and the field or tensor.
    """
    directory = Path(directory)
    metadata_path = directory / SPLIT_JSON
    if not metadata_path.is_file():
        raise FileNotFoundError(
            f"No {SPLIT_JSON} in {str(directory)!r}: pass the `artifacts/` folder of a finished naive, kd "
            f"or hnd run (`method=original` writes {TEACHER_FILE} instead)."
        )
    metadata = read_split_json(metadata_path)
    check_split_metadata(metadata, metadata_path)
    files = {role: artifact_file(directory, metadata, role, metadata_path) for role in ("head", "tail")}
    for role, file in files.items():
        check_digest(file, metadata, role, metadata_path)
    spec = get_architecture(metadata["architecture"])
    if ENTROPY_FIELD in metadata:  # an Entropic Student: the entropy model and its tables are in the head
        check_entropy_metadata(metadata, metadata_path)
        head, tail = build_entropic_parts(metadata)
    else:
        with torch.device("meta"):  # shapes only: nothing is allocated until every check has passed
            head, tail = build_parts(spec, metadata["bottleneck_channels"], metadata["num_classes"])
    check_tensors(files["head"], head, metadata, ("architecture", "bottleneck_channels"), metadata_path)
    check_tensors(files["tail"], tail, metadata, ("architecture", "num_classes"), metadata_path)
    check_split_shapes(head, tail, metadata, metadata_path)
    device = str(map_location)
    for part, file in ((head, files["head"]), (tail, files["tail"])):
        part.to_empty(device=device)  # every parameter and buffer is in the state dict, loaded strictly next
        part.load_state_dict(read_safetensors(file, device), strict=True)
    return SplitArtifacts(head.eval(), tail.eval(), metadata)
