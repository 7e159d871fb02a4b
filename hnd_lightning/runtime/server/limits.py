"""Limits that hold against a hostile client: sizes, read timeouts and caps on connections and calls.

    limits = Limits(max_header_bytes=16384, header_timeout_s=10, ...)    # serve's `limits.*`
    grpc.aio.server(options=grpc_options(limits), interceptors=[RpcLimitInterceptor(limits, metrics)])

REST enforces them in its HTTP protocol (`http_guard.py`); gRPC through gRPC core's channel options
(connection cap, handshake timeout, idle timeout, metadata size, streams per connection) and an
interceptor capping the calls handled at once. What this process sees is counted in
`hnd_limit_hits_total{protocol, limit}`; gRPC core refuses connections and oversized metadata on its
own, before Python sees them, so those are enforced but not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import uvicorn
from starlette.requests import ClientDisconnect

TLS_CLOSE_TIMEOUT_S = 1.0  # how long a closing TLS connection waits for the peer's close_notify (asyncio: 30 s)


@dataclass(frozen=True)
class Limits:
    """Serve's `limits.*` (conf/serve.yaml says what each bounds)."""

    max_header_bytes: int = 16384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    http_max_connections: int = 256
    grpc_max_connections: int = 256
    grpc_max_concurrent_rpcs: int = 256
    grpc_max_streams_per_connection: int = 64

    def __post_init__(self) -> None:
        bad = {name: value for name, value in asdict(self).items() if not value > 0}
        if bad:
            raise ValueError(f"limits must be positive; got {bad}. Raise them rather than switching them off.")


def grpc_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for `limits` (the server's other options come first)."""
    return [
        ("grpc.max_allowed_incoming_connections", limits.grpc_max_connections),
        ("grpc.max_concurrent_streams", limits.grpc_max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", int(1000 * limits.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", int(1000 * limits.idle_timeout_s)),
        # both: the soft size alone let larger metadata through
        ("grpc.max_metadata_size", limits.max_header_bytes),
        ("grpc.absolute_max_metadata_size", limits.max_header_bytes),
    ]


class RpcLimitInterceptor(grpc.aio.ServerInterceptor):
    """At most `limits.grpc_max_concurrent_rpcs` unary calls handled at once; the next gets RESOURCE_EXHAUSTED.

    Counts a call from the moment its request message has arrived (gRPC core holds it until then)."""

    def __init__(self, limits: Limits, metrics: Any) -> None:
        self.max_rpcs, self.metrics, self.active = limits.grpc_max_concurrent_rpcs, metrics, 0
        self._limited: dict[str, grpc.RpcMethodHandler] = {}  # one wrapped handler per method, built once

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behaviour = handler.unary_unary

        async def limited(request, context):
            if self.active >= self.max_rpcs:
                self.metrics.limit_hits.labels("grpc", "concurrent_rpcs").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the server is handling its maximum of {self.max_rpcs} calls "
                    "(limits.grpc_max_concurrent_rpcs); try again shortly",
                )
            self.active += 1
            self.metrics.rpcs_in_progress.inc()
            try:
                return await behaviour(request, context)
            finally:
                self.active -= 1
                self.metrics.rpcs_in_progress.dec()

        return grpc.unary_unary_rpc_method_handler(
            limited, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        if method not in self._limited:
            self._limited[method] = self._wrap(handler)
        return self._limited[method]


def ignore_disconnects(app: Any) -> Any:
    """ASGI wrapper: a request whose client left (or was cut off by a timeout) while its body was being
    read ends quietly instead of logging a traceback; nobody is left to answer."""

    async def guarded(scope, receive, send) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            pass

    return guarded


class GuardedUvicorn(uvicorn.Server):
    """uvicorn's server on sockets we bound, with the TLS handshake bounded by `handshake_timeout_s`
    (asyncio's default is 60 s, which uvicorn does not change) and a TLS close by `TLS_CLOSE_TIMEOUT_S`
    (else an idle client that never answers close_notify holds the connection, and a stop, for 30 s)."""

    handshake_timeout_s: float | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        yield  # signals are the lifecycle's business: it drains both protocols, not just HTTP

    async def startup(self, sockets=None) -> None:
        config = self.config
        if sockets is None or config.ssl is None or self.handshake_timeout_s is None:
            return await super().startup(sockets)
        await self.lifespan.startup()

        def create_protocol(_loop=None) -> asyncio.Protocol:
            return config.http_protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        timeouts = {"ssl_handshake_timeout": self.handshake_timeout_s}
        if sys.version_info >= (3, 11):
            timeouts["ssl_shutdown_timeout"] = TLS_CLOSE_TIMEOUT_S
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, ssl=config.ssl, backlog=config.backlog, **timeouts)
            for sock in sockets
        ]
        self.started = True
