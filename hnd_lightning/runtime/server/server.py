"""The server's lifecycle: REST (uvicorn) and gRPC (grpc.aio) on one event loop, over one service.

    await InferenceServer(service, settings).serve_until_signal()   # the command: SIGTERM / SIGINT stop it
    with ServerThread(service, settings) as server: ...             # in-process (tests, loopback runs)

Stopping (a signal, `stop()` or leaving the `with`) refuses new inference requests with 503 /
UNAVAILABLE, answers every request already received, then closes both ports. Port 0 picks a free port;
the bound ports are `http_port` and `grpc_port` once started. `tls`, `token` and `limits` put the
guards of `security.py`, `limits.py` and `http_guard.py` on both ports.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from dataclasses import dataclass, field

import grpc
import uvicorn
from tritonclient.grpc import service_pb2_grpc

from hnd_lightning.runtime.server.grpc_servicer import GrpcInferenceServicer
from hnd_lightning.runtime.server.http_guard import guarded_protocol
from hnd_lightning.runtime.server.limits import (
    GuardedUvicorn,
    Limits,
    RpcLimitInterceptor,
    grpc_options,
    ignore_disconnects,
)
from hnd_lightning.runtime.server.rest_app import build_rest_app
from hnd_lightning.runtime.server.security import BearerTokenMiddleware, ServerTls, TokenInterceptor
from hnd_lightning.runtime.server.service import InferenceService


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens, how long it waits for requests in flight when stopping, its TLS, the
    bearer token it requires (None: none) and its limits (None: uvicorn's and gRPC's defaults, which
    hold nothing back; for measuring what the limits cost)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    shutdown_timeout_s: float = 30.0
    log_level: str = "warning"
    tls: ServerTls | None = None
    token: str | None = field(default=None, repr=False)
    limits: Limits | None = field(default_factory=Limits)


class InferenceServer:
    """REST and gRPC endpoints of one `InferenceService`. Create, `await start()`, `await stop()`."""

    def __init__(self, service: InferenceService, settings: ServerSettings) -> None:
        self.service, self.settings = service, settings
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    async def start(self) -> None:
        settings = self.settings
        await self.service.start()
        # proto IPPROTO_TCP, so that asyncio sets TCP_NODELAY on accepted connections (with proto 0 it does
        # not, and a response's header and body writes then wait ~40 ms for the client's delayed ACK)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        http_socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        http_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        http_socket.bind((settings.host, settings.http_port))
        self.http_port = http_socket.getsockname()[1]
        limits, metrics = settings.limits, self.service.metrics
        app, options = build_rest_app(self.service), settings.tls.uvicorn_options() if settings.tls else {}
        if settings.token:
            app = BearerTokenMiddleware(app, settings.token, metrics)
        if limits:
            app = ignore_disconnects(app)
            options.update(http=guarded_protocol(limits, metrics), timeout_keep_alive=limits.idle_timeout_s)
        config = uvicorn.Config(
            app,
            log_level=settings.log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
            **options,
        )
        self._http = GuardedUvicorn(config)
        self._http.handshake_timeout_s = limits.handshake_timeout_s if limits else None
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[http_socket]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.005)
        # gRPC's own size cap sits above max_request_bytes so oversized requests get INVALID_ARGUMENT from us
        message_cap = 4 * self.service.max_request_bytes + (1 << 20)
        interceptors = [TokenInterceptor(settings.token, metrics)] if settings.token else []
        if limits:
            interceptors.append(RpcLimitInterceptor(limits, metrics))
        self._grpc = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                ("grpc.max_receive_message_length", message_cap),
                ("grpc.max_send_message_length", message_cap),
                ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared one
                *(grpc_options(limits) if limits else []),
            ],
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GrpcInferenceServicer(self.service), self._grpc)
        address = (
            f"[{settings.host}]:{settings.grpc_port}"
            if ":" in settings.host
            else f"{settings.host}:{settings.grpc_port}"
        )
        if settings.tls:
            self.grpc_port = self._grpc.add_secure_port(address, settings.tls.grpc_credentials())
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()

    async def stop(self) -> None:
        """Refuse new requests, answer those in flight, close both ports."""
        timeout = self.settings.shutdown_timeout_s
        self.service.accepting = False
        self._http.should_exit = True
        await asyncio.gather(self._grpc.stop(grace=timeout), self.service.drain(timeout))
        await self._http_task
        await self.service.close()

    async def serve_until_signal(self, on_started=None) -> None:
        """Start, call `on_started(self)`, serve until SIGTERM or SIGINT, then stop gracefully."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if on_started is not None:
            on_started(self)
        await stop.wait()
        await self.stop()


class ServerThread:
    """An `InferenceServer` on its own event loop in a background thread (for tests and loopback runs)."""

    def __init__(self, service: InferenceService, settings: ServerSettings) -> None:
        self.server = InferenceServer(service, settings)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inference-server", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as error:  # report to the starting thread
            self._error = error
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError(f"the server did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    @property
    def http_url(self) -> str:
        scheme = "https" if self.server.settings.tls else "http"
        return f"{scheme}://{self.server.settings.host}:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.server.settings.host}:{self.server.grpc_port}"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
