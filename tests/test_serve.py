"""The edge server on the Open Inference Protocol: Triton's own clients, bad input, concurrency, the queue.

One in-process server (REST + gRPC on free 127.0.0.1 ports) of a seeded random DenseNet-169 student
at 32 x 32 (B = 3, 3 classes) with a random-weight teacher serves most tests; every answer is checked
against the same parts run in this process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

tritonclient_http = pytest.importorskip("tritonclient.http", reason='needs the serve extra: pip install -e ".[serve]"')
import tritonclient.grpc as tritonclient_grpc  # noqa: E402
import urllib3  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from hnd_lightning.models import build_student, build_teacher  # noqa: E402
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata  # noqa: E402
from hnd_lightning.runtime.common.protocol import InferenceError, TensorSpec, serialize_bytes  # noqa: E402
from hnd_lightning.runtime.common.rest_codec import HEADER_LENGTH  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.server.batcher import DynamicBatcher  # noqa: E402
from hnd_lightning.runtime.server.models import ServedModel, load_served_models  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402

MAX_REQUEST_BYTES = 64 * 1024
CLASSES = ["a", "b", "c"]


def split_artifacts(tmp_path_factory, input_size: int = 32) -> Path:
    """Artifacts of a seeded random DenseNet-169 student (B = 3, classes a/b/c), written once per session."""
    directory = tmp_path_factory.getbasetemp() / f"serve_artifacts_{input_size}"
    if not (directory / "split.json").is_file():
        torch.manual_seed(0)
        student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, input_size)
        with torch.no_grad():  # non-trivial batch-norm statistics, so logits differ between inputs
            student.train()(torch.randn(8, 3, input_size, input_size) * 2)
        normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        metadata = split_metadata(
            student.eval(), "densenet169", 3, 3, input_size, "hnd", normalization, input_size, CLASSES
        )
        save_split_artifacts(directory, student, metadata)
    return directory


def random_payload(rng: np.random.Generator, rows: int = 1) -> dict[str, np.ndarray]:
    return {
        "bottleneck": rng.integers(0, 256, (rows, 3, 5, 5), dtype=np.uint8),
        "scale": rng.uniform(0.01, 0.2, rows).astype(np.float32),
        "zero_point": rng.integers(0, 256, rows, dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    models = load_served_models(split_artifacts(tmp_path_factory), teacher="random")
    service = InferenceService(
        models, BatchingSettings(max_batch_size=8, max_delay_ms=0.0, max_queue=64), MAX_REQUEST_BYTES
    )
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        yield server, models


def expected_logits(models, payload) -> np.ndarray:
    return models["server"].run({name: array.copy() for name, array in payload.items()})["logits"]


def tritonclient_inputs(module, payload):
    inputs = []
    for name, array in payload.items():
        tensor = module.InferInput(
            name, list(array.shape), {"bottleneck": "UINT8", "scale": "FP32", "zero_point": "UINT8"}[name]
        )
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_tritonclient_http_and_grpc_get_the_in_process_logits(served):
    server, models = served
    http = tritonclient_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    grpc_client = tritonclient_grpc.InferenceServerClient(server.grpc_url)
    for client in (http, grpc_client):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("server")
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    metadata = http.get_model_metadata("server")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("bottleneck", "UINT8", [-1, 3, 5, 5]),
        ("scale", "FP32", [-1]),
        ("zero_point", "UINT8", [-1]),
    ]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    assert [t.name for t in grpc_client.get_model_metadata("teacher").inputs] == ["image"]
    payload = random_payload(np.random.default_rng(1), rows=2)
    expected = expected_logits(models, payload)
    assert np.abs(expected).max() > 1e-4  # a meaningful comparison
    binary = http.infer("server", tritonclient_inputs(tritonclient_http, payload))
    as_json = http.infer(
        "server",
        tritonclient_inputs(tritonclient_http, payload),
        outputs=[tritonclient_http.InferRequestedOutput("logits", binary_data=False)],
    )
    over_grpc = grpc_client.infer("server", tritonclient_inputs(tritonclient_grpc, payload))
    for result in (binary, as_json, over_grpc):
        np.testing.assert_allclose(result.as_numpy("logits"), expected, atol=1e-5, rtol=0)
    assert "binary_data_size" in binary.get_response()["outputs"][0]["parameters"]
    assert "data" in as_json.get_response()["outputs"][0]
    parameters = binary.get_response()["parameters"]
    assert parameters["batch_size"] == 2 and parameters["compute_ms"] > 0 and parameters["queue_ms"] >= 0
    assert over_grpc.get_response().parameters["compute_ms"].double_param > 0


def test_json_tensors_and_typed_grpc_contents_are_served_too(served):
    server, models = served
    payload = random_payload(np.random.default_rng(2))
    expected = expected_logits(models, payload)
    over_json = connect(server.http_url, binary=False).infer("server", payload, ["logits"])
    np.testing.assert_allclose(over_json.outputs["logits"], expected, atol=1e-5, rtol=0)
    request = service_pb2.ModelInferRequest(model_name="server")
    request.inputs.add(name="bottleneck", datatype="UINT8", shape=[1, 3, 5, 5]).contents.uint_contents.extend(
        payload["bottleneck"].reshape(-1).tolist()
    )
    request.inputs.add(name="scale", datatype="FP32", shape=[1]).contents.fp32_contents.extend(
        payload["scale"].tolist()
    )
    request.inputs.add(name="zero_point", datatype="UINT8", shape=[1]).contents.uint_contents.extend(
        payload["zero_point"].tolist()
    )
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    logits = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(1, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- malformed requests
def rest_body(tensors: list[tuple[str, str, list[int], bytes]], header_extra: dict | None = None) -> tuple[bytes, int]:
    """A binary-extension body from (name, datatype, shape, raw bytes) tuples; returns it and the JSON size."""
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
            for n, d, s, raw in tensors
        ],
        **(header_extra or {}),
    }
    header_bytes = json.dumps(header).encode()
    return header_bytes + b"".join(raw for *_, raw in tensors), len(header_bytes)


GOOD = [
    ("bottleneck", "UINT8", [1, 3, 5, 5], bytes(range(75))),
    ("scale", "FP32", [1], np.float32(0.1).tobytes()),
    ("zero_point", "UINT8", [1], b"\x07"),
]


def with_tensor(index: int, **changes) -> list[tuple]:
    tensors = [list(t) for t in GOOD]
    for key, value in changes.items():
        tensors[index][("name", "datatype", "shape", "raw").index(key)] = value
    return [tuple(t) for t in tensors]


def malformed_rest_cases() -> dict[str, tuple[str, bytes, dict, str]]:
    """case -> (model, body, headers, a phrase the error must contain)."""
    cases = {}

    def add(name, tensors, phrase, mutate=None):
        body, json_size = rest_body(tensors)
        headers = {HEADER_LENGTH: str(json_size)}
        if mutate:
            body, headers = mutate(body, headers)
        cases[name] = ("server", body, headers, phrase)

    add("wrong input name", with_tensor(1, name="scales"), "unknown ['scales']")
    add("wrong datatype", with_tensor(1, datatype="FP64", raw=np.float64(0.1).tobytes()), "datatype FP64")
    add("wrong shape", with_tensor(0, shape=[1, 3, 5, 4], raw=bytes(60)), "shape [1, 3, 5, 4]")
    add("binary_data_size against shape", with_tensor(1, raw=bytes(8)), "needs 4")
    add("extra bytes after the inputs", GOOD, "add up to", lambda b, h: (b + b"xx", h))
    add("truncated body", GOOD, "truncated body", lambda b, h: (b[:-3], h))
    add(
        "JSON header longer than the body",
        GOOD,
        "cannot be longer than the body",
        lambda b, h: (b, {HEADER_LENGTH: str(len(b) + 10)}),
    )
    add(
        "invalid JSON header",
        GOOD,
        "not valid JSON",
        lambda b, h: (b"{oops" + b, {HEADER_LENGTH: str(int(h[HEADER_LENGTH]) + 5)}),
    )
    add(
        "body over max_request_bytes",
        with_tensor(0, shape=[1000, 3, 5, 5], raw=bytes(75_000)),
        "exceeds max_request_bytes",
    )
    add("NaN scale", with_tensor(1, raw=np.float32("nan").tobytes()), "'scale' must be finite")
    add("infinite scale", with_tensor(1, raw=np.float32("inf").tobytes()), "'scale' must be finite")
    body, json_size = rest_body([("image", "BYTES", [1], serialize_bytes([b"\xff\xd8 this is no JPEG"]))])
    cases["undecodable JPEG"] = ("teacher", body, {HEADER_LENGTH: str(json_size)}, "do not decode as an image")
    return cases


def test_an_unknown_model_gets_404_and_not_found_as_triton_kserve_and_mlserver_answer(served):
    server, _ = served
    body, size = rest_body(GOOD)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.server.http_port, retries=False)
    for method, path in (
        ("POST", "/v2/models/nope/infer"),
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
    ):
        response = pool.request(
            method, path, body=body if method == "POST" else None, headers={HEADER_LENGTH: str(size)}
        )
        assert response.status == 404 and "unknown model 'nope'" in json.loads(response.data)["error"], path
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call in (
            lambda: stub.ModelInfer(grpc_request("nope", GOOD), timeout=30),
            lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), timeout=30),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in raised.value.details()


@pytest.mark.parametrize("case", list(malformed_rest_cases()))
def test_malformed_rest_requests_get_400_naming_the_problem_and_the_next_is_served(served, case):
    server, models = served
    model, body, headers, phrase = malformed_rest_cases()[case]
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.server.http_port, retries=False)
    response = pool.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
    assert response.status == 400
    assert phrase in json.loads(response.data)["error"]
    payload = random_payload(np.random.default_rng(3))
    answer = connect(server.http_url).infer("server", payload, ["logits"])
    np.testing.assert_allclose(answer.outputs["logits"], expected_logits(models, payload), atol=1e-5, rtol=0)


def grpc_request(model: str, tensors: list[tuple]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    "model, tensors, phrase",
    [
        ("server", with_tensor(2, name="zero"), "missing ['zero_point']"),
        ("server", with_tensor(0, datatype="INT8"), "datatype INT8"),
        ("server", with_tensor(0, shape=[1, 5, 3, 5]), "shape [1, 5, 3, 5]"),
        ("server", with_tensor(0, raw=bytes(70)), "needs 75"),
        ("server", with_tensor(0, shape=[1000, 3, 5, 5], raw=bytes(75_000)), "exceeds max_request_bytes"),
        ("server", with_tensor(1, raw=np.float32("nan").tobytes()), "'scale' must be finite"),
        ("teacher", [("image", "BYTES", [1], serialize_bytes([b"GIF89a broken"]))], "do not decode as an image"),
    ],
    ids=[
        "wrong input name",
        "wrong datatype",
        "wrong shape",
        "raw size",
        "too large",
        "NaN scale",
        "bad JPEG",
    ],
)
def test_malformed_grpc_requests_get_invalid_argument_and_the_next_is_served(served, model, tensors, phrase):
    server, models = served
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(grpc_request(model, tensors), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert phrase in raised.value.details()
        payload = random_payload(np.random.default_rng(4))
        response = stub.ModelInfer(
            grpc_request(
                "server", [(n, d, list(a.shape), a.tobytes()) for (n, d, *_), a in zip(GOOD, payload.values())]
            ),
            timeout=30,
        )
    np.testing.assert_allclose(
        np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, 3),
        expected_logits(models, payload),
        atol=1e-5,
        rtol=0,
    )


# ---------------------------------------------------------------------------- load
def test_32_concurrent_clients_each_get_their_own_logits(served):
    server, models = served
    rng = np.random.default_rng(5)
    jobs = [[random_payload(rng, rows=1 + (client + turn) % 2) for turn in range(3)] for client in range(32)]
    expected = [[expected_logits(models, payload) for payload in payloads] for payloads in jobs]
    answers: dict[int, list] = {}
    start = threading.Barrier(32)

    def client(index: int) -> None:
        transport = connect(server.http_url if index % 2 else f"grpc://{server.grpc_url}")
        start.wait()
        answers[index] = [transport.infer("server", payload, ["logits"]) for payload in jobs[index]]
        transport.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(answers) == list(range(32))
    for index in range(32):
        for reply, logits in zip(answers[index], expected[index]):
            np.testing.assert_allclose(reply.outputs["logits"], logits, atol=1e-5, rtol=0)
    batch_sizes = [reply.parameters["batch_size"] for replies in answers.values() for reply in replies]
    assert max(batch_sizes) > 2 and max(batch_sizes) <= 8  # requests were batched, never past max_batch_size
    metrics = urllib3.PoolManager().request("GET", f"{server.http_url}/metrics").data.decode()
    assert 'hnd_inference_requests_total{model="server",protocol="grpc"}' in metrics
    assert 'hnd_batch_size_count{model="server"}' in metrics and "hnd_compute_seconds_bucket" in metrics
    assert 'hnd_inference_failures_total{kind="invalid",model="server",protocol="http"}' in metrics


class GatedModel(ServedModel):
    """y = 2 x, computing only once `gate` is set (so requests pile up in the queue)."""

    def __init__(self) -> None:
        super().__init__("gated", [TensorSpec("x", "FP32", (-1,))], [TensorSpec("y", "FP32", (-1,))], None, {})
        self.gate, self.entered = threading.Event(), threading.Event()

    def run(self, batch):
        self.entered.set()
        self.gate.wait(60)
        return {"y": batch["x"] * 2}

    def warm_up(self) -> None:
        pass  # its only batch must be the test's first request


def test_a_full_queue_refuses_at_once_with_503_and_unavailable_then_serves_the_rest():
    model = GatedModel()
    service = InferenceService({"gated": model}, BatchingSettings(max_batch_size=1, max_delay_ms=0, max_queue=2))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        answers = {}

        def send(index: int) -> None:
            answers[index] = connect(server.http_url).infer("gated", {"x": np.array([float(index)], np.float32)}, ["y"])

        threads = [threading.Thread(target=send, args=(0,))]
        threads[0].start()
        assert model.entered.wait(30)  # request 0 computes, blocked at the gate
        threads += [threading.Thread(target=send, args=(index,)) for index in (1, 2)]
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 30
        while service.batchers["gated"].waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(InferenceError, match="HTTP 503.*max_queue") as over_http:
            connect(server.http_url).infer("gated", {"x": np.array([9.0], np.float32)}, ["y"])
        with pytest.raises(InferenceServerException) as over_grpc:
            tritonclient_grpc.InferenceServerClient(server.grpc_url).infer(
                "gated",
                [tritonclient_grpc.InferInput("x", [1], "FP32").set_data_from_numpy(np.array([9.0], np.float32))],
            )
        assert time.monotonic() - started < 10  # refused at once, not queued
        assert over_http.value.kind == "unavailable" and "UNAVAILABLE" in over_grpc.value.status()
        model.gate.set()
        for thread in threads:
            thread.join(30)
    assert {index: float(reply.outputs["y"][0]) for index, reply in answers.items()} == {0: 0.0, 1: 2.0, 2: 4.0}


def test_the_batcher_waits_max_delay_for_a_batch_and_splits_at_max_batch_size():
    class Recorder(ServedModel):
        def __init__(self):
            super().__init__("m", [TensorSpec("x", "FP32", (-1,))], [TensorSpec("y", "FP32", (-1,))], None, {})
            self.batches = []

        def run(self, batch):
            self.batches.append(batch["x"].tolist())
            return {"y": batch["x"] + 1}

    async def scenario(max_batch_size: int, max_delay_ms: float):
        model = Recorder()
        batcher = DynamicBatcher(model, max_batch_size, max_delay_ms, max_queue=16)

        async def one(value: float, delay_s: float):
            await asyncio.sleep(delay_s)
            return await batcher.submit({"x": np.array([value], np.float32)}, 1)

        results = await asyncio.gather(*(one(v, 0.01 * v) for v in range(5)))
        await batcher.close()
        return model.batches, results

    batches, results = asyncio.run(scenario(8, 300))  # all five arrive within the delay: one batch
    assert batches == [[0.0, 1.0, 2.0, 3.0, 4.0]] and [r.batch_size for r in results] == [5] * 5
    assert [float(r.outputs["y"][0]) for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert results[0].queue_ms >= results[4].queue_ms  # the first waited longest
    batches, _ = asyncio.run(scenario(2, 300))
    assert batches == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    batches, _ = asyncio.run(scenario(8, 0))  # no delay: nothing waits for company
    assert len(batches) == 5


def test_the_server_is_ready_only_after_a_warm_up_batch_through_every_model(tmp_path_factory):
    models = load_served_models(split_artifacts(tmp_path_factory), teacher="random")
    service = InferenceService(models, BatchingSettings(max_batch_size=4))
    calls = {}

    def counting(name, runner):
        def run(*arrays):
            calls.setdefault(name, []).append(([(a.shape, a.dtype.name) for a in arrays], service.ready))
            return runner(*arrays)

        return run

    for name, model in models.items():
        model.runner = counting(name, model.runner)

    async def start_and_close() -> bool:
        await service.start()
        ready = service.ready
        await service.close()
        return ready

    assert not service.ready and asyncio.run(start_and_close())
    # one batch of one row per model, of the declared shapes, while the server was not yet ready
    assert calls == {
        "server": [([((1, 3, 5, 5), "uint8"), ((1,), "float32"), ((1,), "uint8")], False)],
        "teacher": [([((1, 3, 32, 32), "float32")], False)],
    }


def test_onnxruntime_on_a_gpu_gets_its_device_and_never_falls_back_to_the_cpu_quietly():
    from hnd_lightning.runtime.common.parts import check_session_providers, onnx_providers

    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(torch.device("cuda:3"), gpu_build) == [("CUDAExecutionProvider", {"device_id": 3})]
    assert onnx_providers(torch.device("cuda"), gpu_build) == [("CUDAExecutionProvider", {"device_id": 0})]
    assert onnx_providers(torch.device("cpu"), gpu_build) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu.*runtime=torch"):
        onnx_providers(torch.device("cuda:1"), ["CPUExecutionProvider"])
    # the CUDA provider listed but failing to load (a missing cuDNN): onnxruntime would run on the CPU
    with pytest.raises(RuntimeError, match=r"could not start its CUDA provider.*\['CPUExecutionProvider'\]"):
        check_session_providers(torch.device("cuda:0"), ["CPUExecutionProvider"], "1.x")
    check_session_providers(torch.device("cuda:0"), gpu_build, "1.x")
    check_session_providers(torch.device("cpu"), ["CPUExecutionProvider"], "1.x")


def test_onnxruntime_runtime_serves_deploys_server_onnx(tmp_path_factory, tmp_path):
    pytest.importorskip("onnxruntime")
    from hnd_lightning.models.artifacts import load_split_artifacts
    from hnd_lightning.runtime.export.onnx_export import export_onnx

    artifacts = split_artifacts(tmp_path_factory)
    export_onnx(load_split_artifacts(artifacts), tmp_path)
    onnx_models = load_served_models(artifacts, runtime="onnxruntime", deploy_dir=tmp_path)
    torch_models = load_served_models(artifacts)
    payload = random_payload(np.random.default_rng(6), rows=3)
    np.testing.assert_allclose(
        onnx_models["server"].run(payload)["logits"], expected_logits(torch_models, payload), atol=1e-4, rtol=0
    )
    assert onnx_models["server"].describe()["platform"] == "onnxruntime_onnx"
    with pytest.raises(ValueError, match="deploy_dir"):
        load_served_models(artifacts, runtime="onnxruntime")
