"""One set of Open Inference Protocol checks for every server that hosts the split's server part.

Each check sends one request, over REST (JSON or binary tensors) or gRPC, and returns what it saw:
"ok" for an answer whose logits equal in-process inference, else the HTTP status or the gRPC code
name. `EXPECTED` is what the protocol (and this project's server) answers; `DIFFERENCES` is what each
other server answers instead, and why (../shared SERVING_INTEROP.md, section 4, re-measured here):
asserted like the rest, so a difference that goes away or a new one fails the test.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
import urllib3
from tritonclient.grpc import service_pb2, service_pb2_grpc

from hnd_lightning.runtime.common.rest_codec import HEADER_LENGTH, build_request, parse_response

SERVERS = ("ours", "triton", "kserve", "mlserver")
MAX_BATCH_SIZE = 16  # deploy's triton.max_batch_size, and our server's in these tests


@dataclass
class Host:
    """A running server: where, and what the checks compare with (`expected(payload)` -> logits)."""

    name: str
    http_port: int
    grpc_port: int
    expected: Callable[[dict[str, np.ndarray]], np.ndarray]
    model: str = "server"
    per_image_shape: tuple[int, ...] = ()  # scale / zero_point beyond the batch: Triton declares [-1, 1]
    http: urllib3.HTTPConnectionPool = field(init=False)
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.http = urllib3.HTTPConnectionPool("127.0.0.1", self.http_port, retries=False, timeout=30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def payload(self, rows: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        shape = (rows, *self.per_image_shape)
        return {
            "bottleneck": rng.integers(0, 256, (rows, 3, 5, 5), dtype=np.uint8),
            "scale": rng.uniform(0.01, 0.2, shape).astype(np.float32),
            "zero_point": rng.integers(0, 256, shape, dtype=np.uint8),
        }

    def close(self) -> None:
        self.http.close()
        self.channel.close()


# ------------------------------------------------------------------------------------------- REST
def _rest(host: Host, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    # one resend when the server dropped the kept-alive connection (uvicorn does after a 500: KServe, MLServer)
    retry = urllib3.Retry(1, allowed_methods=None, redirect=0, status=0)
    return host.http.request(method, path, body=body, headers=headers or {}, retries=retry)


def _answer(host: Host, response, payload) -> str | int:
    if response.status != 200:
        return response.status
    outputs, _ = parse_response(response.data, response.headers.get(HEADER_LENGTH))
    return "ok" if np.allclose(outputs["logits"], host.expected(payload), atol=1e-4, rtol=0) else "wrong logits"


def rest_infer(host: Host, payload, binary_in: bool, binary_out: bool, outputs=("logits",), model=None):
    body, headers = build_request(payload, list(outputs), binary_in)
    if binary_in != binary_out:  # build_request asks outputs in the inputs' encoding: rewrite that
        size = int(headers.get(HEADER_LENGTH, len(body)))
        header = json.loads(body[:size])
        for output in header["outputs"]:
            output["parameters"] = {"binary_data": binary_out}
        head = json.dumps(header).encode()
        body = head + body[size:]
        if binary_in:
            headers[HEADER_LENGTH] = str(len(head))
    return _rest(host, "POST", f"/v2/models/{model or host.model}/infer", body, headers)


def rest_status(host: Host, method: str, path: str) -> int:
    return _rest(host, method, path).status


def _json_body(tensors: list[dict], outputs=("logits",)) -> tuple[bytes, dict]:
    header = {"inputs": tensors, "outputs": [{"name": name} for name in outputs]}
    return json.dumps(header).encode(), {"Content-Type": "application/json"}


def _mutated(payload, change: str) -> dict[str, np.ndarray]:
    payload = dict(payload)
    if change == "wrong name":
        payload["scales"] = payload.pop("scale")
    elif change == "wrong datatype":
        payload["scale"] = payload["scale"].astype(np.float64)
    elif change == "wrong shape":
        payload["bottleneck"] = payload["bottleneck"][..., :4]
    elif change == "missing input":
        payload.pop("zero_point")
    elif change == "NaN scale":
        payload["scale"] = payload["scale"].copy()
        payload["scale"].flat[0] = np.nan
    return payload


def rest_error(host: Host, change: str, binary: bool) -> int | str:
    """An infer request with one thing wrong; its HTTP status (or "ok")."""
    payload = host.payload()
    if change == "too many rows":
        payload = host.payload(rows=MAX_BATCH_SIZE + 1)
        return _answer(host, rest_infer(host, payload, binary, binary), payload)
    if change == "unknown output":
        return rest_infer(host, payload, binary, binary, outputs=("logits", "probabilities")).status
    if change == "data short of the shape":
        body, headers = build_request(payload, ["logits"], binary)
        size = int(headers.get(HEADER_LENGTH, len(body)))
        header = json.loads(body[:size])
        tensor = header["inputs"][0]  # bottleneck
        if binary:  # 5 bytes fewer than the shape needs, and binary_data_size saying so
            tensor["parameters"]["binary_data_size"] -= 5
            head = json.dumps(header).encode()
            blob = body[size:]
            body, headers[HEADER_LENGTH] = head + blob[:70] + blob[75:], str(len(head))
        else:
            tensor["data"] = tensor["data"][:-5]
            body = json.dumps(header).encode()
        return _rest(host, "POST", f"/v2/models/{host.model}/infer", body, headers).status
    return rest_infer(host, _mutated(payload, change), binary, binary).status


def rest_malformed_json(host: Host) -> int:
    return _rest(
        host, "POST", f"/v2/models/{host.model}/infer", b'{"inputs": [', {"Content-Type": "application/json"}
    ).status


def rest_server_metadata(host: Host) -> tuple:
    response = _rest(host, "GET", "/v2")
    body = json.loads(response.data)
    return response.status, bool(body.get("name")), "binary_tensor_data" in body.get("extensions", [])


def rest_model_metadata(host: Host) -> tuple:
    response = _rest(host, "GET", f"/v2/models/{host.model}")
    body = json.loads(response.data)
    tensors = lambda key: tuple((t["name"], t["datatype"]) for t in body.get(key, []))  # noqa: E731
    return response.status, tensors("inputs"), tensors("outputs")


def rest_error_body(host: Host) -> bool:
    """A 400's body is `{"error": "..."}` naming the input at fault."""
    response = rest_infer(host, _mutated(host.payload(), "wrong datatype"), False, False)
    try:
        return response.status == 400 and "scale" in json.loads(response.data)["error"]
    except (ValueError, KeyError, TypeError):
        return False


