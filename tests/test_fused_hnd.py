"""Fused multi-bottleneck HND: independent students, single-run equivalence and per-student artifacts."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import compose_train_config, tiny_overrides
from torch.nn import functional as F

from hnd_lightning.methods import FusedHNDMethod
from hnd_lightning.models import build_teacher
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.runs.training import build_method, fit_and_test, setup_run, train


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def short_run_overrides(image_folder, sizes: str, method: str = "fused_hnd", epochs: int = 1) -> list[str]:
    overrides = [
        o
        for o in tiny_overrides("densenet169", method, image_folder)
        if o != "debug=fast_dev_run" and not o.startswith("model.bottleneck_channels")
    ]
    return overrides + [
        f"model.bottleneck_channels={sizes}",
        "trainer.accelerator=cpu",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]


def test_updating_one_student_leaves_the_others_and_their_optimizer_states_unchanged():
    torch.manual_seed(0)
    teacher = build_teacher("densenet169", 3)
    method = FusedHNDMethod(
        teacher,
        "densenet169",
        3,
        32,
        [3, 6, 9],
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
    assert not any(p.requires_grad for p in method.model.tail.parameters())

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
    single_cfg = compose_train_config(short_run_overrides(image_folder, "3", "hnd"), tmp_path / "single_b3")
    fit_and_test(single_cfg, *setup_run(single_cfg))
    _, single_b6, _ = setup_run(
        compose_train_config(short_run_overrides(image_folder, "6", "hnd"), tmp_path / "single_b6")
    )

    cfg = compose_train_config(short_run_overrides(image_folder, "[3,6]"), tmp_path / "fused")
    datamodule, method, trainer = setup_run(cfg)
    assert isinstance(method, FusedHNDMethod)
    # same seed, same initial weights as the single run of that size
    for key, value in single_b6.model.head.state_dict().items():
        assert torch.equal(method.students["b6"].head.state_dict()[key], value), key
    results = fit_and_test(cfg, datamodule, method, trainer)

    written = json.loads(json.dumps(results))  # what train() writes as results.json: plain JSON
    assert written["bottleneck_channels"] == [3, 6] and written["method"] == "hnd"
    assert set(written["models"]) == {"b3", "b6"}
    assert [written["models"][name]["bottleneck_channels"] for name in ("b3", "b6")] == [3, 6]
    # each student counts its own head: the shared tail is frozen
    assert written["models"]["b6"]["trainable_parameters"] == sum(
        p.numel() for p in method.students["b6"].head.parameters()
    )
    for name in ("b3", "b6"):
        assert {f"val/{name}/acc1", f"test/{name}/acc1", f"test/{name}/acc5", f"train/{name}/loss"} <= set(
            results["metrics"]
        )
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
            "head.safetensors",
            "split.json",
            "tail.safetensors",
        ]
        with torch.no_grad():
            expected = method.students[name].eval()(x)
            torch.testing.assert_close(artifacts.model()(x), expected)
            torch.testing.assert_close(artifacts.tail(artifacts.decoder(artifacts.encoder(x))), expected)


@pytest.mark.parametrize("method", ["hnd", "kd", "naive"])
def test_a_list_of_sizes_with_a_single_student_method_names_the_fix(method, image_folder, tmp_path):
    overrides = [o for o in tiny_overrides("densenet169", method, image_folder) if not o.startswith("model.bottleneck")]
    cfg = compose_train_config(overrides + ["model.bottleneck_channels=[3,6]"], tmp_path)
    with pytest.raises(Exception, match=r"method=fused_hnd.*-m model.bottleneck_channels=3,6"):
        build_method(cfg)


def test_fused_hnd_with_one_size_is_a_single_student_run(image_folder, tmp_path):
    overrides = [o for o in tiny_overrides("densenet169", "fused_hnd", image_folder)]
    results = train(compose_train_config(overrides, tmp_path))
    assert list(results["models"]) == ["b3"] and "test/b3/acc1" not in results["metrics"]
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [
        "head.safetensors",
        "split.json",
        "tail.safetensors",
    ]


def test_repeated_sizes_are_rejected():
    with pytest.raises(ValueError, match="distinct sizes"):
        FusedHNDMethod(build_teacher("densenet169", 3), "densenet169", 3, 32, [3, 3])


class FirstStep(pl.Callback):
    """The first training step's backward passes and every trained parameter's gradient at its optimizer steps."""

    def __init__(self) -> None:
        self.backwards = 0
        self.gradients: dict[str, torch.Tensor] = {}

    def on_before_backward(self, trainer: pl.Trainer, method: FusedHNDMethod, loss: torch.Tensor) -> None:
        self.backwards += 1

    def on_before_optimizer_step(self, trainer: pl.Trainer, method: FusedHNDMethod, optimizer) -> None:
        self.gradients |= {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}


def first_step(image_folder, tmp_path, monkeypatch, processes: int) -> FirstStep:
    # the training step backs the summed loss once when it runs on several processes (DDP), else each
    # student's loss in turn; here both run in one process, the first with a world size made to read 2
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda trainer: processes))
    overrides = [*short_run_overrides(image_folder, "[3,6]"), "+trainer.fast_dev_run=1"]
    datamodule, method, trainer = setup_run(compose_train_config(overrides, tmp_path / f"world{processes}"))
    recorder = FirstStep()
    trainer.callbacks.append(recorder)
    trainer.fit(method, datamodule=datamodule)
    return recorder


def test_one_backward_of_the_summed_losses_gives_each_student_its_own_gradients(image_folder, tmp_path, monkeypatch):
    summed = first_step(image_folder, tmp_path, monkeypatch, 2)
    separate = first_step(image_folder, tmp_path, monkeypatch, 1)
    assert (summed.backwards, separate.backwards) == (1, 2)
    assert summed.gradients.keys() == separate.gradients.keys()
    assert {name.split(".")[1] for name in summed.gradients} == {"b3", "b6"}
    for name, gradient in separate.gradients.items():
        assert torch.equal(summed.gradients[name], gradient), name


def test_fused_hnd_refuses_16_mixed_naming_the_precisions_to_use(image_folder, tmp_path):
    from lightning.pytorch.plugins.precision import MixedPrecision

    cfg = compose_train_config(short_run_overrides(image_folder, "[3,6]"), tmp_path)
    datamodule, method, _ = setup_run(cfg)
    # what precision=16-mixed builds on a GPU (Lightning turns the flag into bf16-mixed on the CPU)
    trainer = pl.Trainer(accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu")], fast_dev_run=1, logger=False)
    with pytest.raises(ValueError, match=r"16-mixed.*trainer.precision=bf16-mixed.*or 32-true.*method=hnd"):
        trainer.fit(method, datamodule=datamodule)


class HeadsAtValidation(pl.Callback):
    """Each student's val acc1 and head weights after every validation epoch (sanity check excluded)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, tuple[float, dict[str, torch.Tensor]]]] = []

    def on_validation_end(self, trainer: pl.Trainer, method: FusedHNDMethod) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(
                {
                    name: (float(trainer.callback_metrics[f"val/{name}/acc1"]), snapshot(student.head))
                    for name, student in method.students.items()
                }
            )


