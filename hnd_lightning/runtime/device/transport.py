"""The client's end of the Open Inference Protocol: one kept-alive connection, REST or gRPC.

    transport = connect("http://127.0.0.1:8000")      # REST, binary tensors (binary=False: JSON)
    transport = connect("grpc://127.0.0.1:8001")      # gRPC
    transport = connect("https://edge:8000", tls=ClientTls(ca="ca.crt"), token=token)   # TLS (grpcs:// too)
    reply = transport.infer("server", {"bottleneck": ..., "scale": ..., "zero_point": ...}, ["logits"])

A reply carries the outputs, the server's response parameters (queue and compute time), the bytes
of the request and response bodies, and the round trip as the client saw it. An optional
`EmulatedLink` delays each body by its size on the link. Works against any Open Inference Protocol
server (Triton, KServe) as well as this project's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hnd_lightning.runtime.common.credentials import ClientTls, is_loopback
from hnd_lightning.runtime.common.protocol import DATATYPES, InferenceError, datatype_of, to_raw
from hnd_lightning.runtime.common.rest_codec import HEADER_LENGTH, build_request, parse_response
from hnd_lightning.runtime.device.link import EmulatedLink

log = logging.getLogger(__name__)
PROTOCOLS = ("http", "grpc")
SCHEMES = {"http": "http", "https": "http", "grpc": "grpc", "grpcs": "grpc"}  # URL scheme -> protocol
KIND_BY_HTTP_STATUS = {
    400: "invalid",
    401: "unauthenticated",
    404: "not_found",
    408: "invalid",
    431: "invalid",
    503: "unavailable",
}
KIND_BY_GRPC_CODE = {
    "INVALID_ARGUMENT": "invalid",
    "NOT_FOUND": "not_found",
    "UNAVAILABLE": "unavailable",
    "RESOURCE_EXHAUSTED": "unavailable",
    "UNAUTHENTICATED": "unauthenticated",
}


@dataclass
class Reply:
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any]
    bytes_sent: int
    bytes_received: int
    round_trip_ms: float


class HttpTransport:
    """REST over one kept-alive HTTP/1.1 connection (urllib3); HTTPS with `tls`, a bearer `token` on every request."""

    protocol = "http"

    def __init__(
        self,
        host: str,
        port: int,
        binary: bool = True,
        link: EmulatedLink | None = None,
        timeout_s: float = 120.0,
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        import urllib3

        self.binary, self.link = binary, link or EmulatedLink()
        # why binary tensors were given up for JSON (a server without the extension, e.g. MLServer), or None
        self.fallback: str | None = None
        self._binary_answered = False
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        options = {"maxsize": 1, "timeout": timeout_s, "retries": False}
        if tls is None:
            self._pool = urllib3.HTTPConnectionPool(host, port, **options)
        else:
            self._pool = urllib3.HTTPSConnectionPool(host, port, ssl_context=tls.ssl_context(), **options)

    def _get(self, path: str) -> tuple[int, bytes]:
        import urllib3

        # one retry: a server may drop the connection after an error answer (MLServer after its 500s)
        retries = urllib3.Retry(1, redirect=0, status=0)
        response = self._pool.request("GET", path, headers=self._auth, retries=retries)
        return response.status, response.data

    def ready(self, model: str | None = None) -> bool:
        return self._get(f"/v2/models/{model}/ready" if model else "/v2/health/ready")[0] == 200

    def metadata(self, model: str) -> dict[str, Any] | None:
        """The model's metadata; None when the server has no such model. A refused token raises."""
        status, body = self._get(f"/v2/models/{model}")
        if status == 401:
            raise InferenceError(f"HTTP 401: {json.loads(body).get('error', '')}", "unauthenticated")
        return json.loads(body) if status == 200 else None

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> Reply:
        """One request; binary tensors (when `binary`) until a server that does not advertise the binary
        extension refuses them while JSON is served: from then on JSON, said in `fallback` and the log."""
        try:
            reply = self._infer(model, inputs, outputs, self.binary)
        except InferenceError as refused:
            if (
                not self.binary
                or self._binary_answered
                or refused.kind in ("unavailable", "not_found", "unauthenticated")
                or self._advertises_binary()
            ):
                raise
            try:
                reply = self._infer(model, inputs, outputs, binary=False)
            except InferenceError:
                raise refused from None  # the request itself is bad, not its encoding
            answer = str(refused).splitlines()[0][:120]
            self.binary = False
            self.fallback = f"binary tensors refused ({answer}) by a server that lists no binary_tensor_data extension"
            log.warning("%s:%s: %s; sending JSON tensors from now on.", self._pool.host, self._pool.port, self.fallback)
        self._binary_answered = self._binary_answered or self.binary
        return reply

    def _advertises_binary(self) -> bool:
        status, body = self._get("/v2")
        try:
            return status == 200 and "binary_tensor_data" in json.loads(body).get("extensions", [])
        except (ValueError, AttributeError):
            return False

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], binary: bool) -> Reply:
        body, headers = build_request(inputs, outputs, binary)
        headers.update(self._auth)
        started = time.perf_counter()
        self.link.send(len(body))
        response = self._pool.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        data = response.data
        self.link.receive(len(data))
        round_trip_ms = 1000 * (time.perf_counter() - started)
        if response.status != 200:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode(errors="replace")
            raise InferenceError(
                f"HTTP {response.status}: {message}", KIND_BY_HTTP_STATUS.get(response.status, "internal")
            )
        arrays, parameters = parse_response(data, response.headers.get(HEADER_LENGTH))
        return Reply(arrays, parameters, len(body), len(data), round_trip_ms)

    def close(self) -> None:
        self._pool.close()


