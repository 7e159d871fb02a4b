"""What deploy writes for Triton's Python backend, KServe and MLServer, checked without those servers:
the files and their config, and the Triton model's batching run with a stand-in for Triton's module."""

from __future__ import annotations

import importlib
import json
import re
import sys
import types

import numpy as np
import pytest
from conftest import compose_config

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason='needs the serve extra: pip install -e ".[serve]"'
)
pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')

from google.protobuf import text_format  # noqa: E402
from test_serve import random_payload, split_artifacts  # noqa: E402

from hnd_lightning.deploy import deploy  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    output = tmp_path_factory.mktemp("hosted_deploy")
    artifacts = split_artifacts(tmp_path_factory)
    cfg = compose_config(
        "deploy",
        [f"artifacts={artifacts}", "verify.enabled=false", "triton.max_queue=7", "hosted.intra_op_threads=2"],
        output,
    )
    return artifacts, output, deploy(cfg)


def test_deploy_writes_a_python_backend_repository_a_kserve_server_and_an_mlserver_folder(deployed):
    _, output, description = deployed
    model_dir = output / "triton_python_repository" / "server"
    assert description["hosted"] == {
        "triton_python": str(output / "triton_python_repository"),
        "kserve": str(output / "kserve"),
        "mlserver": str(output / "mlserver"),
    }
    server_onnx = (output / "server.onnx").read_bytes()
    for folder in (model_dir / "1", output / "kserve", output / "mlserver" / "server"):
        assert (folder / "model.onnx").read_bytes() == server_onnx
        assert "class SplitServerPart" in (folder / "split_server_part.py").read_text()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "python" and not config.platform and config.max_batch_size == 16
    assert [(group.count, group.kind) for group in config.instance_group] == [
        (1, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert [tensor.name for tensor in config.input] == ["bottleneck", "scale", "zero_point"]
    assert list(config.input[1].dims) == [1] and list(config.input[1].reshape.shape) == []
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 7
    assert config.parameters["intra_op_threads"].string_value == "2"
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()
    assert "kserve.ModelServer().start" in (output / "kserve" / "kserve_server.py").read_text()
    assert json.loads((output / "kserve" / "settings.json").read_text()) == {
        "model_name": "server",
        "intra_op_threads": 2,
    }
    settings = json.loads((output / "mlserver" / "settings.json").read_text())
    assert settings == {"host": "127.0.0.1", "parallel_workers": 0}
    model_settings = json.loads((output / "mlserver" / "server" / "model-settings.json").read_text())
    assert model_settings["implementation"] == "mlserver_runtime.SplitServerRuntime"
    assert model_settings["inputs"][0] == {"name": "bottleneck", "datatype": "UINT8", "shape": [-1, 3, 5, 5]}
    assert model_settings["parameters"]["extra"] == {"intra_op_threads": 2}


class FakeTriton(types.ModuleType):
    """The part of `triton_python_backend_utils` that model.py uses."""

    class TritonError:
        INVALID_ARG = "INVALID_ARG"

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.output_tensors, self.error = list(output_tensors), error

    def __init__(self):
        super().__init__("triton_python_backend_utils")

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return types.SimpleNamespace(as_numpy=lambda: request[name])


def test_the_triton_model_checks_each_request_then_runs_the_good_ones_as_one_batch(deployed, monkeypatch):
    artifacts, output, _ = deployed
    version_dir = output / "triton_python_repository" / "server" / "1"
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", FakeTriton())
    monkeypatch.syspath_prepend(str(version_dir))
    monkeypatch.delitem(sys.modules, "split_server_part", raising=False)
    module = importlib.import_module("model")
    monkeypatch.delitem(sys.modules, "model")
    model = module.TritonPythonModel()
    config = (version_dir.parent / "config.pbtxt").read_text()
    model.initialize(
        {
            "model_config": json.dumps({"parameters": {}}),
            "model_repository": str(version_dir.parent),
            "model_version": "1",
        }
    )
    assert "intra_op_threads" in config
    runs = []
    session_run = model.part.session.run
    model.part.session.run = lambda names, feed: runs.append(len(feed["bottleneck"])) or session_run(names, feed)
    rng = np.random.default_rng(0)
    # as Triton hands them: per-image values [N, 1] (declared dims [1]), one request with a NaN scale
    requests = [random_payload(rng, rows) for rows in (2, 1, 3)]
    requests[1]["scale"] = np.array([np.nan], np.float32)
    for request in requests:
        request["scale"], request["zero_point"] = request["scale"][:, None], request["zero_point"][:, None]
    responses = model.execute(requests)
    assert runs == [5]  # the two good requests: one onnxruntime run of 2 + 3 rows
    assert responses[1].error.code == "INVALID_ARG" and "'scale' must be finite" in responses[1].error.message
    served = load_served_models(artifacts)["server"]
    for index in (0, 2):
        flat = {
            name: array.reshape(len(array), -1).squeeze(1) if name != "bottleneck" else array
            for name, array in requests[index].items()
        }
        (tensor,) = responses[index].output_tensors
        assert responses[index].error is None and tensor.name == "logits"
        np.testing.assert_allclose(tensor.array, served.run(flat)["logits"], atol=1e-5, rtol=0)


def test_the_server_part_names_what_is_wrong_with_a_request(deployed, monkeypatch):
    _, output, _ = deployed
    monkeypatch.syspath_prepend(str(output / "kserve"))
    monkeypatch.delitem(sys.modules, "split_server_part", raising=False)
    split_server_part = importlib.import_module("split_server_part")
    part = split_server_part.SplitServerPart(output / "kserve" / "model.onnx")
    good = random_payload(np.random.default_rng(1), 2)
    assert part.specs()[0][0] == {"name": "bottleneck", "datatype": "UINT8", "shape": [-1, 3, 5, 5]}
    cases = {
        "the model takes": {**{k: v for k, v in good.items() if k != "scale"}, "scales": good["scale"]},
        "has dtype float64": {**good, "scale": good["scale"].astype(np.float64)},
        "has shape [2, 3, 5, 4]": {**good, "bottleneck": good["bottleneck"][..., :4]},
        "disagree on the batch size": {**good, "zero_point": good["zero_point"][:1]},
        "finite and positive": {**good, "scale": -good["scale"]},
    }
    for phrase, arrays in cases.items():
        with pytest.raises(split_server_part.InvalidInput, match=re.escape(phrase)):
            part.check(arrays)
    logits = part.run_requests([part.check(good), part.check(random_payload(np.random.default_rng(2), 3))])
    assert [array.shape for array in logits] == [(2, 3), (3, 3)]
