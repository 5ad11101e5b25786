"""The feed's hot route without the framework: the plain GET of a user's recommendations,
answered from the middleware stack.

Every recommendations request went through FastAPI's router, its dependency solver and
pydantic's validation of two integers: about a fifth of the server's CPU per request with
a fast model (py-spy at 100 req/s). `FeedFastLane`, the innermost of the app's middlewares,
answers the plain form of that request itself: GET (HEAD arrives here as GET, see
`guards.EdgeMiddleware`) of /users/DIGITS/recommendations with no query or `k=DIGITS`, in
the route's bounds. It sends the route's own answer (`routes.users.recommendations_json`)
with the route's headers; the outer middlewares still add the security headers and the
metrics, which see the route's label. Anything else (an id that is not plain decimal, another
parameter, a repeated `k`, a trailing slash) goes on to FastAPI, so its validation and its
error answers stay the only ones; so does a request whose scoring fails.
"""

from __future__ import annotations

import re

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from shortrec.serving.deps import ServingState
from shortrec.serving.routes.users import MAX_K, recommendations_json
from shortrec.serving.schemas import MAX_ID

_PATH = re.compile(r"/users/(0|[1-9][0-9]{0,18})/recommendations")
_QUERY = re.compile(rb"(?:k=(0|[1-9][0-9]{0,3}))?")
DEFAULT_K = 10


class FeedFastLane:
    """ASGI middleware: answers GET /users/{user_id}/recommendations[?k=K] (see the module)."""

    def __init__(self, app: ASGIApp, state: ServingState, route: BaseRoute) -> None:
        self.app = app
        self.state = state
        self.route = route  # the FastAPI route it stands in for: the metrics' label

    def _parse(self, scope: Scope) -> tuple[int, int] | None:
        """(user id, k) of a plain recommendations request, else None."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path = _PATH.fullmatch(scope["path"])
        query = _QUERY.fullmatch(scope["query_string"]) if path else None
        if query is None:
            return None
        user_id, k = int(path[1]), int(query[1]) if query[1] else DEFAULT_K
        return (user_id, k) if user_id <= MAX_ID and 1 <= k <= MAX_K else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = self._parse(scope)
        if asked is not None:
            try:
                body = await recommendations_json(self.state, *asked)
            except Exception:  # FastAPI's route answers it, through the app's error handlers
                body = None
            if body is not None:
                scope["route"] = self.route
                headers = [(b"content-length", b"%d" % len(body)),
                           (b"content-type", b"application/json")]  # fmt: skip
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
