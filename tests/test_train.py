"""Every model x method from the real Hydra config, which weights train, artifacts and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_train_config, tiny_overrides

from hnd_lightning.models import build_teacher, split_teacher
from hnd_lightning.models.artifacts import load_split_artifacts, save_teacher_artifacts
from hnd_lightning.runs.training import fit_and_test, setup_run, train

MODELS = ["densenet169", "densenet201", "resnet152", "inception_v3"]
METHODS = ["original", "naive", "kd", "hnd"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_method_runs_from_the_config(model, method, image_folder, tmp_path):
    results = train(compose_train_config(tiny_overrides(model, method, image_folder), tmp_path))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["method"] == method and written["architecture"] == model
    assert {"test/acc1", "test/acc5", "val/acc1", "train/loss"} <= set(results["metrics"])
    assert 0.0 <= results["metrics"]["test/acc1"] <= 1.0
    expected = (
        ["teacher.safetensors", "teacher.json"]
        if method == "original"
        else ["head.safetensors", "tail.safetensors", "split.json"]
    )
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(expected)


def _teacher_checkpoint(model: str, directory: Path) -> Path:
    torch.manual_seed(1)
    teacher = build_teacher(model, num_classes=3)
    save_teacher_artifacts(directory, teacher, {"architecture": model})
    return directory / "teacher.safetensors"


def test_hnd_trains_only_the_head_and_leaves_the_tail_bit_identical(image_folder, tmp_path):
    checkpoint = _teacher_checkpoint("densenet169", tmp_path / "teacher")
    cfg = compose_train_config(
        tiny_overrides("densenet169", "hnd", image_folder, [f"model.teacher.checkpoint={checkpoint}"]),
        tmp_path / "run",
    )
    datamodule, method, trainer = setup_run(cfg)
    head_before = snapshot(method.model.head)
    teacher_head_before = snapshot(method.teacher_head)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable == {id(p) for p in method.model.head.parameters()}

    fit_and_test(cfg, datamodule, method, trainer)

    # the optimizer received exactly the head's parameters
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == trainable
    _, teacher_tail = split_teacher(build_teacher("densenet169", 3, checkpoint=checkpoint), "densenet169")
    tail_state = method.model.tail.state_dict()
    for key, value in teacher_tail.state_dict().items():  # weights and batch-norm buffers
        assert torch.equal(tail_state[key], value), key
    for key, value in teacher_head_before.items():
        assert torch.equal(method.teacher_head.state_dict()[key], value), key
    changed = [key for key, value in head_before.items() if not torch.equal(method.model.head.state_dict()[key], value)]
    assert any(key.startswith("encoder.") for key in changed)
    assert any(key.startswith("decoder.") for key in changed)
    # frozen parts stay in eval mode even after Lightning switches the module to train mode
    method.train()
    assert not method.teacher_head.training and not method.model.tail.training
    assert method.model.head.training


def test_kd_leaves_the_teacher_untouched_and_trains_the_whole_student(image_folder, tmp_path):
    cfg = compose_train_config(tiny_overrides("resnet152", "kd", image_folder), tmp_path)
    datamodule, method, trainer = setup_run(cfg)
    teacher_before = snapshot(method.teacher)
    student_before = snapshot(method.model)
    fit_and_test(cfg, datamodule, method, trainer)
    for key, value in teacher_before.items():
        assert torch.equal(method.teacher.state_dict()[key], value), key
    changed = {
        key.split(".")[0]
        for key, value in student_before.items()
        if not torch.equal(method.model.state_dict()[key], value)
    }
    assert changed == {"head", "tail"}
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_exported_head_and_tail_reload_and_reproduce_the_logits(image_folder, tmp_path):
    cfg = compose_train_config(tiny_overrides("densenet169", "naive", image_folder), tmp_path)
    datamodule, method, trainer = setup_run(cfg)
    fit_and_test(cfg, datamodule, method, trainer)
    artifacts = load_split_artifacts(tmp_path / "artifacts")
    meta = artifacts.metadata
    assert meta["architecture"] == "densenet169" and meta["method"] == "naive"
    assert meta["bottleneck_tensor"] == {"shape": [3, 5, 5], "dtype": "float32"}
    assert meta["split_tensor"]["module"] == "features.transition2"
    assert meta["classes"] == ["class0", "class1", "class2"]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = method.model.eval()(x)
        torch.testing.assert_close(artifacts.model()(x), expected)
        torch.testing.assert_close(artifacts.tail(artifacts.decoder(artifacts.encoder(x))), expected)


def test_original_teacher_checkpoint_feeds_the_next_run(image_folder, tmp_path):
    train(compose_train_config(tiny_overrides("densenet169", "original", image_folder), tmp_path / "teacher"))
    exported = tmp_path / "teacher" / "artifacts" / "teacher.safetensors"
    cfg = compose_train_config(
        tiny_overrides("densenet169", "hnd", image_folder, [f"model.teacher.checkpoint={exported}"]), tmp_path / "hnd"
    )
    _, method, _ = setup_run(cfg)
    from safetensors.torch import load_file

    teacher_state = load_file(str(exported))
    for key, value in method.teacher_head.state_dict().items():
        assert torch.equal(value, teacher_state[key])
    # and so does the Lightning checkpoint of a real (not fast_dev_run) original run
    real = tiny_overrides("densenet169", "original", image_folder)
    real = [o for o in real if o != "debug=fast_dev_run"] + [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.accelerator=cpu",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]
    train(compose_train_config(real, tmp_path / "teacher_ckpt"))
    last = tmp_path / "teacher_ckpt" / "checkpoints" / "last.ckpt"
    reloaded = build_teacher("densenet169", 3, checkpoint=last)
    exported_state = load_file(str(tmp_path / "teacher_ckpt" / "artifacts" / "teacher.safetensors"))
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in exported_state.items())


def test_short_real_run_writes_checkpoints_tensorboard_and_resumes(image_folder, tmp_path):
    overrides = [o for o in tiny_overrides("densenet169", "hnd", image_folder) if o != "debug=fast_dev_run"] + [
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]
    results = train(compose_train_config(overrides + ["trainer.max_epochs=1"], tmp_path / "first"))
    checkpoints = sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch000") for name in checkpoints)
    assert Path(results["best_checkpoint"]).is_file()
    assert list((tmp_path / "first" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "first" / "artifacts" / "head.safetensors").is_file()
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(
        compose_train_config(overrides + ["trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "second")
    )
    assert resumed["epochs"] == 2


def test_missing_data_root_shows_the_expected_layout(tmp_path):
    cfg = compose_train_config(tiny_overrides("densenet169", "hnd", tmp_path / "nowhere"), tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"(?s)missing folder.*train/<class>/<image>.JPEG"):
        train(cfg)


def test_wrong_class_count_is_reported(image_folder, tmp_path):
    overrides = tiny_overrides("densenet169", "hnd", image_folder) + ["data.num_classes=7"]
    with pytest.raises(FileNotFoundError, match="has 3 class folders but data.num_classes=7"):
        train(compose_train_config(overrides, tmp_path))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "hnd_lightning.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_rejects_unknown_model_with_the_available_ones(tmp_path):
    result = _cli("model=vgg16", cwd=tmp_path)
    assert result.returncode != 0
    assert "model/vgg16" in result.stderr and "densenet169" in result.stderr


def test_cli_rejects_a_bad_bottleneck_size(image_folder, tmp_path):
    overrides = tiny_overrides("densenet169", "hnd", image_folder)
    overrides = [o for o in overrides if not o.startswith("model.bottleneck_channels")] + [
        "model.bottleneck_channels=0"
    ]
    result = _cli(*overrides, f"paths.output_root={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0
    assert "bottleneck_channels must be a positive integer" in result.stderr
