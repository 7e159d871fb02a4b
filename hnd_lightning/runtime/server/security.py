"""Who may talk to the server: TLS on both ports (optionally mutual), and a bearer token on both protocols.

    tls = ServerTls(cert, key, client_ca)          # REST: uvicorn's ssl_*; gRPC: ssl_server_credentials
    check_listen_address(host, tls, insecure)      # plain TCP only on loopback, unless insecure=True
    app = BearerTokenMiddleware(app, token, metrics)           # REST: 401 + WWW-Authenticate: Bearer
    grpc.aio.server(interceptors=[TokenInterceptor(token, metrics)])  # gRPC: UNAUTHENTICATED

The token guards inference, metadata and metrics; health (server live / ready, model ready) stays
open, as in Triton's restricted protocols, so probes need no secret. Tokens are compared in constant
time (`hmac.compare_digest` on bytes); refusals count in `hnd_auth_failures_total{protocol, reason}`.
"""

from __future__ import annotations

import hmac
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hnd_lightning.runtime.common.credentials import check_pem_files, is_loopback

GRPC_SERVICE = "/inference.GRPCInferenceService/"
GRPC_OPEN_METHODS = frozenset(GRPC_SERVICE + name for name in ("ServerLive", "ServerReady", "ModelReady"))
REST_OPEN_PATHS = frozenset(("/v2/health/live", "/v2/health/ready"))
MISSING = "this server requires a bearer token: send the header 'Authorization: Bearer <token>' (client / loadtest: auth.token_file=PATH or the environment variable HND_SERVE_TOKEN)"
WRONG = "the bearer token is not this server's"


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and key (PEM), and optionally the CA whose certificates clients must show."""

    cert: str
    key: str
    client_ca: str | None = None

    def __post_init__(self) -> None:
        check_pem_files(**{"tls.cert": self.cert, "tls.key": self.key, "tls.client_ca": self.client_ca})

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config's TLS arguments (HTTPS; with `client_ca`, a client certificate is required)."""
        return {
            "ssl_certfile": str(Path(self.cert).expanduser()),
            "ssl_keyfile": str(Path(self.key).expanduser()),
            "ssl_ca_certs": str(Path(self.client_ca).expanduser()) if self.client_ca else None,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.client_ca else ssl.CERT_NONE,
        }

    def grpc_credentials(self) -> grpc.ServerCredentials:
        read = lambda path: Path(path).expanduser().read_bytes()  # noqa: E731
        return grpc.ssl_server_credentials(
            [(read(self.key), read(self.cert))],
            root_certificates=read(self.client_ca) if self.client_ca else None,
            require_client_auth=self.mutual,
        )


def server_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> ServerTls | None:
    """`ServerTls` from serve's `tls.*` settings; None when neither certificate nor key is set."""
    if not cert and not key:
        if client_ca:
            raise ValueError(
                f"tls.client_ca={client_ca!r} needs TLS: set tls.cert and tls.key too (mutual TLS is TLS plus client certificates)."
            )
        return None
    if not (cert and key):
        raise ValueError(f"tls.cert={cert!r} and tls.key={key!r}: TLS needs both, the certificate and its private key.")
    return ServerTls(cert, key, client_ca or None)


def check_listen_address(host: str, tls: ServerTls | None, insecure: bool) -> None:
    """Refuse plain TCP on an address other machines reach, unless `insecure` says so on purpose."""
    if tls is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"host={host} is not a loopback address, and without tls.cert / tls.key everything sent to it (payloads, "
            "answers, the bearer token) would cross the network in clear text, over the very link a split "
            "computing device uses. Set tls.cert=PATH tls.key=PATH (see docs/howto/securing-the-server.md), or "
            "insecure=true to serve plain TCP anyway (behind a TLS-terminating proxy, or on a network you trust)."
        )


def _token_status(value: bytes | str | None, token: bytes) -> str | None:
    """None when `value` (an Authorization header) carries `token`; else the refusal's reason."""
    if not value:
        return "missing"
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    scheme, _, credentials = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return "missing"
    return None if hmac.compare_digest(credentials.strip(), token) else "invalid"


def _rest_open(path: str) -> bool:
    return path in REST_OPEN_PATHS or (path.startswith("/v2/models/") and path.endswith("/ready"))


class BearerTokenMiddleware:
    """ASGI middleware: HTTP requests other than health need `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: Any, token: str, metrics: Any) -> None:
        self.app, self.token, self.metrics = app, token.encode(), metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or _rest_open(scope["path"]):
            return await self.app(scope, receive, send)
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        reason = _token_status(header, self.token)
        if reason is None:
            return await self.app(scope, receive, send)
        self.metrics.auth_failures.labels("http", reason).inc()
        body = json.dumps({"error": MISSING if reason == "missing" else WRONG}).encode()
        challenge = b'Bearer realm="hnd-lightning"' + (b', error="invalid_token"' if reason == "invalid" else b"")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """gRPC: RPCs other than health need metadata `authorization: Bearer <token>`, else UNAUTHENTICATED.

    A refused call is answered before its request message is read (a streaming handler that never reads it)."""

    def __init__(self, token: str, metrics: Any) -> None:
        self.token, self.metrics = token.encode(), metrics
        self._refusals: dict[str, grpc.RpcMethodHandler] = {}

    def _refusal(self, reason: str) -> grpc.RpcMethodHandler:
        if reason not in self._refusals:
            message = MISSING.replace(
                "the header 'Authorization: Bearer <token>'", "metadata 'authorization: Bearer <token>'"
            )

            async def refuse(request_iterator, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message if reason == "missing" else WRONG)

            self._refusals[reason] = grpc.stream_unary_rpc_method_handler(refuse)
        return self._refusals[reason]

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method in GRPC_OPEN_METHODS:
            return await continuation(handler_call_details)
        header = next((v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"), None)
        reason = _token_status(header, self.token)
        if reason is None:
            return await continuation(handler_call_details)
        self.metrics.auth_failures.labels("grpc", reason).inc()
        return self._refusal(reason)
