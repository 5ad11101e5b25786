"""Every answer is JSON, and no answer carries a path, an exception text or a 500.

Bad input is a 4xx that says what is wrong (in the client's own terms); the database being
unavailable is a 503. An unexpected exception is logged with its traceback on the server and
answered with a generic 503 by `GuardMiddleware`, which, unlike Starlette's 500 handler, does
not re-raise: uvicorn would then close the keep-alive connection and a request pipelined
behind the failed one would never be answered.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shortrec.serving.schemas import InvalidInput, error_list
from shortrec.serving.store import StoreUnavailableError

log = logging.getLogger("shortrec.serving")


class ApiError(Exception):
    """An answer other than 2xx, with a message safe to show to any client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was being read."""


def invalid_response(errors: list[dict[str, str]]) -> JSONResponse:
    message = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        message += f"; ... and {len(errors) - 5} more"
    return JSONResponse(
        status_code=422,
        content={"error": "invalid request", "message": message, "errors": errors[:100]},
    )


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return invalid_response(error_list(list(error.errors())))

    @app.exception_handler(InvalidInput)
    async def _on_invalid_input(request: Request, error: InvalidInput) -> JSONResponse:
        return invalid_response(error.errors)

    @app.exception_handler(ApiError)
    async def _on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return json_error(error.status, error.message, error.headers)

    @app.exception_handler(BodyTooLarge)
    async def _on_too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return json_error(413, f"request body over {max_body_bytes} bytes")

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = "no such page"
        elif error.status_code == 405:
            message = "method not allowed"
        else:
            message = str(error.detail) if error.status_code < 500 else "unavailable"
        return json_error(min(error.status_code, 503), message, error.headers)

    @app.exception_handler(StoreUnavailableError)
    async def _on_store(request: Request, error: StoreUnavailableError) -> JSONResponse:
        log.error("event store unavailable: %s", error)
        return json_error(503, "the event store is unavailable; retry later")


class GuardMiddleware:
    """Answers an unexpected exception with a generic JSON 503 and keeps the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if started:  # too late for a clean answer: the client sees a cut response
                raise
            body = json.dumps({"error": "temporarily unable to answer; retry later"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
