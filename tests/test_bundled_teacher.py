"""The teacher shipped with the package: its file, its hash check, its recorded accuracy, its refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from hnd_lightning.data import BundledDataModule
from hnd_lightning.files import sha256_of
from hnd_lightning.methods.schedules import WarmupCosineLR
from hnd_lightning.models import build_teacher
from hnd_lightning.models.bundled_teacher import (
    RECORD_FILE,
    WEIGHTS_FILE,
    BundledTeacherError,
    bundled_record,
    load_bundled_state_dict,
)


def test_shipped_weights_match_their_hash_and_reproduce_the_recorded_test_accuracy(tmp_path):
    record = bundled_record()
    assert sha256_of(WEIGHTS_FILE) == record["sha256"]
    teacher = build_teacher("densenet169", 10, weights="bundled", input_size=32)
    data = BundledDataModule(
        root=tmp_path / "bundled",
        num_classes=10,
        input_size=record["input_size"],
        resize_size=record["resize_size"],
        eval_batch_size=200,
        num_workers=0,
        mean=[0.2873] * 3,
        std=[0.3544] * 3,
    )
    data.setup("test")
    correct = total = 0
    with torch.no_grad():
        for images, labels in data.test_dataloader():
            correct += int((teacher(images).argmax(1) == labels).sum())
            total += len(labels)
    assert total == 1000
    # The record's number is this very computation on the float16 file; one image of slack for kernels.
    assert abs(correct / total - record["test_acc1"]) <= 0.001, (correct / total, record["test_acc1"])


def test_a_corrupted_copy_is_refused(tmp_path):
    damaged = tmp_path / WEIGHTS_FILE.name
    shutil.copy(WEIGHTS_FILE, damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(damaged.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundledTeacherError, match="corrupt or were replaced"):
        load_bundled_state_dict("densenet169", 10, 32, weights_file=damaged, record_file=RECORD_FILE)


@pytest.mark.parametrize(
    ("architecture", "num_classes", "input_size", "named"),
    [
        ("resnet152", 10, 32, "architecture='resnet152'"),
        ("densenet169", 5, 32, "num_classes=5"),
        ("densenet169", 10, 224, "input_size=224"),
    ],
)
def test_a_setting_it_was_not_trained_for_is_refused_by_name(architecture, num_classes, input_size, named):
    with pytest.raises(BundledTeacherError, match=named):
        build_teacher(architecture, num_classes, weights="bundled", input_size=input_size)


def test_warmup_cosine_schedule_rises_then_decays_without_reaching_zero():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = WarmupCosineLR(optimizer, max_epochs=10, warmup_epochs=2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.1)
    assert all(later < earlier for earlier, later in zip(rates[2:], rates[3:]))
    assert 0 < rates[-1] < 0.01
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosineLR(optimizer, max_epochs=3, warmup_epochs=3)
