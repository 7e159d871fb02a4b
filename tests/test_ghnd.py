"""GHND: its loss reaches every listed stage, the teacher runs once per batch, only the head trains; fused GHND."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEST_INPUT_SIZE, compose_train_config, tiny_overrides

from hnd_lightning.methods import FusedGHNDMethod, GHNDMethod
from hnd_lightning.models import ARCHITECTURES, build_teacher, get_architecture
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.runs.training import fit_and_test, setup_run, train


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_term_reaches_the_head_through_the_frozen_tail(architecture):
    torch.manual_seed(0)
    size = TEST_INPUT_SIZE[architecture]
    method = GHNDMethod(build_teacher(architecture, 3), architecture, 3, size, 3).train()
    spec = get_architecture(architecture)
    terms = method.loss_terms(torch.randn(2, 3, size, size))
    assert list(terms) == [spec.split_module, *spec.ghnd_stages]
    encoder = [p for p in method.model.encoder.parameters()]
    for name, term in terms.items():
        assert term.item() > 0, name
        grads = torch.autograd.grad(term, encoder, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} does not reach the encoder"
    assert not any(p.requires_grad for p in method.model.tail.parameters())
    assert not method.model.tail.training and not method.teacher_tail.training


def test_the_teacher_runs_once_per_batch_and_the_tail_stops_at_the_last_term():
    torch.manual_seed(0)
    teacher = build_teacher("densenet169", 3)
    method = GHNDMethod(teacher, "densenet169", 3, 32, 3).train()
    calls: dict[str, int] = {}
    stages = ("features.transition2", "features.transition3", "features.denseblock4", "features.norm5", "classifier")
    for prefix, root in (("teacher", teacher), ("student", method.model.tail)):
        for stage in stages:
            try:
                module = root.get_submodule(stage)
            except AttributeError:  # the student's tail starts after transition2
                continue
            key = f"{prefix}.{stage}"
            module.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
    method.training_loss(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    assert calls == {
        "teacher.features.transition2": 1,
        "teacher.features.transition3": 1,
        "teacher.features.denseblock4": 1,
        "student.features.transition3": 1,
        "student.features.denseblock4": 1,
    }  # nothing past denseblock4 runs on either side: no term uses norm5 or the logits


def test_ghnd_trains_only_the_head_and_leaves_the_tail_bit_identical(image_folder, tmp_path):
    cfg = compose_train_config(tiny_overrides("resnet50", "ghnd", image_folder), tmp_path)
    datamodule, method, trainer = setup_run(cfg)
    assert isinstance(method, GHNDMethod)
    head_before, tail_before = snapshot(method.model.head), snapshot(method.model.tail)
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in method.model.head.parameters()}
    results = fit_and_test(cfg, datamodule, method, trainer)
    assert results["method"] == "ghnd" and {"train/loss_layer2", "train/loss_layer4"} <= set(results["metrics"])
    for key, value in snapshot(method.model.tail).items():  # weights and batch-norm statistics
        assert torch.equal(value, tail_before[key]), key
    assert any(not torch.equal(value, head_before[key]) for key, value in snapshot(method.model.head).items())
    for key, value in method.teacher_tail.state_dict().items():  # still the teacher's own tail
        assert torch.equal(method.model.tail.state_dict()[key], value), key
    method.train()
    assert not method.model.tail.training and not method.teacher_tail.training and method.model.head.training
    assert load_split_artifacts(tmp_path / "artifacts").metadata["method"] == "ghnd"


def test_a_fused_ghnd_student_has_the_single_run_loss_and_exports_per_size(image_folder, tmp_path):
    torch.manual_seed(0)
    teacher = build_teacher("densenet169", 3)
    fused = FusedGHNDMethod(teacher, "densenet169", 3, 32, [3, 6])
    single = GHNDMethod(teacher, "densenet169", 3, 32, 6)
    single.model.head.load_state_dict(fused.students["b6"].head.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        targets = fused.teacher_targets(images)
        fused_loss = fused.student_loss(fused.students["b6"], images, targets)
        single_loss = torch.stack(list(single.loss_terms(images).values())).sum()
    torch.testing.assert_close(fused_loss, single_loss)

    overrides = [o for o in tiny_overrides("densenet169", "fused_ghnd", image_folder) if "bottleneck_channels" not in o]
    results = json.loads(
        json.dumps(train(compose_train_config([*overrides, "model.bottleneck_channels=[3,6]"], tmp_path)))
    )
    assert results["method"] == "ghnd" and set(results["models"]) == {"b3", "b6"}
    for name, size in (("b3", 3), ("b6", 6)):
        metadata = load_split_artifacts(tmp_path / "artifacts" / name).metadata
        assert (metadata["method"], metadata["bottleneck_channels"]) == ("ghnd", size)
