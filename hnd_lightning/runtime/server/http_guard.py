"""REST's limits, in uvicorn's httptools protocol: header size, read timeouts, idle connections, a connection cap.

uvicorn alone caps none of these (httptools has no header cap; nothing times out a slow sender or a
connection that never sends a request; `limit_concurrency` answers 503 to every connection, admitted
or not, once the count is reached). `guarded_protocol(limits, metrics)` returns a protocol class for
`uvicorn.Config(http=...)` that adds, per connection:

    head larger than max_header_bytes       431, JSON body; counted as limit="header_bytes"
    head not complete in header_timeout_s   408 and close; limit="header_timeout"
    body not complete in body_timeout_s     408 and close; limit="body_timeout"
    no request for idle_timeout_s           closed (fresh, or kept alive after an answer); limit="idle"
    over http_max_connections               its first request gets 503 (JSON body), then close; limit="connections"

Timeouts run only while the client owes bytes, never while the server computes. An error answered
while the client is still sending is followed by up to `LINGER_S` of reading and discarding, so the
client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hnd_lightning.runtime.server.limits import Limits

LINGER_S = 1.0
LINGER_BYTES = 1 << 20


class HttpGuard:
    """What the connections of one server share: the limits, the metrics and the count of admitted ones."""

    def __init__(self, limits: Limits, metrics: Any) -> None:
        self.limits, self.metrics, self.admitted = limits, metrics, 0

    def hit(self, limit: str) -> None:
        self.metrics.limit_hits.labels("http", limit).inc()


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def refusal_app(status: int, message: str) -> Any:
    """An ASGI app answering `status` with `{"error": message}` and closing the connection."""
    body = _error_body(message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the module's limits; `guard` is set per server by `guarded_protocol`."""

    guard: HttpGuard

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._reading: str | None = None  # "head", "body", or None (waiting for a request, or the app answers)
        self._head_bytes = 0  # bytes received while the head was incomplete
        self._exact_head = 0  # URL and header bytes of the current head, as parsed
        self._timer = None
        self._timer_for: str | None = None
        self._admitted = False
        self._lingering = 0  # > 0: an error went out; discard what still comes, up to LINGER_BYTES

    # ------------------------------------------------------------------ connections
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        guard = self.guard
        if guard.admitted < guard.limits.http_max_connections:
            guard.admitted += 1
            self._admitted = True
            guard.metrics.open_connections.labels("http").inc()
        # a connection that never sends a request closes like one kept alive after an answer
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc) -> None:
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self.guard.admitted -= 1
            self.guard.metrics.open_connections.labels("http").dec()
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.guard.hit("idle")
        super().timeout_keep_alive_handler()

    # ------------------------------------------------------------------ reading
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self._reading is None:
            self._reading = "head"
        if self._reading == "head":
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._reading == "head" and self._head_bytes > self.guard.limits.max_header_bytes:
            self.guard.hit("header_bytes")
            self._answer_and_close(431, self._header_message(self._head_bytes, complete=False))
        elif self._reading != self._timer_for:
            self._cancel_timer()
            if self._reading is not None:
                limits = self.guard.limits
                seconds = limits.header_timeout_s if self._reading == "head" else limits.body_timeout_s
                self._timer = self.loop.call_later(seconds, self._read_timeout, self._reading)
                self._timer_for = self._reading

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading, self._exact_head = "head", 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._exact_head += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._exact_head += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._reading, self._head_bytes = "body", 0
        if self._exact_head > self.guard.limits.max_header_bytes:
            self.guard.hit("header_bytes")
            self.app = refusal_app(431, self._header_message(self._exact_head, complete=True))
        elif not self._admitted:
            self.guard.hit("connections")
            self.app = refusal_app(
                503,
                f"the server holds its maximum of {self.guard.limits.http_max_connections} connections "
                "(limits.http_max_connections); try again shortly",
            )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = None
        super().on_message_complete()

    # ------------------------------------------------------------------ refusing
    def _header_message(self, size: int, complete: bool) -> str:
        what = "request head" if complete else "request head, still incomplete,"
        return (
            f"the {what} has {size:,} bytes, more than limits.max_header_bytes={self.guard.limits.max_header_bytes:,}; "
            "send fewer or shorter headers"
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_for = None, None

    def _read_timeout(self, part: str) -> None:
        self._timer, self._timer_for = None, None
        if self.transport.is_closing() or self._reading != part:
            return
        setting = "header_timeout_s" if part == "head" else "body_timeout_s"
        self.guard.hit(setting.removesuffix("_s"))
        message = (
            f"the request {part} did not arrive within limits.{setting}={getattr(self.guard.limits, setting):g} s; "
            "send it faster, or ask for a higher limit"
        )
        cycle = self.cycle if part == "body" else None
        if cycle is not None:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the app, waiting for the body, stops; its answer is not sent
            cycle.message_event.set()
        self._answer_and_close(408, message)

    def _answer_and_close(self, status: int, message: str) -> None:
        """Write an error answer outside any request cycle, read and discard for LINGER_S, then close."""
        body = _error_body(message)
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self._reading, self._lingering = None, 1
        self._unset_keepalive_if_required()
        self._cancel_timer()
        self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(limits: Limits, metrics: Any) -> type[GuardedHttpProtocol]:
    """A `GuardedHttpProtocol` class for one server (pass as `uvicorn.Config(http=...)`)."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": HttpGuard(limits, metrics)})
