"""Limits that hold against a hostile client: oversized heads, slow senders, idle connections, connection
and call caps, on both protocols, each counted in /metrics. Servers run in-process on free 127.0.0.1
ports with a tiny model (y = 2 x) and limits of a second or so, so every test takes a few seconds."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason='needs the serve extra: pip install -e ".[serve]"')
import urllib3  # noqa: E402
from test_serve import GatedModel  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

from hnd_lightning.runtime.common.protocol import InferenceError, TensorSpec  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.server.limits import Limits  # noqa: E402
from hnd_lightning.runtime.server.models import ServedModel  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402

FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "idle_timeout_s": 1.0, "handshake_timeout_s": 1.0}


class EchoModel(ServedModel):
    """y = 2 x, FP32 [-1] (the output named `output`)."""

    def __init__(self, output: str = "y") -> None:
        super().__init__("echo", [TensorSpec("x", "FP32", (-1,))], [TensorSpec(output, "FP32", (-1,))], None, {})

    def run(self, batch):
        return {self.outputs[0].name: batch["x"] * 2}


def echo_server(model: ServedModel | None = None, **settings) -> ServerThread:
    model = model or EchoModel()
    service = InferenceService({model.name: model}, BatchingSettings(max_batch_size=4))
    return ServerThread(service, ServerSettings(http_port=0, grpc_port=0, **settings))


def limit_hits(server: ServerThread, protocol: str, limit: str) -> float:
    registry = server.server.service.metrics.registry
    return registry.get_sample_value("hnd_limit_hits_total", {"protocol": protocol, "limit": limit}) or 0.0


def read_until_closed(sock: socket.socket, timeout_s: float = 8.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took."""
    sock.settimeout(timeout_s)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def test_an_oversized_request_head_gets_431_with_a_reason_and_normal_heads_are_served():
    with echo_server(limits=Limits(max_header_bytes=4096, **FAST)) as server:
        port = server.server.http_port
        request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n"
        answers = []
        # 200 KB in one write (the head is still incomplete when the cap is passed), 5 KB whole, 6 KB trickled
        for data, pieces in (
            (request % (b"a" * 200_000), 1),
            (request % (b"a" * 5000), 1),
            (request % (b"a" * 6000), 6),
        ):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                for index in range(pieces):
                    sock.sendall(data[index * len(data) // pieces : (index + 1) * len(data) // pieces])
                    time.sleep(0.02 if pieces > 1 else 0)
                answers.append(status_and_error(read_until_closed(sock)[0]))
        assert [status for status, _ in answers] == [431, 431, 431]
        assert all("limits.max_header_bytes=4,096" in error for _, error in answers)
        ok = urllib3.PoolManager().request("GET", f"{server.http_url}/v2/health/live", headers={"X-Fine": "a" * 3000})
        assert ok.status == 200
        assert limit_hits(server, "http", "header_bytes") == 3


def test_a_sender_of_one_byte_a_second_is_cut_off_within_the_timeout_in_the_head_and_in_the_body():
    with echo_server(limits=Limits(**FAST)) as server:
        port = server.server.http_port
        starts = {
            "head": b"",
            "body": b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n",
        }
        trickle = b"GET /v2/health/live HTTP/1.1\r\n" + b"a" * 100
        results = {}

        def slow_client(part: str) -> None:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(starts[part])
                stop = threading.Event()

                def send_bytes() -> None:  # one byte a second until the server hangs up
                    for byte in trickle:
                        try:
                            sock.send(bytes([byte]))
                        except OSError:
                            return
                        if stop.wait(1.0):
                            return

                sender = threading.Thread(target=send_bytes)
                sender.start()
                results[part] = read_until_closed(sock)
                stop.set()
                sender.join()

        clients = [threading.Thread(target=slow_client, args=(part,)) for part in starts]
        for client in clients:
            client.start()
        for client in clients:
            client.join(15)
        for part, setting in (("head", "header_timeout_s"), ("body", "body_timeout_s")):
            response, seconds = results[part]
            status, error = status_and_error(response)
            assert status == 408 and f"limits.{setting}=1" in error
            assert seconds < 1.0 + 1.0 + 4  # the timeout, the linger that lets the answer be read, slack; not 130 s
        assert limit_hits(server, "http", "header_timeout") == 1 and limit_hits(server, "http", "body_timeout") == 1
        reply = connect(server.http_url).infer("echo", {"x": np.array([1.5], np.float32)}, ["y"])
        assert float(reply.outputs["y"][0]) == 3.0


def test_connections_without_a_request_are_closed_after_the_idle_timeout():
    with echo_server(limits=Limits(**FAST)) as server:
        fresh = [socket.create_connection(("127.0.0.1", server.server.http_port)) for _ in range(3)]
        kept_alive = urllib3.HTTPConnectionPool("127.0.0.1", server.server.http_port, maxsize=1, retries=False)
        assert kept_alive.request("GET", "/v2/health/live").status == 200
        (connection,) = list(kept_alive.pool.queue)
        for sock in fresh:
            data, seconds = read_until_closed(sock)
            assert data == b"" and seconds < 6
            sock.close()
        time.sleep(0.3)
        assert connection.is_connected is False  # the server closed the kept-alive one too
        assert limit_hits(server, "http", "idle") == 4


def open_connections(server: ServerThread) -> float:
    return server.server.service.metrics.registry.get_sample_value("hnd_open_connections", {"protocol": "http"}) or 0


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


def test_at_the_connection_cap_a_fresh_client_gets_503_and_is_served_once_the_idle_ones_close():
    with echo_server(limits=Limits(http_max_connections=4, idle_timeout_s=30)) as server:
        idle = [socket.create_connection(("127.0.0.1", server.server.http_port)) for _ in range(4)]
        wait_for(lambda: open_connections(server) == 4)
        payload = {"x": np.array([2.0], np.float32)}
        with pytest.raises(InferenceError, match="HTTP 503.*limits.http_max_connections") as refused:
            connect(server.http_url).infer("echo", payload, ["y"])
        assert refused.value.kind == "unavailable"
        for sock in idle:
            sock.close()
        wait_for(lambda: open_connections(server) == 0)
        assert float(connect(server.http_url).infer("echo", payload, ["y"]).outputs["y"][0]) == 4.0
        assert limit_hits(server, "http", "connections") == 1


def grpc_live(port: int, timeout_s: float = 3.0) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return (
            service_pb2_grpc.GRPCInferenceServiceStub(channel)
            .ServerLive(service_pb2.ServerLiveRequest(), timeout=timeout_s)
            .live
        )


def test_grpc_closes_a_silent_connection_and_refuses_connections_past_the_cap():
    with echo_server(limits=Limits(handshake_timeout_s=1.0, idle_timeout_s=30, grpc_max_connections=2)) as server:
        port = server.server.grpc_port
        with socket.create_connection(("127.0.0.1", port)) as silent:
            _, seconds = read_until_closed(silent)  # gRPC sends its settings, then closes at the handshake timeout
        assert 0.5 < seconds < 6
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for sock in held:  # the server's HTTP/2 settings arrive once it has accepted (and counted) the connection
            sock.settimeout(10)
            assert sock.recv(9)
        with pytest.raises(grpc.RpcError) as refused:
            grpc_live(port)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # refused, not DEADLINE_EXCEEDED
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert grpc_live(port)


def test_grpc_refuses_calls_past_the_concurrent_rpc_cap_and_oversized_metadata():
    model = GatedModel()
    with echo_server(model, limits=Limits(grpc_max_concurrent_rpcs=2, max_header_bytes=4096)) as server:
        url, answers = f"grpc://{server.grpc_url}", {}

        def send(index: int) -> None:
            answers[index] = connect(url).infer("gated", {"x": np.array([float(index)], np.float32)}, ["y"])

        threads = [threading.Thread(target=send, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        registry = server.server.service.metrics.registry
        wait_for(lambda: registry.get_sample_value("hnd_rpcs_in_progress") == 2)
        started = time.monotonic()
        with pytest.raises(InferenceError, match="RESOURCE_EXHAUSTED.*limits.grpc_max_concurrent_rpcs"):
            connect(url).infer("gated", {"x": np.array([9.0], np.float32)}, ["y"])
        assert time.monotonic() - started < 5  # refused at once, not queued behind the gate
        model.gate.set()
        for thread in threads:
            thread.join(30)
        assert {index: float(reply.outputs["y"][0]) for index, reply in answers.items()} == {0: 0.0, 1: 2.0}
        assert limit_hits(server, "grpc", "concurrent_rpcs") == 1
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as oversized:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=3, metadata=(("x-big", "a" * 6000),))
            assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=3, metadata=(("x-ok", "a" * 2000),)).live


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="idle_timeout_s"):
        Limits(idle_timeout_s=0)
