"""The 8-bit link: round-trip error, shapes and dtypes, and accuracy of the quantized student on real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config, compose_train_config, tiny_overrides

from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import (
    QuantizeDequantize,
    dequantize,
    quantize,
    split_parts,
    with_quantized_bottleneck,
)
from hnd_lightning.runs.evaluation import evaluate
from hnd_lightning.runs.training import train


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(5, 12, 29, 29) * 4,
        lambda: torch.rand(3, 3, 7, 7) + 2.0,  # all positive: the range is stretched to include 0
        lambda: -torch.rand(2, 6, 5, 5) * 1e-3,  # all negative and tiny
        lambda: torch.zeros(2, 3, 4, 4),
    ],
)
def test_round_trip_error_is_at_most_half_a_step_per_image(make):
    x = make()
    payload = quantize(x)
    error = (payload.dequantize() - x).abs().flatten(1).amax(dim=1)
    assert torch.all(error <= payload.scale / 2 * (1 + 1e-5) + 1e-7)
    # zero is always exactly representable
    assert torch.all(dequantize(payload.values, payload.scale, payload.zero_point)[x == 0] == 0)


def test_shapes_and_dtypes_are_preserved_and_each_image_has_its_own_code():
    x = torch.randn(4, 12, 29, 29)
    x[1] *= 100  # one image with a wide range must not coarsen the others
    payload = quantize(x)
    assert payload.values.shape == x.shape and payload.values.dtype == torch.uint8
    assert payload.scale.shape == (4,) and payload.scale.dtype == torch.float32
    assert payload.zero_point.shape == (4,) and payload.zero_point.dtype == torch.uint8
    assert payload.dequantize().shape == x.shape and payload.dequantize().dtype == torch.float32
    assert payload.nbytes_per_image() == 12 * 29 * 29 + 5
    alone = quantize(x[2:3])
    assert torch.equal(alone.values[0], payload.values[2]) and torch.equal(alone.scale[0], payload.scale[2])
    half = x.half()
    assert QuantizeDequantize()(half).dtype == torch.float16 and QuantizeDequantize()(half).shape == x.shape


def test_device_and_server_parts_compose_to_the_quantized_model(tmp_path):
    from hnd_lightning.models import build_student, build_teacher

    torch.manual_seed(0)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    student.eval()
    x = torch.randn(2, 3, 32, 32)
    device, server = split_parts(student)
    values, scale, zero_point = device(x)
    assert values.dtype == torch.uint8 and values.shape == (2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(server(values, scale, zero_point), with_quantized_bottleneck(student)(x))
        float_device, float_server = split_parts(student, quantized=False)
        torch.testing.assert_close(float_server(float_device(x)), student(x))


def test_the_8_bit_test_under_bf16_autocast_computes_what_the_bf16_server_computes():
    from hnd_lightning.models import build_student, build_teacher

    torch.manual_seed(0)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    student.eval()
    x = torch.randn(2, 3, 32, 32)
    device, server = split_parts(student)
    decoder_inputs = []
    student.decoder.register_forward_pre_hook(lambda module, args: decoder_inputs.append(args[0].dtype))
    # precision=bf16-mixed tests under autocast; `serve bf16_autocast=true` runs its server part under autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tested = with_quantized_bottleneck(student)(x)
        served = server(*device(x))
    # the dequantized tensor reaches the decoder in float32 on both sides, so the logits agree to the bit
    assert decoder_inputs == [torch.float32, torch.float32]
    assert torch.equal(tested, served)


def _evaluate_config(artifacts: Path, data_root: Path, output_dir: Path):
    overrides = [
        f"artifacts={artifacts}",
        f"data.root={data_root}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.eval_batch_size=4",
        "trainer.accelerator=cpu",
    ]
    return compose_config("evaluate", overrides, output_dir)


def test_quantized_accuracy_on_real_images_from_train_and_from_evaluate(image_folder, tmp_path):
    results = train(
        compose_train_config(
            tiny_overrides("densenet169", "hnd", image_folder, ["test_quantized=true"]), tmp_path / "run"
        )
    )
    written = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert {"test/acc1", "test/acc5", "test_q8/acc1", "test_q8/acc5"} <= set(written)
    assert written["test_q8/acc1"] == results["metrics"]["test_q8/acc1"] == results["models"]["b3"]["test_q8_acc1"]

    evaluation = evaluate(_evaluate_config(tmp_path / "run" / "artifacts", image_folder, tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text()) == evaluation
    # 3 classes x 2 real JPEGs in val/; recount the quantized top-1 by hand from the same pixels
    assert evaluation["images"] == 6
    model = load_split_artifacts(tmp_path / "run" / "artifacts").model()
    from hnd_lightning.data import ImageFolderDataModule

    datamodule = ImageFolderDataModule(image_folder, 3, 32, 32, holdout=1, num_workers=0, eval_batch_size=6)
    datamodule.setup()
    images, labels = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        quantized_logits = with_quantized_bottleneck(model)(images)
        float_logits = model(images)
    correct = (quantized_logits.argmax(1) == labels).float().mean().item()
    # training tested one batch (fast_dev_run, eval batch 2); its quantized test covered the same images
    assert written["test_q8/acc1"] == pytest.approx(
        (quantized_logits[:2].argmax(1) == labels[:2]).float().mean().item()
    )
    assert evaluation["metrics"]["test_q8/acc1"] == pytest.approx(correct)
    assert evaluation["metrics"]["test/acc1"] == pytest.approx((float_logits.argmax(1) == labels).float().mean().item())
    # the 8-bit link changes the logits, but only a little
    difference = (quantized_logits - float_logits).abs().max().item()
    assert 0 < difference < 0.1 * float_logits.abs().max().item()
    assert evaluation["payload_bytes_per_image"] == {"float32": 4 * 3 * 5 * 5, "uint8": 3 * 5 * 5 + 5}


def test_fused_runs_get_quantized_metrics_per_student(image_folder, tmp_path):
    overrides = [
        o
        for o in tiny_overrides("densenet169", "fused_hnd", image_folder)
        if not o.startswith("model.bottleneck_channels")
    ]
    results = train(
        compose_train_config(overrides + ["model.bottleneck_channels=[3,6]", "test_quantized=true"], tmp_path)
    )
    metrics = results["metrics"]
    # recount each student's 8-bit top-1 on the batch the test ran (fast_dev_run: the first 2 test images)
    from hnd_lightning.data import ImageFolderDataModule

    datamodule = ImageFolderDataModule(image_folder, 3, 32, 32, holdout=1, num_workers=0, eval_batch_size=2)
    datamodule.setup()
    images, labels = next(iter(datamodule.test_dataloader()))
    for student in ("b3", "b6"):
        model = load_split_artifacts(tmp_path / "artifacts" / student).model()
        with torch.no_grad():
            correct = (with_quantized_bottleneck(model)(images).argmax(1) == labels).float().mean().item()
        assert metrics[f"test_q8/{student}/acc1"] == pytest.approx(correct)
        assert results["models"][student]["test_q8_acc1"] == metrics[f"test_q8/{student}/acc1"]
    # the run's headline metrics are its first student's
    assert metrics["test_q8/acc1"] == metrics["test_q8/b3/acc1"]
