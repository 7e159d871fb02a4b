"""ONNX device and server parts: exported from the real config, checked with onnxruntime, run without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD
from hnd_lightning.deploy import deploy
from hnd_lightning.models import build_student, build_teacher
from hnd_lightning.models.artifacts import load_split_artifacts, save_split_artifacts, split_metadata
from hnd_lightning.models.quantization import with_quantized_bottleneck

pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')


def write_artifacts(directory: Path, architecture: str = "densenet169", input_size: int = 32) -> Path:
    """Split artifacts of a seeded random student with 3 classes and B = 3, as a finished run writes them."""
    torch.manual_seed(0)
    student, _ = build_student(build_teacher(architecture, 3), architecture, 3, input_size)
    # give the batch norms non-trivial statistics, so the logits are not all near zero
    with torch.no_grad():
        student.train()(torch.randn(8, 3, input_size, input_size) * 2)
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    metadata = split_metadata(
        student.eval(), architecture, 3, 3, input_size, "hnd", normalization, input_size, ["a", "b", "c"]
    )
    save_split_artifacts(directory, student, metadata)
    return directory


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("run") / "artifacts")


@pytest.fixture(scope="module")
def deployed(artifacts, tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("deploy")
    cfg = compose_config("deploy", [f"artifacts={artifacts}", "verify.batch_size=3"], output_dir)
    return output_dir, deploy(cfg)


def test_deploy_writes_both_onnx_files_and_their_description(deployed):
    output_dir, description = deployed
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "deploy.json",
        "device.onnx",
        "kserve",
        "mlserver",
        "model_repository",
        "server.onnx",
        "triton_python_repository",
    ]
    assert json.loads((output_dir / "deploy.json").read_text()) == description
    assert [t["name"] for t in description["device"]["outputs"]] == ["bottleneck", "scale", "zero_point"]
    assert description["device"]["outputs"][0] == {"name": "bottleneck", "shape": ["batch", 3, 5, 5], "dtype": "uint8"}
    assert description["server"]["outputs"] == [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}]
    assert description["payload_bytes_per_image"] == 3 * 5 * 5 + 5
    assert description["classes"] == ["a", "b", "c"]
    # the device part is the tiny encoder; the server part holds the decoder and the DenseNet tail
    assert (output_dir / "device.onnx").stat().st_size * 50 < (output_dir / "server.onnx").stat().st_size


def test_onnxruntime_matches_pytorch(deployed, capsys):
    check = deployed[1]["verification"]
    assert check["max_abs_logit"] > 1e-3  # a meaningful comparison, not of all-zero logits
    assert check["max_abs_logit_difference"] <= 1e-4 * max(1.0, check["max_abs_logit"])
    assert check["server_max_abs_logit_difference"] <= 1e-4 * max(1.0, check["max_abs_logit"])
    assert check["max_bottleneck_code_difference"] <= 1


RUN_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # importing torch or this package now fails
sys.modules["hnd_lightning"] = None
import numpy as np, onnxruntime as ort
folder, images = sys.argv[1], np.load(sys.argv[2])
description = json.load(open(folder + "/deploy.json"))
device = ort.InferenceSession(folder + "/" + description["device"]["file"], providers=["CPUExecutionProvider"])
server = ort.InferenceSession(folder + "/" + description["server"]["file"], providers=["CPUExecutionProvider"])
payload = device.run(None, {"image": images})
logits = server.run(None, {t["name"]: value for t, value in zip(description["server"]["inputs"], payload)})[0]
print(json.dumps({"logits": logits.tolist(), "payload_dtypes": [str(p.dtype) for p in payload]}))
"""


def test_the_onnx_parts_run_without_torch_or_this_package(deployed, artifacts, tmp_path):
    output_dir, _ = deployed
    images = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, str(output_dir), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["payload_dtypes"] == ["uint8", "float32", "uint8"]
    with torch.no_grad():
        expected = with_quantized_bottleneck(load_split_artifacts(artifacts).model())(torch.from_numpy(images))
    torch.testing.assert_close(
        torch.tensor(answer["logits"]), expected, atol=1e-4 * max(1.0, expected.abs().max().item()), rtol=0
    )
