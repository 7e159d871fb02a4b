"""Deployable artifacts: the distilled head and the frozen tail as two safetensors files plus split.json.

Layout of an artifact directory (written by `SplitArtifactExport` into `<run dir>/artifacts/`):

    head.safetensors   encoder + decoder weights (keys `encoder.*`, `decoder.*`)
    tail.safetensors   the teacher's modules after the split point (torchvision key names)
    split.json         what is needed to rebuild and feed both parts (see `split_metadata`)

A `method=original` run writes `teacher.safetensors` and `teacher.json` instead; that file is what
`model.teacher.checkpoint=PATH` takes.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hnd_lightning.models.architectures import get_architecture
from hnd_lightning.models.split import SplitModel, build_decoder, build_encoder, output_shape
from hnd_lightning.models.teacher import build_teacher, split_teacher

HEAD_FILE = "head.safetensors"
TAIL_FILE = "tail.safetensors"
SPLIT_JSON = "split.json"
TEACHER_FILE = "teacher.safetensors"
TEACHER_JSON = "teacher.json"
FORMAT_VERSION = 1


def _save_state_dict(module: nn.Module, path: Path) -> None:
    save_file({key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}, str(path))


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
) -> dict[str, Any]:
    """Describe a split model for deployment: shapes and dtypes at the split, input and labels."""
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
        "input": {"shape": [3, input_size, input_size], "resize_size": resize_size, "dtype": "float32", **normalization},
        # The tensor sent from the device to the server: the encoder output.
        "bottleneck_tensor": {"shape": list(bottleneck_shape), "dtype": "float32"},
        # The decoder restores the teacher's tensor at this module, which the tail consumes.
        "split_tensor": {"module": spec.split_module, "shape": list(teacher_split_shape), "dtype": "float32"},
        "files": {"head": HEAD_FILE, "tail": TAIL_FILE},
        "versions": _versions(),
    }


def save_split_artifacts(directory: str | Path, student: SplitModel, metadata: dict[str, Any]) -> list[Path]:
    """Write head and tail weights and `split.json` into `directory`; return the three paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_state_dict(student.head, directory / HEAD_FILE)
    _save_state_dict(student.tail, directory / TAIL_FILE)
    (directory / SPLIT_JSON).write_text(json.dumps(metadata, indent=2))
    return [directory / HEAD_FILE, directory / TAIL_FILE, directory / SPLIT_JSON]


def save_teacher_artifacts(directory: str | Path, teacher: nn.Module, metadata: dict[str, Any]) -> list[Path]:
    """Write a trained teacher (`method=original`) as `teacher.safetensors` + `teacher.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_state_dict(teacher, directory / TEACHER_FILE)
    (directory / TEACHER_JSON).write_text(json.dumps({**metadata, "versions": _versions()}, indent=2))
    return [directory / TEACHER_FILE, directory / TEACHER_JSON]


@dataclass
class SplitArtifacts:
    """Loaded artifacts: `head` (image -> split tensor), `tail` (split tensor -> logits), `metadata`."""

    head: nn.Sequential
    tail: nn.Module
    metadata: dict[str, Any]

    @property
    def encoder(self) -> nn.Module:
        return self.head.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.head.decoder

    def model(self) -> SplitModel:
        """The composed student, `tail(head(x))`, in eval mode."""
        return SplitModel(self.head.encoder, self.head.decoder, self.tail).eval()


def load_split_artifacts(directory: str | Path, map_location: str | torch.device = "cpu") -> SplitArtifacts:
    """Rebuild head and tail from an artifact directory; weights load strictly, without unpickling.

    Args:
        directory: a folder holding `split.json`, `head.safetensors` and `tail.safetensors`.
        map_location: device for the weights.

    Returns:
        `SplitArtifacts` with both parts in eval mode.
    """
    directory = Path(directory)
    metadata_path = directory / SPLIT_JSON
    if not metadata_path.is_file():
        raise FileNotFoundError(
            f"No {SPLIT_JSON} in {str(directory)!r}: pass the `artifacts/` folder of a finished naive, kd "
            f"or hnd run (`method=original` writes {TEACHER_FILE} instead)."
        )
    metadata = json.loads(metadata_path.read_text())
    spec = get_architecture(metadata["architecture"])
    bottleneck_channels = metadata["bottleneck_channels"]
    head = SplitModel(build_encoder(spec, bottleneck_channels), build_decoder(spec, bottleneck_channels), nn.Identity()).head
    _, tail = split_teacher(build_teacher(spec.name, metadata["num_classes"], weights=None), spec.name)
    device = str(map_location)
    head.load_state_dict(load_file(str(directory / metadata["files"]["head"]), device=device), strict=True)
    tail.load_state_dict(load_file(str(directory / metadata["files"]["tail"]), device=device), strict=True)
    return SplitArtifacts(head.eval(), tail.eval(), metadata)
