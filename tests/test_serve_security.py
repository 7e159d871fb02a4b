"""TLS (and mutual TLS) on both ports, and the bearer token: who is served and who is refused, with the
project's client and with tritonclient; plain TCP only on loopback unless stated; tokens never from the
command line. Throwaway certificates (two CAs, EC P-256) are made per module in a tmp dir."""

from __future__ import annotations

import json
import socket
import ssl
import time

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("cryptography", reason='needs the dev extra (throwaway certificates): pip install -e ".[dev]"')
import gevent.ssl  # noqa: E402
import grpc  # noqa: E402
import tritonclient.grpc as tritonclient_grpc  # noqa: E402
import urllib3  # noqa: E402
from conftest import compose_config  # noqa: E402
from pki import make_test_pki  # noqa: E402
from test_serve_limits import EchoModel, echo_server  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from hnd_lightning.loadtest import server_overrides  # noqa: E402
from hnd_lightning.runtime.common.credentials import ClientTls, client_credentials, load_token  # noqa: E402
from hnd_lightning.runtime.common.protocol import InferenceError  # noqa: E402
from hnd_lightning.runtime.device.loadgen import run_load  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.server.limits import Limits  # noqa: E402
from hnd_lightning.runtime.server.process import ServerProcess  # noqa: E402
from hnd_lightning.runtime.server.security import ServerTls, check_listen_address  # noqa: E402
from hnd_lightning.serve import build_server  # noqa: E402

TOKEN = "s3cret-token-for-the-tests-0123456789"
X = {"x": np.array([1.0, 2.5], np.float32)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def client_tls(pki, ca: str = "ca", client: str | None = None) -> ClientTls:
    return ClientTls(str(pki[ca]), *((str(pki[f"{client}_cert"]), str(pki[f"{client}_key"])) if client else ()))


def urls(server) -> tuple[str, str]:
    return server.http_url, f"grpcs://{server.grpc_url}"


def doubled(reply) -> list[float]:
    return reply.outputs["y"].tolist()


def test_tls_clients_are_served_and_plain_or_other_ca_clients_refused_on_both_protocols(pki):
    tls = ServerTls(str(pki["server_cert"]), str(pki["server_key"]))
    with echo_server(tls=tls, limits=Limits(handshake_timeout_s=1.0)) as server:
        https, grpcs = urls(server)
        assert https.startswith("https://")
        for url in (https, grpcs):
            assert doubled(connect(url, tls=client_tls(pki)).infer("echo", X, ["y"])) == [2.0, 5.0]
        # tritonclient: HTTPS through an ssl_context_factory, gRPC with the CA as a file path
        http_client = tritonclient_http.InferenceServerClient(
            server.http_url.removeprefix("https://"),
            ssl=True,
            ssl_context_factory=lambda: gevent.ssl.create_default_context(cafile=str(pki["ca"])),
        )
        grpc_client = tritonclient_grpc.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(pki["ca"])
        )
        for module, client in ((tritonclient_http, http_client), (tritonclient_grpc, grpc_client)):
            tensor = module.InferInput("x", [2], "FP32")
            tensor.set_data_from_numpy(X["x"])
            assert client.infer("echo", [tensor]).as_numpy("y").tolist() == [2.0, 5.0]
            client.close()
        # plain TCP on a TLS port, and a client that trusts another CA
        with pytest.raises(urllib3.exceptions.ProtocolError):  # the server hangs up on the plain request
            connect(https.replace("https://", "http://")).infer("echo", X, ["y"])
        with pytest.raises(InferenceError, match="UNAVAILABLE"):
            connect(grpcs.replace("grpcs://", "grpc://")).infer("echo", X, ["y"])
        with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            connect(https, tls=client_tls(pki, "other_ca")).infer("echo", X, ["y"])
        with pytest.raises(InferenceError, match="UNAVAILABLE"):
            connect(grpcs, tls=client_tls(pki, "other_ca")).infer("echo", X, ["y"])
        # a TCP connection that never starts the TLS handshake is closed at limits.handshake_timeout_s
        with socket.create_connection(("127.0.0.1", server.server.http_port)) as silent:
            silent.settimeout(8)
            started = time.monotonic()
            assert silent.recv(100) == b"" and time.monotonic() - started < 6


