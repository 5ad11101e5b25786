"""Bounded HTTP connections: uvicorn's httptools protocol with deadlines and a header cap.

uvicorn arms its keep-alive timer only after a response, so a client that sends its request
line or headers one byte a second, or connects and sends nothing, holds a connection for
ever, and llhttp buffers headers without limit. `BoundedHttpToolsProtocol` keeps uvicorn's
parser (llhttp) and request cycle and adds only what they lack:

- the request line and headers must be complete within `header_timeout_seconds` of the
  connection opening or of the request's first byte (else 408, closed);
- the body within `body_timeout_seconds` of the headers (else 408, closed);
- the request line plus headers at most `max_header_bytes` (else 431, closed), counted as
  they arrive, so the parser never holds more than that plus one read;
- above `limit_concurrency` open connections or requests in progress, a request is answered
  503 at once and its connection closed (uvicorn's own check, answered in JSON);
- malformed HTTP is answered with a JSON 400 instead of uvicorn's plain text.

Idle keep-alive connections close after uvicorn's `timeout_keep_alive`. Writes made in one
event-loop step (a response's head and body) leave in one send, which halves the system
calls per answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shortrec.serving.settings import ServeSettings


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_header_bytes: int = 64 * 1024
    limit_concurrency: int | None = 512

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ConnectionLimits:
        return cls(
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            limit_concurrency=settings.limit_concurrency,
        )


def _json_answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_HEAD = "the request line and headers"
_BODY = "the request body"
_OVERLOADED = json.dumps({"error": "too many connections; retry later"}).encode()


async def _service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_OVERLOADED)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": _OVERLOADED})


class _CoalescingTransport:
    """Collects the writes of one event-loop step and sends them as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.limit_concurrency = None  # checked in on_headers_complete, answered in JSON
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._message = 0  # which request of the connection is being read
        self._reading_head = False
        self._head_bytes = 0  # request line and headers parsed so far
        self._head_buffered = 0  # bytes received since this head began, after its first read
        self._refusal: tuple[int, str, str] | None = None

    # --- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        message, reading = self._message, self._reading_head
        super().data_received(data)
        if self.transport.is_closing() or not self._reading_head:
            return
        if reading and message == self._message:  # the same head is still incomplete
            self._head_buffered += len(data)
            if self._head_buffered > self.limits.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", self._too_large())

    def send_400_response(self, msg: str) -> None:
        status, reason, message = self._refusal or (400, "Bad Request", "malformed HTTP request")
        self._cancel_timers()
        self.transport.write(_json_answer(status, reason, message))
        self.transport.close()

    # --- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message += 1
        self._reading_head, self._head_bytes, self._head_buffered = True, 0, 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._on_timeout, _BODY
        )
        limit = self.limits.limit_concurrency
        over = limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit)
        app = self.app
        if over:
            self.app = _service_unavailable
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # --- limits -------------------------------------------------------------------------------
    def _too_large(self) -> str:
        return f"request line and headers over {self.limits.max_header_bytes} bytes"

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_header_bytes and self._refusal is None:
            self._refusal = (431, "Request Header Fields Too Large", self._too_large())
            raise ValueError("headers too large")  # stops llhttp: answered by send_400_response

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._on_timeout, _HEAD
        )

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _on_timeout(self, what: str) -> None:
        self._head_timer = self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = (
            cycle is not None
            and not cycle.response_complete
            and (cycle.response_started or what == _HEAD)
        )
        if answering:  # an answer is on its way (pipelining): close the connection after it
            cycle.keep_alive = False
            return
        self._refuse(408, "Request Timeout", f"{what} did not arrive in time")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any, is not sent
            self.cycle.message_event.set()
        self.transport.write(_json_answer(status, reason, message))
        self.transport.close()


def http_protocol(settings: ServeSettings) -> functools.partial:
    """The protocol factory for `uvicorn.Config(http=...)`; picklable for `--workers`."""
    return functools.partial(
        BoundedHttpToolsProtocol, limits=ConnectionLimits.from_settings(settings)
    )


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The uvicorn settings that bound connections (see module docstring)."""
    return {
        "http": http_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
