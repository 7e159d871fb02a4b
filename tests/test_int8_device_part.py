"""The 8-bit device part: deploy quantizes device.onnx with onnxruntime's static quantization (calibrated
on training images), reports top-1 of both device files, and the client runs the quantized file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_config, make_image_folder
from PIL import Image

pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')

from test_deploy import write_artifacts  # noqa: E402

from hnd_lightning.data import eval_transform  # noqa: E402
from hnd_lightning.deploy import deploy  # noqa: E402
from hnd_lightning.models.artifacts import load_split_artifacts  # noqa: E402
from hnd_lightning.models.quantization import with_quantized_bottleneck  # noqa: E402
from hnd_lightning.runtime.common.images import list_images  # noqa: E402
from hnd_lightning.runtime.export.int8 import INT8_DEVICE_FILE  # noqa: E402

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def int8_deployed(tmp_path_factory):
    """Artifacts (classes a, b, c), an ImageFolder with those classes, and deploy run with int8 enabled."""
    root = tmp_path_factory.mktemp("int8")
    artifacts = write_artifacts(root / "artifacts")
    images = make_image_folder(root / "images", classes=3, per_class={"train": 4, "val": 4}, size=40)
    for split in ("train", "val"):
        for index, name in enumerate(CLASSES):
            (images / split / f"class{index}").rename(images / split / name)
    overrides = [
        f"artifacts={artifacts}",
        "int8.enabled=true",
        f"int8.calibration_images={images / 'train'}",
        "int8.num_calibration_images=8",
        f"int8.eval_images={images / 'val'}",
        "triton.enabled=false",
    ]
    output_dir = root / "deploy"
    return artifacts, images, output_dir, deploy(compose_config("deploy", overrides, output_dir))


def test_deploy_writes_the_int8_device_part_and_its_accuracy_beside_float32(int8_deployed):
    artifacts, images, output_dir, description = int8_deployed
    assert json.loads((output_dir / "deploy.json").read_text()) == description
    entry = description["int8"]
    assert entry["file"] == INT8_DEVICE_FILE and (output_dir / INT8_DEVICE_FILE).is_file()
    assert entry["calibration"]["images"] == 8 and entry["bytes"] < entry["float32_bytes"]  # int8 weights
    comparison = entry["comparison"]
    assert comparison["images"] == 12 and 0 <= comparison["same_prediction"] <= 1
    assert comparison["device_ms_p50"]["float32"] > 0 and comparison["device_ms_p50"]["int8"] > 0
    # float32's top-1 is the in-process composed student's over the 8-bit link on the same images
    split = load_split_artifacts(artifacts)
    meta = split.metadata["input"]
    transform = eval_transform(meta["shape"][-1], meta["resize_size"], meta["mean"], meta["std"])
    model = with_quantized_bottleneck(split.model())
    items = list_images(images / "val", None, CLASSES)
    with torch.no_grad():
        hits = []
        for item in items:
            with Image.open(item.path) as image:
                hits.append(int(model(transform(image.convert("RGB"))[None]).argmax()) == item.label)
    assert comparison["top1"]["float32"] == pytest.approx(np.mean(hits))
    assert 0 <= comparison["top1"]["int8"] <= 1
    # the quantized encoder computes the same bottleneck up to its 8-bit arithmetic
    assert comparison["max_bottleneck_code_difference"] <= 32


def test_the_client_runs_the_int8_device_part(int8_deployed, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')
    from hnd_lightning.client import run_client
    from hnd_lightning.runtime.server.models import load_served_models
    from hnd_lightning.runtime.server.server import ServerSettings, ServerThread
    from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService

    artifacts, images, output_dir, _ = int8_deployed
    service = InferenceService(load_served_models(artifacts), BatchingSettings(max_batch_size=4))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        overrides = [f"artifacts={artifacts}", f"server=grpc://{server.grpc_url}", f"images={images / 'val'}"]
        overrides += ["num_images=6", "strategies=[split]", "teacher=null", "runtime=onnxruntime"]
        overrides += [f"deploy_dir={output_dir}", f"device_onnx={INT8_DEVICE_FILE}"]
        report = run_client(compose_config("client", overrides, tmp_path))
    assert INT8_DEVICE_FILE in report["device_part"]
    (row,) = report["summary"]
    assert row["images"] == 6 and row["device_ms_p50"] > 0 and row["bytes_sent"] > 3 * 5 * 5 + 5
    assert row["top1"] is not None and 0 <= row["top1"] <= 1


def test_int8_without_calibration_images_is_refused(int8_deployed, tmp_path):
    artifacts = int8_deployed[0]
    cfg = compose_config(
        "deploy", [f"artifacts={artifacts}", "int8.enabled=true", "triton.enabled=false"], tmp_path / "out"
    )
    with pytest.raises(ValueError, match=r"int8.calibration_images=<folder>"):
        deploy(cfg)
