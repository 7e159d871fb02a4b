"""Where a teacher's weights come from (`model.teacher.weights` / `checkpoint`) and how a run records it.

- `imagenet` is torchvision's `IMAGENET1K_V1` for every architecture: the teachers of the HND papers
  and of their published models (torchvision's `DEFAULT` for ResNet-152 is `IMAGENET1K_V2`, a later
  training recipe). torchvision's own names (`IMAGENET1K_V2`, `DEFAULT`, ...) pick another one.
- The files load with `weights_only=True` (no code runs); the DenseNet files' pre-2018 key names
  (`norm.1.weight`) are renamed as torchvision's builder renames them, Inception's `AuxLogits.*` dropped.
- `teacher_identity` is what split.json and results.json record as `teacher`: the torchvision weights
  name, URL, file and sha256 of the cached file; or the checkpoint file and its sha256; or the bundled
  teacher's file and sha256; or `random`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torchvision import models as tv_models
from torchvision.models import WeightsEnum

from hnd_lightning.files import sha256_of

IMAGENET = "imagenet"
BUNDLED = "bundled"
# The papers' teacher weights (torchvision's first ImageNet training of each architecture).
PAPER_WEIGHTS = "IMAGENET1K_V1"
IDENTITY_SOURCES = ("torchvision", "checkpoint", "bundled", "random")
# `…denselayerN.norm.1.weight` -> `…denselayerN.norm1.weight` (the DenseNet V1 files' old names)
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


class TeacherWeightsUnavailable(RuntimeError):
    """Raised when torchvision's ImageNet weights cannot be fetched (no internet, no warm cache)."""


def torchvision_weight_names(architecture: str) -> list[str]:
    """torchvision's weight names for `architecture`, e.g. ['IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT']."""
    return list(tv_models.get_model_weights(architecture).__members__)


def is_torchvision_weights(architecture: str, weights: object) -> bool:
    """True for `imagenet` and for torchvision's own names of `architecture`'s weights."""
    return weights == IMAGENET or (isinstance(weights, str) and weights in torchvision_weight_names(architecture))


def torchvision_weights(architecture: str, weights: str) -> WeightsEnum:
    """The torchvision weights `weights` names: `imagenet` is IMAGENET1K_V1; else a name of the enum."""
    name = PAPER_WEIGHTS if weights == IMAGENET else weights
    names = torchvision_weight_names(architecture)
    if name not in names:
        raise ValueError(
            f"Unknown torchvision weights {weights!r} for {architecture}. Allowed: 'imagenet' (= {PAPER_WEIGHTS}, "
            f"the papers' teacher) or one of {names}."
        )
    return tv_models.get_model_weights(architecture)[name]


def cached_file(weights: WeightsEnum) -> Path:
    """Where torch hub keeps `weights`' file: `$TORCH_HOME/hub/checkpoints/<file name of its URL>`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def rename_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new dict with old DenseNet names renamed and `AuxLogits.*` dropped (no `_metadata`, so a BN
    without `num_batches_tracked` gets it filled in when loading)."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("AuxLogits."):
            continue  # the auxiliary classifier belongs to no student and to no teacher here
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def load_torchvision_state_dict(architecture: str, weights: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's weights `weights` names for `architecture`, as a state dict with today's key names.

    Downloads only when the file is not in the torch hub cache; reads it with `weights_only=True`.

    Raises:
        TeacherWeightsUnavailable: no internet and no cached file (or any other failure to read it).
    """
    resolved = torchvision_weights(architecture, weights)
    try:
        state_dict = resolved.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as error:  # urllib, SSL, hash and file errors all mean the same thing to a user
        raise TeacherWeightsUnavailable(
            f"Could not fetch torchvision's ImageNet weights for {architecture} ({resolved}): "
            f"{type(error).__name__}: {error}. They need internet access or a warm torch hub cache "
            f"({cached_file(resolved)}; TORCH_HOME moves it). Alternatives: `model.teacher.weights=null` "
            f"(random teacher, for tests) or `model.teacher.checkpoint=PATH` (a teacher trained by this project "
            f"with `method=original`)."
        ) from error
    return rename_legacy_keys(state_dict)


def teacher_identity(architecture: str, weights: str | None, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """What a teacher built from these settings is, as split.json and results.json record it (`teacher`).

    Returns one of:
        {"source": "checkpoint", "file": <absolute path>, "sha256": <digest, or None if absent>}
        {"source": "torchvision", "weights": "DenseNet169_Weights.IMAGENET1K_V1", "url", "file",
         "sha256": <digest of the cached file, or None if not cached>}
        {"source": "bundled", "file", "sha256"}  or  {"source": "random"}
    """
    if checkpoint is not None:
        path = Path(checkpoint).resolve()
        return {"source": "checkpoint", "file": str(path), "sha256": sha256_of(path) if path.is_file() else None}
    if weights == BUNDLED:
        from hnd_lightning.models.bundled_teacher import WEIGHTS_FILE, bundled_record

        return {"source": "bundled", "file": WEIGHTS_FILE.name, "sha256": bundled_record()["sha256"]}
    if weights is None:
        return {"source": "random"}
    resolved = torchvision_weights(architecture, weights)
    file = cached_file(resolved)
    return {
        "source": "torchvision",
        "weights": str(resolved),
        "url": resolved.url,
        "file": file.name,
        "sha256": sha256_of(file) if file.is_file() else None,
    }
