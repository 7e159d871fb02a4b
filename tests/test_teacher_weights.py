"""The papers' teachers (`imagenet` = IMAGENET1K_V1), loaded offline from a warm torch hub cache with the
real files' key names, and the teacher's identity that every run records in results.json and split.json."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_train_config, tiny_overrides
from convert_sources import V1_FILES, legacy_teacher_state, random_teacher, save

from hnd_lightning.files import sha256_of
from hnd_lightning.models import ARCHITECTURES, build_teacher
from hnd_lightning.models.artifacts import save_teacher_artifacts
from hnd_lightning.models.teacher_weights import teacher_identity, torchvision_weights
from hnd_lightning.runs.record import failed_results, interrupted_results
from hnd_lightning.runs.training import train


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_imagenet_is_the_papers_v1_for_every_architecture_and_torchvision_names_pick_others():
    for architecture, file in V1_FILES.items():
        assert torchvision_weights(architecture, "imagenet").url.endswith("/" + file)
    assert set(V1_FILES) == set(ARCHITECTURES)
    assert torchvision_weights("resnet152", "IMAGENET1K_V2").url.endswith("/resnet152-f82ba261.pth")
    assert str(torchvision_weights("resnet152", "DEFAULT")) == "ResNet152_Weights.IMAGENET1K_V2"
    with pytest.raises(ValueError, match=r"'IMAGENET1K_V2' for densenet169.*\['IMAGENET1K_V1', 'DEFAULT'\]"):
        torchvision_weights("densenet169", "IMAGENET1K_V2")


@pytest.mark.parametrize("architecture", ["densenet169", "inception_v3"])
def test_imagenet_teachers_load_offline_from_the_cache_with_the_real_files_key_names(architecture, tmp_path):
    source = random_teacher(architecture, seed=0)
    cached = save(
        legacy_teacher_state(architecture, source), tmp_path / "torch/hub/checkpoints" / V1_FILES[architecture]
    )
    legacy = torch.load(cached, weights_only=True)
    # what makes the real files hard: DenseNet's pre-2018 names without BN counters, Inception's AuxLogits
    assert (
        any(".norm.1." in key for key in legacy) if architecture == "densenet169" else "AuxLogits.fc.weight" in legacy
    )
    teacher = build_teacher(architecture, 1000, weights="imagenet")
    expected = {key: value for key, value in source.state_dict().items() if not key.startswith("AuxLogits.")}
    loaded = teacher.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in expected.items() if "num_batches" not in key)
    identity = teacher_identity(architecture, "imagenet")
    assert identity["source"] == "torchvision" and identity["weights"].endswith(".IMAGENET1K_V1")
    assert identity["file"] == V1_FILES[architecture] and identity["sha256"] == sha256_of(cached)


def test_a_run_records_its_teacher_in_results_and_split_json(image_folder, tmp_path):
    torch.manual_seed(0)
    checkpoint = save_teacher_artifacts(tmp_path / "teacher", build_teacher("densenet169", 3), {})[0]
    overrides = tiny_overrides("densenet169", "hnd", image_folder, [f"model.teacher.checkpoint={checkpoint}"])
    results = train(compose_train_config(overrides, tmp_path / "run"))
    expected = {"source": "checkpoint", "file": str(checkpoint.resolve()), "sha256": sha256_of(checkpoint)}
    assert results["teacher"] == expected
    assert json.loads((tmp_path / "run" / "results.json").read_text())["teacher"] == expected
    assert json.loads((tmp_path / "run" / "artifacts" / "split.json").read_text())["teacher"] == expected


def test_failed_and_interrupted_runs_record_their_teacher_too(image_folder, tmp_path):
    missing = tmp_path / "no-such-teacher.safetensors"
    cfg = compose_train_config(
        tiny_overrides("densenet169", "hnd", image_folder, [f"model.teacher.checkpoint={missing}"]), tmp_path
    )
    expected = {"source": "checkpoint", "file": str(missing.resolve()), "sha256": None}
    assert failed_results(cfg, FileNotFoundError(missing), 1.0)["teacher"] == expected
    assert interrupted_results(cfg, KeyboardInterrupt(), 1.0)["teacher"] == expected
    random = compose_train_config(tiny_overrides("densenet169", "hnd", image_folder), tmp_path)
    assert failed_results(random, RuntimeError("x"), 1.0)["teacher"] == {"source": "random"}