# ------------------------------------------------------------------------------------------- gRPC
def _code(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name
    return "OK"


def _grpc_request(model: str, payload, typed: bool = False) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in payload.items():
        datatype = {"uint8": "UINT8", "float32": "FP32", "float64": "FP64"}[array.dtype.name]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if typed:
            field = {"UINT8": "uint_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}[datatype]
            getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
        else:
            request.raw_input_contents.append(array.tobytes())
    request.outputs.add(name="logits")
    return request


def grpc_infer(host: Host, payload, typed: bool = False, model: str | None = None) -> str:
    try:
        response = host.stub.ModelInfer(_grpc_request(model or host.model, payload, typed), timeout=30)
    except grpc.RpcError as error:
        return error.code().name
    logits = np.frombuffer(response.raw_output_contents[0], np.float32) if response.raw_output_contents else None
    if logits is None:  # typed contents back
        logits = np.asarray(response.outputs[0].contents.fp32_contents, np.float32)
    matches = np.allclose(logits.reshape(-1, 3), host.expected(payload), atol=1e-4, rtol=0)
    return "ok" if matches else "wrong logits"


def grpc_error(host: Host, change: str) -> str:
    payload = host.payload()
    if change == "too many rows":
        return grpc_infer(host, host.payload(rows=MAX_BATCH_SIZE + 1))
    request = _grpc_request(host.model, _mutated(payload, change))
    if change == "unknown output":
        request.outputs.add(name="probabilities")
    elif change == "data short of the shape":
        request.raw_input_contents[0] = request.raw_input_contents[0][:-5]
    elif change == "input without data":
        del request.raw_input_contents[:]
    return _code(lambda: host.stub.ModelInfer(request, timeout=30))


def grpc_health(host: Host) -> tuple:
    live = host.stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
    ready = host.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=30).ready
    model = host.stub.ModelReady(service_pb2.ModelReadyRequest(name=host.model), timeout=30).ready
    return live, ready, model


def grpc_metadata(host: Host) -> tuple:
    server = host.stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=30)
    model = host.stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=host.model), timeout=30)
    tensors = lambda items: tuple((t.name, t.datatype) for t in items)  # noqa: E731
    return bool(server.name), tensors(model.inputs), tensors(model.outputs)