def test_mutual_tls_serves_clients_with_a_ca_signed_certificate_only(pki):
    tls = ServerTls(str(pki["server_cert"]), str(pki["server_key"]), client_ca=str(pki["ca"]))
    with echo_server(tls=tls) as server:
        for url in urls(server):
            assert doubled(connect(url, tls=client_tls(pki, client="client")).infer("echo", X, ["y"])) == [2.0, 5.0]
            for refused in (client_tls(pki), client_tls(pki, client="other_client")):  # no certificate, another CA's
                with pytest.raises((InferenceError, urllib3.exceptions.HTTPError, ssl.SSLError, OSError)) as raised:
                    connect(url, tls=refused).infer("echo", X, ["y"])
                if url.startswith("grpcs"):
                    assert "UNAVAILABLE" in str(raised.value)
        grpc_client = tritonclient_grpc.InferenceServerClient(
            server.grpc_url,
            ssl=True,
            root_certificates=str(pki["ca"]),
            private_key=str(pki["client_key"]),
            certificate_chain=str(pki["client_cert"]),
        )
        assert grpc_client.is_server_live()


def metric(server, name: str, labels: dict) -> float:
    return server.server.service.metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_token_guards_inference_and_metadata_health_stays_open_and_refusals_are_counted(pki):
    tls = ServerTls(str(pki["server_cert"]), str(pki["server_key"]))
    with echo_server(tls=tls, token=TOKEN) as server:
        https, grpcs = urls(server)
        pool = urllib3.HTTPSConnectionPool(
            "127.0.0.1", server.server.http_port, ssl_context=client_tls(pki).ssl_context(), retries=False
        )
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/echo/ready"):
            assert pool.request("GET", path).status == 200
        for path in ("/v2", "/v2/models/echo", "/metrics"):
            missing, wrong = (
                pool.request("GET", path),
                pool.request("GET", path, headers={"Authorization": "Bearer no"}),
            )
            assert missing.status == wrong.status == 401
            assert missing.headers["WWW-Authenticate"] == 'Bearer realm="hnd-lightning"'
            assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="hnd-lightning", error="invalid_token"'
            assert "Authorization: Bearer" in json.loads(missing.data)["error"]
            assert pool.request("GET", path, headers={"Authorization": f"bearer {TOKEN}"}).status == 200
        for url in (https, grpcs):
            for token in (None, "wrong-token-of-some-length"):
                with pytest.raises(InferenceError, match="401|UNAUTHENTICATED") as refused:
                    connect(url, tls=client_tls(pki), token=token).infer("echo", X, ["y"])
                assert refused.value.kind == "unauthenticated"
            with pytest.raises(InferenceError, match="401|UNAUTHENTICATED"):  # not "no such model"
                connect(url, tls=client_tls(pki)).metadata("echo")
            transport = connect(url, tls=client_tls(pki), token=TOKEN)
            assert transport.metadata("echo")["inputs"][0]["name"] == "x"
            assert doubled(transport.infer("echo", X, ["y"])) == [2.0, 5.0]
        with grpc.secure_channel(server.grpc_url, client_tls(pki).grpc_credentials()) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
            assert stub.ModelReady(service_pb2.ModelReadyRequest(name="echo"), timeout=5).ready
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # tritonclient over gRPC: a fresh headers dict per call (its HTTP client writes into the one it gets)
        grpc_client = tritonclient_grpc.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(pki["ca"])
        )
        assert grpc_client.get_model_metadata("echo", headers={"authorization": f"Bearer {TOKEN}"}).name == "echo"
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            grpc_client.get_model_metadata("echo")
        counts = {
            (protocol, reason): metric(server, "hnd_auth_failures_total", {"protocol": protocol, "reason": reason})
            for protocol in ("http", "grpc")
            for reason in ("missing", "invalid")
        }
        assert counts == {
            ("http", "missing"): 5,
            ("http", "invalid"): 4,
            ("grpc", "missing"): 4,
            ("grpc", "invalid"): 1,
        }