class GrpcTransport:
    """gRPC over one channel, with the request and response messages of `tritonclient.grpc`; TLS with `tls`,
    metadata `authorization: Bearer <token>` on every call."""

    protocol = "grpc"

    def __init__(
        self,
        host: str,
        port: int,
        link: EmulatedLink | None = None,
        timeout_s: float = 120.0,
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self._grpc, self._pb = grpc, service_pb2
        self.link, self.timeout_s = link or EmulatedLink(), timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        cap = 1 << 30
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options = [("grpc.max_send_message_length", cap), ("grpc.max_receive_message_length", cap)]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, tls.grpc_credentials(), options=options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def ready(self, model: str | None = None) -> bool:
        try:
            if model:
                request = self._pb.ModelReadyRequest(name=model)
                return self._stub.ModelReady(request, timeout=self.timeout_s, metadata=self._metadata).ready
            return self._stub.ServerReady(self._pb.ServerReadyRequest(), timeout=self.timeout_s).ready
        except self._grpc.RpcError:
            return False

    def metadata(self, model: str) -> dict[str, Any] | None:
        try:
            response = self._stub.ModelMetadata(
                self._pb.ModelMetadataRequest(name=model), timeout=self.timeout_s, metadata=self._metadata
            )
        except self._grpc.RpcError as error:
            if error.code() == self._grpc.StatusCode.UNAUTHENTICATED:
                raise InferenceError(f"gRPC UNAUTHENTICATED: {error.details()}", "unauthenticated") from None
            return None
        tensors = lambda items: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]  # noqa: E731
        return {
            "name": response.name,
            "platform": response.platform,
            "inputs": tensors(response.inputs),
            "outputs": tensors(response.outputs),
        }

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> Reply:
        request = self._pb.ModelInferRequest(model_name=model)
        for name, array in inputs.items():
            request.inputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            request.raw_input_contents.append(to_raw(array))
        for name in outputs:
            request.outputs.add(name=name)
        sent = request.ByteSize()
        started = time.perf_counter()
        self.link.send(sent)
        try:
            response = self._stub.ModelInfer(request, timeout=self.timeout_s, metadata=self._metadata)
        except self._grpc.RpcError as error:
            code = error.code().name
            raise InferenceError(f"gRPC {code}: {error.details()}", KIND_BY_GRPC_CODE.get(code, "internal")) from None
        received = response.ByteSize()
        self.link.receive(received)
        round_trip_ms = 1000 * (time.perf_counter() - started)
        arrays = {
            tensor.name: np.frombuffer(raw, dtype=DATATYPES[tensor.datatype]).reshape(list(tensor.shape))
            for tensor, raw in zip(response.outputs, response.raw_output_contents)
        }
        parameters = {
            key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in response.parameters.items()
        }
        return Reply(arrays, parameters, sent, received, round_trip_ms)

    def close(self) -> None:
        self._channel.close()


def connect(
    url: str,
    link: EmulatedLink | None = None,
    binary: bool = True,
    tls: ClientTls | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> HttpTransport | GrpcTransport:
    """A transport for `url`: `http://HOST:PORT` (REST; `binary=False` sends JSON), `grpc://HOST:PORT`, or
    over TLS `https://` / `grpcs://` (trusting `tls.ca`, or the system's CAs; `tls.cert` / `tls.key` for
    mutual TLS). `token` goes with every request; over plain TCP only to loopback, unless `insecure`."""
    scheme, _, address = url.partition("://")
    host, _, port = address.rstrip("/").rpartition(":")
    if scheme not in SCHEMES or not host or not port.isdigit():
        raise ValueError(
            f"server={url!r}: expected http://HOST:PORT or https://HOST:PORT (REST), grpc://HOST:PORT or "
            "grpcs://HOST:PORT (gRPC)."
        )
    host, secure = host.strip("[]"), scheme.endswith("s")
    if not secure and tls is not None and (tls.ca or tls.cert):
        raise ValueError(f"tls.* is set but server={url!r} is plain TCP: use {scheme}s://{address} for TLS.")
    if not secure and token and not insecure and not is_loopback(host):
        raise ValueError(
            f"server={url!r} is plain TCP to another machine: the bearer token would cross the network in clear "
            f"text. Use {scheme}s://{address} (TLS), or insecure=true if the link is one you trust."
        )
    tls = (tls or ClientTls()) if secure else None
    if SCHEMES[scheme] == "http":
        return HttpTransport(host, int(port), binary, link, tls=tls, token=token)
    return GrpcTransport(host, int(port), link, tls=tls, token=token)
