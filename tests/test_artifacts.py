"""Artifact folders: written atomically with ordinary modes; crafted or damaged ones refused, naming file and field."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD
from hnd_lightning.files import TEMP_PREFIX
from hnd_lightning.models import build_student
from hnd_lightning.models.artifacts import (
    SPLIT_JSON,
    TEACHER_JSON,
    load_split_artifacts,
    save_split_artifacts,
    save_teacher_artifacts,
    split_metadata,
)
from hnd_lightning.models.split_schema import ArtifactError
from hnd_lightning.models.teacher import build_teacher

INPUT_SIZE = 32


def _student(seed: int):
    torch.manual_seed(seed)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, INPUT_SIZE)
    return student.eval()


def _export(directory: Path, student) -> Path:
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    metadata = split_metadata(
        student, "densenet169", 3, 3, INPUT_SIZE, "hnd", normalization, INPUT_SIZE, ["a", "b", "c"]
    )
    save_split_artifacts(directory, student, metadata)
    return directory


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    student = _student(0)
    return _export(tmp_path_factory.mktemp("export") / "artifacts", student), student


@pytest.fixture
def artifacts(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported[0], tmp_path / "artifacts"))


def _edit(folder: Path, field: str, value) -> None:
    """Set dotted `field` of folder/split.json to `value` (None deletes it)."""
    metadata = json.loads((folder / SPLIT_JSON).read_text())
    *parents, leaf = field.split(".")
    target = metadata
    for key in parents:
        target = target[key]
    if value is None:
        del target[leaf]
    else:
        target[leaf] = value
    (folder / SPLIT_JSON).write_text(json.dumps(metadata))


def _refused(folder: Path, *patterns: str) -> str:
    with pytest.raises(ArtifactError) as caught:
        load_split_artifacts(folder)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_export_round_trips_with_ordinary_modes_and_digests(exported):
    folder, student = exported
    loaded = load_split_artifacts(folder)
    images = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    torch.testing.assert_close(loaded.model()(images), student(images))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("head.safetensors", "tail.safetensors", SPLIT_JSON):
        assert ((folder / name).stat().st_mode & 0o777) == 0o666 & ~umask, name
    metadata = json.loads((folder / SPLIT_JSON).read_text())
    assert set(metadata["sha256"]) == {"head", "tail"} and not list(folder.glob(f"{TEMP_PREFIX}*"))


def test_teacher_artifacts_are_strict_json_with_a_digest(tmp_path):
    teacher = build_teacher("densenet169", 3)
    weights, record = save_teacher_artifacts(tmp_path, teacher, {"architecture": "densenet169", "score": float("nan")})
    assert record.name == TEACHER_JSON and (weights.stat().st_mode & 0o077) == (record.stat().st_mode & 0o077) != 0
    content = json.loads(record.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in teacher.json"))
    assert content["score"] is None and len(content["sha256"]["teacher"]) == 64


def test_a_failed_write_keeps_the_previous_export(artifacts, monkeypatch):
    import safetensors.torch

    before = {name: (artifacts / name).read_bytes() for name in ("head.safetensors", "tail.safetensors", SPLIT_JSON)}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _export(artifacts, _student(1))
    assert {name: (artifacts / name).read_bytes() for name in before} == before
    assert not list(artifacts.glob(f"{TEMP_PREFIX}*"))
    load_split_artifacts(artifacts)


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "sub/../../tail.safetensors"])
def test_files_outside_the_folder_are_refused(artifacts, name):
    _edit(artifacts, "files.head", name)
    _refused(artifacts, f"{artifacts / SPLIT_JSON}: field 'files.head'", "inside the artifact folder")


def test_a_symbolic_link_out_of_the_folder_is_refused(artifacts, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(artifacts / "head.safetensors", outside)
    (artifacts / "link.safetensors").symlink_to(outside)
    _edit(artifacts, "files.head", "link.safetensors")
    _refused(artifacts, "field 'files.head'", "leads outside the artifact folder")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("bottleneck_channels", 10_000_000, "field 'bottleneck_channels' must be between 1 and 1024, got 10000000"),
        ("bottleneck_channels", "12", "field 'bottleneck_channels' must be an integer, got the string \"12\""),
        ("num_classes", True, "field 'num_classes' must be an integer, got the boolean true"),
        ("input.shape", [3, 100_000, 100_000], "field 'input.shape' must be [3, S, S] with 1 <= S <= 2048"),
        ("input.shape", "224", "field 'input.shape' must be a list of three integers"),
        ("input.resize_size", 1e9, "field 'input.resize_size' must be an integer"),
        ("input.std", [0.2, 0.0, 0.2], "field 'input.std' must be three finite numbers > 0"),
        ("architecture", "vgg16", "field 'architecture' must be one of"),
        ("classes", ["a", "b"], "field 'classes' must be null or a list of num_classes=3 strings"),
        ("format_version", 2, "field 'format_version' must be 1"),
        ("files", None, "field 'files.head' is missing"),
        ("sha256.tail", "beef", "field 'sha256.tail' must be 64 lowercase hex digits"),
    ],
)
def test_bad_fields_are_refused_naming_file_and_field(artifacts, field, value, expected):
    _edit(artifacts, field, value)
    _refused(artifacts, str(artifacts / SPLIT_JSON), expected)


def test_sizes_must_agree_with_the_weight_files(artifacts):
    _edit(artifacts, "bottleneck_channels", 12)
    _refused(
        artifacts,
        "head.safetensors: tensor 'encoder.6.weight' has shape [3, 64, 2, 2], but split.json's "
        "architecture=densenet169, bottleneck_channels=12 ask for [12, 64, 2, 2]",
    )
    _edit(artifacts, "bottleneck_channels", 3)
    _edit(artifacts, "num_classes", 1000)
    _edit(artifacts, "classes", None)
    _refused(
        artifacts,
        "tail.safetensors: tensor 'classifier.weight' has shape [3, 1664]",
        "num_classes=1000 ask for [1000, 1664]",
    )


def test_recorded_shapes_must_be_what_the_model_computes(artifacts):
    _edit(artifacts, "input.shape", [3, 64, 64])
    _refused(artifacts, "field 'bottleneck_tensor.shape' is [3, 5, 5], but the head computes [3, 9, 9]")
    _edit(artifacts, "input.shape", [3, 4, 4])
    _refused(artifacts, "field 'input.shape' [3, 4, 4] does not fit densenet169")


def test_damaged_weight_files_are_named(artifacts):
    tail = artifacts / "tail.safetensors"
    tail.write_bytes(tail.read_bytes()[: tail.stat().st_size // 2])
    _refused(artifacts, "field 'sha256.tail' does not match tail.safetensors")
    _edit(artifacts, "sha256", None)  # a split.json without digests: the reader itself names the file
    _refused(artifacts, f"{tail}: not a readable safetensors file", "incomplete metadata")
    tail.write_text("not weights")
    _refused(artifacts, f"{tail}: not a readable safetensors file")


def test_weights_of_another_export_are_detected(artifacts, tmp_path):
    other = _export(tmp_path / "other", _student(1))
    shutil.copy(other / "head.safetensors", artifacts / "head.safetensors")  # a torn or mixed re-export
    _refused(artifacts, "field 'sha256.head' does not match head.safetensors")


def test_damaged_split_json_is_named(artifacts):
    text = (artifacts / SPLIT_JSON).read_text()
    (artifacts / SPLIT_JSON).write_text(text[: len(text) // 2])
    _refused(artifacts, f"{artifacts / SPLIT_JSON}: not valid JSON")
    (artifacts / SPLIT_JSON).write_text(text.replace('"format_version": 1', '"format_version": NaN'))
    _refused(artifacts, "NaN is not valid JSON")
    (artifacts / SPLIT_JSON).write_text("[1, 2]")
    _refused(artifacts, "must hold a JSON object, got a list")