def test_load_generation_sends_the_token_over_tls(pki):
    tls = ServerTls(str(pki["server_cert"]), str(pki["server_key"]))
    with echo_server(EchoModel(output="logits"), tls=tls, token=TOKEN) as server:  # what loads ask for
        for url in urls(server):
            served = run_load(url, "echo", [X], 2, 0.3, max_requests=20, tls=client_tls(pki), token=TOKEN)
            assert served["errors"] == {} and served["ok"] > 0
            refused = run_load(url, "echo", [X], 1, 0.2, max_requests=5, tls=client_tls(pki), warmup_requests=0)
            assert refused["ok"] == 0 and set(refused["errors"]) == {"unauthenticated"}


def test_plain_tcp_is_refused_off_loopback_unless_insecure(pki):
    cfg = compose_config("serve", ["artifacts=unused", "host=0.0.0.0"])
    with pytest.raises(ValueError, match="not a loopback address.*insecure=true"):
        build_server(cfg)  # refused before any model loads
    check_listen_address("0.0.0.0", None, insecure=True)
    check_listen_address("10.1.2.3", ServerTls(str(pki["server_cert"]), str(pki["server_key"])), insecure=False)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_listen_address(host, None, insecure=False)
    with pytest.raises(ValueError, match="TLS needs both"):
        build_server(compose_config("serve", ["artifacts=unused", f"tls.cert={pki['server_cert']}"]))
    # the client: no token over plain TCP to another machine, and no TLS files with a plain URL
    with pytest.raises(ValueError, match="clear text.*https://10.1.2.3:8000"):
        connect("http://10.1.2.3:8000", token=TOKEN)
    with pytest.raises(ValueError, match="grpcs://127.0.0.1:8001"):
        connect("grpc://127.0.0.1:8001", tls=client_tls(pki))


def test_tokens_come_from_a_file_or_the_environment_never_the_command_line(tmp_path, monkeypatch):
    refused = "auth.token is refused.*process list.*auth.token_file"
    with pytest.raises(ValueError, match=refused):
        build_server(compose_config("serve", ["artifacts=unused", f"auth.token={TOKEN}"]))
    for command, extra in (("client", ["images=unused"]), ("loadtest", [])):
        cfg = compose_config(command, ["artifacts=unused", f"auth.token={TOKEN}", *extra])
        with pytest.raises(ValueError, match=refused):
            client_credentials(cfg.tls, cfg.auth)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("HND_SERVE_TOKEN", "from-the-environment-0123")
    assert load_token(str(token_file), "HND_SERVE_TOKEN") == TOKEN  # the file first
    assert load_token(None, "HND_SERVE_TOKEN") == "from-the-environment-0123"
    assert load_token(None, None) is None
    token_file.write_text("two words")
    with pytest.raises(ValueError, match="visible ASCII"):
        load_token(str(token_file), None)
    with pytest.raises(ValueError, match="is not a file"):
        load_token(str(tmp_path / "missing"), None)


def test_loadtest_starts_its_server_with_tls_and_the_token_and_its_clients_use_https(tmp_path, pki):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    cfg = compose_config(
        "loadtest",
        [
            "artifacts=unused",
            f"server.tls.cert={pki['server_cert']}",
            f"server.tls.key={pki['server_key']}",
            f"tls.ca={pki['ca']}",
            f"auth.token_file={token_file}",
        ],
    )
    overrides = server_overrides(cfg, "dynamic", tmp_path)
    assert f"tls.cert={pki['server_cert']}" in overrides and f"auth.token_file={token_file}" in overrides
    assert not any(item.startswith("tls.client_ca") or TOKEN in item for item in overrides)
    announced = ServerProcess([])
    announced.description = {"host": "127.0.0.1", "http_port": 1, "grpc_port": 2, "tls": True}
    assert (announced.url("http"), announced.url("grpc")) == ("https://127.0.0.1:1", "grpcs://127.0.0.1:2")
    assert client_credentials(cfg.tls, cfg.auth) == (ClientTls(str(pki["ca"])), TOKEN)