# ------------------------------------------------------------------------------------------ checks
INPUT_TYPES = (("bottleneck", "UINT8"), ("scale", "FP32"), ("zero_point", "UINT8"))
ERRORS = ("wrong name", "wrong datatype", "wrong shape", "missing input", "data short of the shape", "NaN scale")
ERRORS += ("too many rows", "unknown output")

CHECKS: dict[str, Callable[[Host], object]] = {
    "rest live": lambda h: rest_status(h, "GET", "/v2/health/live"),
    "rest ready": lambda h: rest_status(h, "GET", "/v2/health/ready"),
    "rest model ready": lambda h: rest_status(h, "GET", f"/v2/models/{h.model}/ready"),
    "rest server metadata": rest_server_metadata,
    "rest model metadata": rest_model_metadata,
    "rest model version 1 metadata": lambda h: rest_status(h, "GET", f"/v2/models/{h.model}/versions/1"),
    "rest unknown model metadata": lambda h: rest_status(h, "GET", "/v2/models/nope"),
    "rest unknown model ready": lambda h: rest_status(h, "GET", "/v2/models/nope/ready"),
    "rest unknown model infer": lambda h: rest_infer(h, h.payload(), False, False, model="nope").status,
    "rest json in, json out": lambda h: _answer(h, rest_infer(h, p := h.payload(), False, False), p),
    "rest json in, binary out": lambda h: _answer(h, rest_infer(h, p := h.payload(), False, True), p),
    "rest binary in, binary out": lambda h: _answer(h, rest_infer(h, p := h.payload(), True, True), p),
    "rest binary in, json out": lambda h: _answer(h, rest_infer(h, p := h.payload(), True, False), p),
    "rest malformed json": rest_malformed_json,
    "rest error body": rest_error_body,
    **{f"rest json {change}": (lambda h, c=change: rest_error(h, c, False)) for change in ERRORS},
    **{f"rest binary {change}": (lambda h, c=change: rest_error(h, c, True)) for change in ERRORS},
    "grpc health": grpc_health,
    "grpc metadata": grpc_metadata,
    "grpc unknown model metadata": lambda h: _code(
        lambda: h.stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), timeout=30)
    ),
    "grpc unknown model infer": lambda h: grpc_infer(h, h.payload(), model="nope"),
    "grpc raw contents": lambda h: grpc_infer(h, h.payload()),
    "grpc typed contents": lambda h: grpc_infer(h, h.payload(), typed=True),
    **{f"grpc {change}": (lambda h, c=change: grpc_error(h, c)) for change in (*ERRORS, "input without data")},
}

