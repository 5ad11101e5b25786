"""Requests refused before any work (an untrusted Host header, a body over the limit), and
the security headers every answer carries.

Pure ASGI middlewares (no per-request task or body buffering, unlike BaseHTTPMiddleware).
The Host check stops DNS-rebinding pages from talking to a server on localhost. The size
check refuses on Content-Length before reading a byte, and caps a chunked body as it streams
in, so a 100 MB body is never held in memory.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shortrec.serving.errors import BodyTooLarge


async def send_json(send: Send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _host_name(host: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = frozenset(host.lower() for host in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any_host:
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if _host_name(host.decode("latin-1").lower()) not in self.hosts:
                await send_json(send, 400, {"error": "untrusted Host header"})
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and not length.isdigit():
            await send_json(send, 400, {"error": "Content-Length is not a number"})
            return
        if length is not None and int(length) > self.max_bytes:
            await send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, capped_receive, send)


# The page loads its script and style from /static and talks only to this server; nothing
# may frame it, and no response is sniffed into another type.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
SECURITY_HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    *_COMMON_HEADERS]  # fmt: skip
# FastAPI's API docs run inline scripts from a CDN: they only get the framing ban.
DOCS_HEADERS = [(b"content-security-policy", b"frame-ancestors 'none'"), *_COMMON_HEADERS]
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})


class EdgeMiddleware:
    """Security headers on every answer, and HEAD answered as GET without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outer, head = scope, scope["method"] == "HEAD"
        extra = DOCS_HEADERS if scope["path"] in DOCS_PATHS else SECURITY_HEADERS
        if head:  # a copy: uvicorn reads the method of its own scope to leave the body out
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # Content-Length stays that of the GET
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if head and "route" in scope:
                outer["route"] = scope["route"]  # for the metrics' route label
