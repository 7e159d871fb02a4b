"""split.json's `entropy_bottleneck` field: what an entropy-coded split records, its checks, and its parts.

An Entropic Student's artifacts are the same three files as any split (`models.artifacts`); `head.safetensors`
also holds the entropy model with its coder tables (int32), so the decoding side never rebuilds them.
`split.json` then describes the latent and the tables:

    "entropy_bottleneck": {
        "model": "compressai.EntropyBottleneck",   factorized prior, CompressAI's defaults
        "compressai_version": "1.2.8",
        "channels": 24,                            = bottleneck_channels (the latent's channels)
        "latent_shape": [24, 2, 2],                = bottleneck_tensor.shape (the encoder's output)
        "tables": {"quantized_cdf": [24, L], "offset": [24], "cdf_length": [24]},
        "rounding": "round(y - median) + median"
    }

`check_entropy_metadata` checks every value before anything is built (bounded, so a crafted file cannot
ask for gigabytes of tables); `build_entropic_parts` builds the head and tail the field describes, their
tables already of the recorded sizes, ready for `load_split_artifacts`'s strict load.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from hnd_lightning.models.architectures import ARCHITECTURES
from hnd_lightning.models.split_schema import ENTROPY_FIELD, _describe, _fail, _get, _integer, _string

ENTROPY_MODEL = "compressai.EntropyBottleneck"
ROUNDING = "round(y - median) + median"
# 64 MiB of int32 table entries at most; a trained 24-channel latent needs a few thousand
MAX_TABLE_ENTRIES = 16 * 2**20
TABLE_NAMES = {"quantized_cdf": "_quantized_cdf", "offset": "_offset", "cdf_length": "_cdf_length"}


def describe_entropy_bottleneck(entropy_bottleneck: nn.Module, latent_shape: list[int]) -> dict[str, Any]:
    """The `entropy_bottleneck` field for an updated entropy model and its (C, h, w) latent."""
    import compressai

    return {
        "model": ENTROPY_MODEL,
        "compressai_version": compressai.__version__,
        "channels": int(latent_shape[0]),
        "latent_shape": [int(side) for side in latent_shape],
        "tables": {key: list(getattr(entropy_bottleneck, name).shape) for key, name in TABLE_NAMES.items()},
        "rounding": ROUNDING,
    }


def check_entropy_metadata(metadata: Mapping[str, Any], path: Path) -> None:
    """Check split.json's `entropy_bottleneck` field against the rest of it (types, bounds, agreement).

    Raises:
        ArtifactError: naming `path` and the first field at fault.
    """
    field = ENTROPY_FIELD
    spec = ARCHITECTURES[metadata["architecture"]]
    if spec.entropic is None:
        _fail(path, field, f"is set, but {spec.name} has no Entropic Student head")
    _string(metadata, f"{field}.model", path, (ENTROPY_MODEL,))
    _string(metadata, f"{field}.compressai_version", path)
    _string(metadata, f"{field}.rounding", path, (ROUNDING,))
    channels = _integer(metadata, f"{field}.channels", path, 1, 1024)
    if channels != metadata["bottleneck_channels"]:
        _fail(path, f"{field}.channels", f"is {channels}, but bottleneck_channels is {metadata['bottleneck_channels']}")
    latent = _get(metadata, f"{field}.latent_shape", path)
    if latent != _get(metadata, "bottleneck_tensor.shape", path):
        _fail(
            path, f"{field}.latent_shape", f"is {_describe(latent)}, but bottleneck_tensor.shape is the latent's shape"
        )
    tables = {key: _get(metadata, f"{field}.tables.{key}", path) for key in TABLE_NAMES}
    for key, shape in tables.items():
        if not isinstance(shape, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in shape):
            _fail(path, f"{field}.tables.{key}", f"must be a list of non-negative integers, got {_describe(shape)}")
    if tables["offset"] != [channels] or tables["cdf_length"] != [channels]:
        _fail(path, f"{field}.tables", f"offset and cdf_length must be [{channels}], got {tables}")
    cdf = tables["quantized_cdf"]
    if len(cdf) != 2 or cdf[0] != channels or not 1 <= cdf[0] * cdf[1] <= MAX_TABLE_ENTRIES:
        _fail(
            path,
            f"{field}.tables.quantized_cdf",
            f"must be [{channels}, L] with at most {MAX_TABLE_ENTRIES:,} entries in all, got {cdf}",
        )


def build_entropic_parts(metadata: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """The (head, tail) an entropy-coded split.json describes, on the meta device (no memory yet).

    The head is built on the CPU (GDN1 and the entropy model cannot be built on meta), its tables
    resized to the recorded shapes, then moved to meta; the tail is the teacher's stages after the
    head's split module.
    """
    import torch

    from hnd_lightning.models.entropic import build_entropic_head
    from hnd_lightning.models.teacher import build_teacher, split_teacher

    architecture = metadata["architecture"]
    head = build_entropic_head(architecture, metadata["bottleneck_channels"])
    for key, name in TABLE_NAMES.items():
        shape = metadata[ENTROPY_FIELD]["tables"][key]
        setattr(head.entropy_bottleneck, name, torch.zeros(shape, dtype=torch.int32))
    with torch.device("meta"):
        teacher = build_teacher(architecture, metadata["num_classes"], weights=None)
        _, tail = split_teacher(teacher, architecture, ARCHITECTURES[architecture].entropic.split_module)
    return head.to("meta"), tail
