"""Fused multi-bottleneck HND: independent students, single-run equivalence and per-student artifacts."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_train_config, tiny_overrides
from torch.nn import functional as F

from hnd_lightning.methods import FusedHNDMethod
from hnd_lightning.models import build_teacher
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.runs.training import build_method, fit_and_test, setup_run


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def short_run_overrides(image_folder, sizes: str) -> list[str]:
    overrides = [
        o for o in tiny_overrides("densenet169", "hnd", image_folder)
        if o != "debug=fast_dev_run" and not o.startswith("model.bottleneck_channels")
    ]
    return overrides + [
        f"model.bottleneck_channels={sizes}", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "data.num_workers=0", "data.persistent_workers=false",
    ]


def test_updating_one_student_leaves_the_others_and_their_optimizer_states_unchanged():
    torch.manual_seed(0)
    teacher = build_teacher("densenet169", 3)
    method = FusedHNDMethod(
        teacher, "densenet169", 3, 32, [3, 6, 9],
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
    )
    names = list(method.students)
    assert names == ["b3", "b6", "b9"]
    optimizers = method.configure_optimizers()
    # each optimizer holds exactly its student's head; heads share no parameter; the tail is frozen
    for name, optimizer in zip(names, optimizers):
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert optimized == {id(p) for p in method.students[name].head.parameters()}
    head_ids = [{id(p) for p in method.students[n].head.parameters()} for n in names]
    assert all(not (a & b) for i, a in enumerate(head_ids) for b in head_ids[i + 1 :])
    assert not any(p.requires_grad for p in method.main_student.tail.parameters())

    method.train()
    before = {name: snapshot(method.students[name].head) for name in names}
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        target = method.teacher_head(images)
    loss = F.mse_loss(method.students["b6"].head(images), target, reduction="sum")
    optimizers[1].zero_grad()
    loss.backward()
    optimizers[1].step()

    after = {name: snapshot(method.students[name].head) for name in names}
    assert any(not torch.equal(after["b6"][k], v) for k, v in before["b6"].items())
    for name in ("b3", "b9"):
        assert all(torch.equal(after[name][k], v) for k, v in before[name].items()), name
        assert all(p.grad is None for p in method.students[name].head.parameters()), name
    assert len(optimizers[1].state) > 0 and len(optimizers[0].state) == 0 and len(optimizers[2].state) == 0


def test_fused_students_train_like_single_runs_and_export_loadable_artifacts(image_folder, tmp_path):
    # single runs: b3 trained, b6 only built (its initial weights)
    single_cfg = compose_train_config(short_run_overrides(image_folder, "3"), tmp_path / "single_b3")
    fit_and_test(single_cfg, *setup_run(single_cfg))
    _, single_b6, _ = setup_run(compose_train_config(short_run_overrides(image_folder, "6"), tmp_path / "single_b6"))

    cfg = compose_train_config(short_run_overrides(image_folder, "[3,6]"), tmp_path / "fused")
    datamodule, method, trainer = setup_run(cfg)
    assert isinstance(method, FusedHNDMethod)
    # same seed, same initial weights as the single run of that size
    for key, value in single_b6.model.head.state_dict().items():
        assert torch.equal(method.students["b6"].head.state_dict()[key], value), key
    results = fit_and_test(cfg, datamodule, method, trainer)

    written = json.loads(json.dumps(results))  # what train() writes as results.json: plain JSON
    assert written["bottleneck_channels"] == [3, 6] and written["method"] == "hnd"
    assert set(written["students"]) == {"b3", "b6"}
    for name in ("b3", "b6"):
        assert {f"val/{name}/acc1", f"test/{name}/acc1", f"test/{name}/acc5", f"train/{name}/loss"} <= set(results["metrics"])
    assert results["metrics"]["test/acc1"] == results["metrics"]["test/b3/acc1"]
    # the first student sees the same batches as its single run: the same trained head
    single_b3 = load_split_artifacts(tmp_path / "single_b3" / "artifacts")
    fused_b3 = load_split_artifacts(tmp_path / "fused" / "artifacts" / "b3")
    for key, value in single_b3.head.state_dict().items():
        torch.testing.assert_close(fused_b3.head.state_dict()[key], value, msg=key)

    # every student's artifacts load like a single run's and reproduce its logits
    x = torch.randn(3, 3, 32, 32)
    for name, size in (("b3", 3), ("b6", 6)):
        artifacts = load_split_artifacts(tmp_path / "fused" / "artifacts" / name)
        assert artifacts.metadata["bottleneck_channels"] == size and artifacts.metadata["method"] == "hnd"
        assert artifacts.metadata["bottleneck_tensor"]["shape"] == [size, 5, 5]
        assert sorted(p.name for p in (tmp_path / "fused" / "artifacts" / name).iterdir()) == [
            "head.safetensors", "split.json", "tail.safetensors"
        ]
        with torch.no_grad():
            expected = method.students[name].eval()(x)
            torch.testing.assert_close(artifacts.model()(x), expected)
            torch.testing.assert_close(artifacts.tail(artifacts.decoder(artifacts.encoder(x))), expected)


def test_a_list_of_sizes_with_another_method_names_the_fix(image_folder, tmp_path):
    overrides = [o for o in tiny_overrides("densenet169", "kd", image_folder) if not o.startswith("model.bottleneck")]
    cfg = compose_train_config(overrides + ["model.bottleneck_channels=[3,6]"], tmp_path)
    with pytest.raises(ValueError, match="Use `method=hnd`"):
        build_method(cfg)


def test_repeated_sizes_are_rejected():
    with pytest.raises(ValueError, match="distinct sizes"):
        FusedHNDMethod(build_teacher("densenet169", 3), "densenet169", 3, 32, [3, 3])
