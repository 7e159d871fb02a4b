"""The teacher shipped with the package: DenseNet-169 trained to convergence on the bundled data.

`model.teacher.weights=bundled` loads it as `imagenet` loads torchvision's weights. The float16
safetensors file and its JSON record (recipe, epochs, validation curve, test accuracy, sha256) live
in `models/bundled/`; `scripts/train_bundled_teacher.py` made both. The file is checked against the
recorded sha256 before use, and a teacher of another architecture, class count or input size is
refused: the weights fit one setting only (the quickstart's 32 x 32 Fashion-MNIST subset).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hnd_lightning.files import sha256_of

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
WEIGHTS_FILE = BUNDLED_DIR / "densenet169_fashion_mnist_32.safetensors"
RECORD_FILE = BUNDLED_DIR / "densenet169_fashion_mnist_32.json"


class BundledTeacherError(ValueError):
    """The shipped teacher is missing, corrupt, or asked for a setting it was not trained for."""


def bundled_record(record_file: Path = RECORD_FILE) -> dict[str, Any]:
    """The JSON record of the shipped teacher (architecture, classes, input size, recipe, accuracy, sha256)."""
    if not record_file.is_file():
        raise BundledTeacherError(
            f"The bundled teacher's record {str(record_file)!r} is missing; reinstall the package "
            f"(it ships with it) or make it with scripts/train_bundled_teacher.py."
        )
    return json.loads(record_file.read_text())


def check_setting(architecture: str, num_classes: int, input_size: int | None, record: dict[str, Any]) -> None:
    """Refuse a setting the shipped teacher was not trained for, naming each mismatch and the fix."""
    wanted = {"architecture": architecture, "num_classes": num_classes, "input_size": input_size}
    mismatched = {
        key: (value, record[key]) for key, value in wanted.items() if value is not None and value != record[key]
    }
    if mismatched:
        details = ", ".join(f"{key}={asked!r} (bundled: {have!r})" for key, (asked, have) in mismatched.items())
        raise BundledTeacherError(
            f"model.teacher.weights=bundled is a {record['architecture']} for {record['num_classes']} classes at "
            f"{record['input_size']} x {record['input_size']} (data=bundled, model.input_size={record['input_size']}); "
            f"this run asks for {details}. Use `experiment=quickstart` settings, or another teacher: "
            f"`model.teacher.weights=imagenet`, `model.teacher.checkpoint=PATH` or `null`."
        )


def load_bundled_state_dict(
    architecture: str,
    num_classes: int,
    input_size: int | None = None,
    weights_file: Path = WEIGHTS_FILE,
    record_file: Path = RECORD_FILE,
) -> dict[str, torch.Tensor]:
    """The shipped teacher's weights as a float32 state dict with torchvision key names.

    Raises:
        BundledTeacherError: the setting differs from the one the teacher was trained for, or the
            file is missing or does not match its recorded sha256 (corrupt or replaced).
    """
    from safetensors.torch import load_file

    record = bundled_record(record_file)
    check_setting(architecture, num_classes, input_size, record)
    if not weights_file.is_file():
        raise BundledTeacherError(
            f"The bundled teacher's weights {str(weights_file)!r} are missing; reinstall the package."
        )
    actual = sha256_of(weights_file)
    if actual != record["sha256"]:
        raise BundledTeacherError(
            f"The bundled teacher's weights {str(weights_file)!r} are corrupt or were replaced: sha256 {actual} "
            f"but its record {record_file.name} says {record['sha256']}. Reinstall the package."
        )
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in load_file(str(weights_file)).items()
    }