# what the protocol answers, and this project's server with it
EXPECTED: dict[str, object] = {
    "rest live": 200,
    "rest ready": 200,
    "rest model ready": 200,
    "rest server metadata": (200, True, True),
    "rest model metadata": (200, INPUT_TYPES, (("logits", "FP32"),)),
    "rest model version 1 metadata": 200,
    "rest unknown model metadata": 404,
    "rest unknown model ready": 404,
    "rest unknown model infer": 404,
    "rest json in, json out": "ok",
    "rest json in, binary out": "ok",
    "rest binary in, binary out": "ok",
    "rest binary in, json out": "ok",
    "rest malformed json": 400,
    "rest error body": True,
    **{f"rest {encoding} {change}": 400 for encoding in ("json", "binary") for change in ERRORS},
    "grpc health": (True, True, True),
    "grpc metadata": (True, INPUT_TYPES, (("logits", "FP32"),)),
    "grpc unknown model metadata": "NOT_FOUND",
    "grpc unknown model infer": "NOT_FOUND",
    "grpc raw contents": "ok",
    "grpc typed contents": "ok",
    **{f"grpc {change}": "INVALID_ARGUMENT" for change in (*ERRORS, "input without data")},
}

# (server, check pattern) -> (what that server answers instead, why); fnmatch patterns, first match wins
NO_BATCH_LIMIT = "no batch limit: it runs each request on its own, unbatched, whatever its rows"
DIFFERENCES: dict[tuple[str, str], tuple[object, str]] = {
    ("triton", "rest unknown model ready"): (
        400,
        "Triton: 400 for an unknown model's readiness (404 for its metadata)",
    ),
    ("triton", "rest malformed json"): (500, "Triton: 500 'failed to parse the request JSON buffer'"),
    ("triton", "rest json data short of the shape"): (500, "Triton: 500 'Unable to parse 'data''"),
    ("kserve", "rest server metadata"): (
        (200, True, False),
        "KServe serves binary tensors but does not list the extension",
    ),
    ("kserve", "rest model version 1 metadata"): (501, "KServe: 501 'Model versioning not supported yet'"),
    ("kserve", "rest malformed json"): (422, "KServe: FastAPI's 422 {'detail': [...]}"),
    ("kserve", "rest binary data short of the shape"): (
        500,
        "KServe decodes binary data before the model, a short buffer is a 500",
    ),
    ("kserve", "* too many rows"): ("ok", NO_BATCH_LIMIT),
    ("kserve", "grpc unknown output"): ("OK", "KServe's gRPC ignores an unknown requested output (its REST: 400)"),
    ("mlserver", "rest server metadata"): (
        (200, True, False),
        "MLServer has no binary tensor extension (extensions: [])",
    ),
    ("mlserver", "rest model version 1 metadata"): (404, "MLServer: no route for versions"),
    ("mlserver", "rest binary *"): (
        500,
        "MLServer's REST takes JSON tensors only: a binary body is a 500 (tritonclient's a 422)",
    ),
    ("mlserver", "rest malformed json"): (422, "MLServer: FastAPI's 422 {'detail': [...]}"),
    ("mlserver", "rest json NaN scale"): (
        422,
        "MLServer's JSON parser refuses NaN, which is not JSON (ours, Triton and KServe read it)",
    ),
    ("mlserver", "* too many rows"): ("ok", NO_BATCH_LIMIT),
    ("mlserver", "rest json unknown output"): (200, "MLServer ignores an unknown requested output"),
    ("mlserver", "grpc unknown output"): ("OK", "MLServer ignores an unknown requested output"),
    ("mlserver", "grpc data short of the shape"): (
        "INTERNAL",
        "MLServer unpacks raw bytes before the model: struct.error",
    ),
}


def expectation(server: str, check: str) -> tuple[object, str]:
    """What `server` answers to `check`, and why when it is not the protocol's answer."""
    for (name, pattern), (answer, why) in DIFFERENCES.items():
        if name == server and fnmatch.fnmatchcase(check, pattern):
            return answer, why
    return EXPECTED[check], ""
