"""`python -m hnd_lightning.evaluate`: the training runs' own test on artifacts, trainer settings, label checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, make_image_folder

from hnd_lightning.data import ImageFolderDataModule
from hnd_lightning.models import build_student, build_teacher, with_quantized_bottleneck
from hnd_lightning.models.artifacts import load_split_artifacts, save_split_artifacts, split_metadata
from hnd_lightning.runs.evaluation import check_classes, evaluate
from hnd_lightning.runs.export import data_info

CLASSES = ["class0", "class1", "class2"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Artifacts of an untrained DenseNet-169 student (B = 3, 32 x 32) for the classes of `image_folder`."""
    torch.manual_seed(0)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    directory = tmp_path_factory.mktemp("artifacts")
    info = {**data_info(ImageFolderDataModule("unused", 3)), "resize_size": 32, "classes": CLASSES}
    save_split_artifacts(directory, student, split_metadata(student, "densenet169", 3, 3, 32, "hnd", **info))
    return directory


def evaluate_config(artifacts: Path, data_root: Path, output_dir: Path, *extra: str):
    overrides = [
        f"artifacts={artifacts}",
        f"data.root={data_root}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.holdout=1",
        "data.eval_batch_size=2",
        "trainer.accelerator=cpu",
        *extra,
    ]
    return compose_config("evaluate", overrides, output_dir)


def first_images(data_root: Path, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images and labels in the order evaluation reads `split`."""
    datamodule = ImageFolderDataModule(data_root, 3, 32, 32, holdout=1, num_workers=0, eval_batch_size=count)
    datamodule.setup()
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    return next(iter(loader))


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize(("split", "limit", "images"), [("test", 1, 2), ("val", 1.0, 3)])
def test_evaluate_runs_the_lightning_test_with_the_trainer_settings(
    artifacts, image_folder, tmp_path, split, limit, images
):
    results = evaluate(
        evaluate_config(artifacts, image_folder, tmp_path, f"split={split}", f"trainer.limit_test_batches={limit}")
    )
    # limit_test_batches=1 with batches of 2 tests 2 of the 6 test images; the val hold-out has 3
    assert results["images"] == images
    assert set(results["metrics"]) == {f"{split}/acc1", f"{split}/acc5", f"{split}_q8/acc1", f"{split}_q8/acc5"}
    model = load_split_artifacts(artifacts).model()
    batch, labels = first_images(image_folder, split, images)
    with torch.no_grad():
        assert results["metrics"][f"{split}/acc1"] == pytest.approx(top1(model(batch), labels))
        assert results["metrics"][f"{split}_q8/acc1"] == pytest.approx(
            top1(with_quantized_bottleneck(model)(batch), labels)
        )
    assert json.loads((tmp_path / "evaluation.json").read_text()) == results
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))  # the logger, as in training


def test_other_class_folders_are_refused_with_both_lists(artifacts, tmp_path):
    relabelled = make_image_folder(tmp_path / "data", per_class={"train": 2, "val": 1})
    for index, name in enumerate(["cat", "dog", "emu"]):
        for split in ("train", "val"):
            (relabelled / split / f"class{index}").rename(relabelled / split / name)
    with pytest.raises(ValueError) as refused:
        evaluate(evaluate_config(artifacts, relabelled, tmp_path / "refused"))
    message = str(refused.value)
    assert (
        "split.json classes: [class0, class1, class2]" in message and "dataset classes:    [cat, dog, emu]" in message
    )
    assert "allow_relabelled=true" in message
    assert not (tmp_path / "refused" / "evaluation.json").exists()
    # renamed folders of the same classes in the same order: evaluated when asked for explicitly
    results = evaluate(evaluate_config(artifacts, relabelled, tmp_path / "allowed", "allow_relabelled=true"))
    assert results["images"] == 3


def test_check_classes_compares_names_and_label_order():
    check_classes(CLASSES, list(CLASSES))
    with pytest.raises(
        ValueError, match=r"2 of 3 labels differ, first at label 0: 'class0' in training, 'class1' here"
    ):
        check_classes(CLASSES, ["class1", "class0", "class2"])
    with pytest.raises(ValueError, match="3 classes in training, 2 here"):
        check_classes(CLASSES, CLASSES[:2])
    check_classes(CLASSES, ["a", "b", "c"], allow_relabelled=True)
    check_classes(None, CLASSES)  # artifacts without class names: nothing to compare, a warning


def test_cli_prints_the_table_and_writes_evaluation_json(artifacts, image_folder, tmp_path):
    command = [
        sys.executable,
        "-m",
        "hnd_lightning.evaluate",
        f"artifacts={artifacts}",
        f"data.root={image_folder}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.holdout=1",
        "trainer.accelerator=cpu",
        f"paths.output_root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert written["images"] == 6 and written["payload_bytes_per_image"] == {"float32": 300, "uint8": 80}
    float_row = next(line for line in result.stdout.splitlines() if line.startswith("float32"))
    assert f"{100 * written['metrics']['test/acc1']:.2f}%" in float_row and float_row.rstrip().endswith("300")