def test_each_student_is_tested_and_exported_at_its_own_best_epoch(image_folder, tmp_path):
    # all 3 validation images; on this machine b3 peaks at epoch 0 and b6 at epoch 1, so the best
    # checkpoint (b3's) holds an older b6 head than the one b6 must be tested and exported with
    overrides = short_run_overrides(image_folder, "[3,6]", epochs=3) + [
        "method.optimizer.lr=0.01",
        "trainer.limit_val_batches=2",
    ]
    cfg = compose_train_config(overrides, tmp_path)
    datamodule, method, trainer = setup_run(cfg)
    capture = HeadsAtValidation()
    trainer.callbacks.append(capture)
    results = fit_and_test(cfg, datamodule, method, trainer)
    assert len(capture.epochs) == 3
    for name in ("b3", "b6"):
        accuracies = [epoch[name][0] for epoch in capture.epochs]
        best = accuracies.index(max(accuracies))  # the first of equal values, as ModelCheckpoint keeps
        assert (results["models"][name]["best_epoch"], results["models"][name]["best_val_acc1"]) == (
            best,
            accuracies[best],
        )
        best_head = capture.epochs[best][name][1]
        exported = load_split_artifacts(tmp_path / "artifacts" / name).head.state_dict()
        for key, value in best_head.items():
            assert torch.equal(exported[key], value), (name, key)
        # what was tested is what was exported
        for key, value in method.students[name].head.state_dict().items():
            assert torch.equal(value.cpu(), best_head[key]), (name, key)
    written = json.loads((tmp_path / "artifacts" / "students.json").read_text())
    assert {name: entry["best_epoch"] for name, entry in written.items()} == {
        name: entry["best_epoch"] for name, entry in results["models"].items()
    }


def _best(epoch: int, acc1: float) -> dict:
    return {"val_acc1": acc1, "epoch": epoch, "weights": {}}


def test_testing_the_best_checkpoint_keeps_the_later_bests_of_other_students():
    teacher = build_teacher("densenet169", 3)
    method = FusedHNDMethod(teacher, "densenet169", 3, 32, [3, 6])
    method.best = {"b3": _best(1, 0.6), "b6": _best(4, 0.8)}
    # the best checkpoint is b3's best epoch (1); it holds b6's best up to then (epoch 0)
    checkpoint = {"best_models": {"b3": _best(1, 0.6), "b6": _best(0, 0.5)}}
    method.on_load_checkpoint(checkpoint)
    assert {name: entry["epoch"] for name, entry in method.best.items()} == {"b3": 1, "b6": 4}
    # resuming into a fresh module takes the checkpoint's record as it is; on a tie the earlier epoch stays
    resumed = FusedHNDMethod(teacher, "densenet169", 3, 32, [3, 6])
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_load_checkpoint({"best_models": {"b6": _best(3, 0.5)}})
    assert {name: entry["epoch"] for name, entry in resumed.best.items()} == {"b3": 1, "b6": 0}
