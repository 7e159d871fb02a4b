"""deploy's Triton model repository: config.pbtxt parsed with Triton's own model-config schema."""

from __future__ import annotations

import pytest
from conftest import compose_config

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason='needs the serve extra: pip install -e ".[serve]"'
)
pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')

from google.protobuf import text_format  # noqa: E402
from test_serve import split_artifacts  # noqa: E402

from hnd_lightning.deploy import deploy  # noqa: E402
from hnd_lightning.runtime.export.triton_repository import model_config  # noqa: E402


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_deploy_writes_a_triton_repository_with_dynamic_batching(tmp_path_factory, tmp_path):
    cfg = compose_config(
        "deploy",
        [
            f"artifacts={split_artifacts(tmp_path_factory)}",
            "verify.enabled=false",
            "triton.max_batch_size=32",
            "triton.max_queue_delay_ms=1.5",
            "triton.max_queue=10",
        ],
        tmp_path,
    )
    description = deploy(cfg)
    model_dir = tmp_path / "model_repository" / "server"
    assert description["model_repository"] == str(tmp_path / "model_repository")
    assert (model_dir / "1" / "model.onnx").read_bytes() == (tmp_path / "server.onnx").read_bytes()
    config = parse((model_dir / "config.pbtxt").read_text())
    assert config.name == "server" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    inputs = {tensor.name: tensor for tensor in config.input}
    assert list(inputs) == ["bottleneck", "scale", "zero_point"]
    assert inputs["bottleneck"].data_type == model_config_pb2.TYPE_UINT8 and list(inputs["bottleneck"].dims) == [
        3,
        5,
        5,
    ]
    assert not inputs["bottleneck"].HasField("reshape")
    # one value per image: [N] in the ONNX file, declared [1] with an empty reshape
    for name, data_type in (("scale", model_config_pb2.TYPE_FP32), ("zero_point", model_config_pb2.TYPE_UINT8)):
        assert inputs[name].data_type == data_type and list(inputs[name].dims) == [1]
        assert inputs[name].HasField("reshape") and list(inputs[name].reshape.shape) == []
    (output,) = config.output
    assert (output.name, output.data_type, list(output.dims)) == ("logits", model_config_pb2.TYPE_FP32, [3])
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 10


def test_model_config_refuses_a_dtype_triton_is_not_told_about():
    tensor = {"name": "x", "shape": ["batch", 4], "dtype": "complex64"}
    with pytest.raises(ValueError, match="complex64"):
        model_config([tensor], [tensor])
    text = model_config(
        [{"name": "x", "shape": ["batch", 4], "dtype": "float16"}],
        [{"name": "y", "shape": ["batch", 2], "dtype": "float32"}],
        max_batch_size=4,
    )
    assert parse(text).input[0].data_type == model_config_pb2.TYPE_FP16
