"""The ASGI middlewares: :class:`HeadAsGet` (HEAD wherever GET works),
:class:`BodyLimit` (413 for an oversized body) and :class:`CachedRecommendations` (the
cached hot path; a GET whose path is not UTF-8 is refused there).

Apart from the routes because they run before FastAPI does: they see raw ASGI scopes and
answer with ready bytes, without the framework's routing, validation or responses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from hybridrec.serve.holder import ModelHolder
from hybridrec.serve.recent import RecentEvents
from hybridrec.serve.schemas import MAX_K

#: Largest request body accepted: the biggest valid request (100,000 score pairs of long
#: text ids) fits well within it; anything larger is answered 413 before it is read whole.
MAX_BODY_BYTES = 16 * 2**20


class HeadAsGet:
    """ASGI middleware: a ``HEAD`` request is answered as its ``GET`` would be, without
    the body (RFC 9110), so health checkers that use HEAD see the service up; FastAPI's
    GET routes alone answer HEAD with 405."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the GET's length header stays
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class BodyLimit:
    """ASGI middleware: a body over :data:`MAX_BODY_BYTES` gets a 413, whether it declares its
    length (refused before reading) or streams in chunks (read here up to the limit, then
    refused, or handed on whole), so no request makes the service buffer or parse more."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):  # the cached hot path
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        # no declared length (chunked): read it here, up to the limit, then hand it on whole
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = b'{"detail":"request body over %d bytes; send smaller batches"}' % self.limit
        await _send_json(send, 413, body)


async def _send_json(send: Any, status: int, body: bytes) -> None:
    """Answer with ready JSON bytes straight through ASGI (no framework on the way)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", b"%d" % len(body)),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CachedRecommendations:
    """ASGI middleware: answers ``GET /recommend/{user_id}`` from the :class:`TopCache`.

    The hot path of the service skips FastAPI's routing, parameter validation and response
    machinery (most of a cached request's cost), but only for requests whose meaning is
    beyond doubt: a path ``/recommend/<id>`` and a query of at most ``k=<1..MAX_K>`` and
    ``exclude_seen=true|false``, each once, in canonical spelling. Everything else (other
    spellings, extra parameters, bad values, a ``k`` deeper than the cache, no model yet)
    goes on to the app, which answers as it always has. Both give the same JSON.
    """

    def __init__(self, app: Any, holder: ModelHolder, events: RecentEvents | None = None) -> None:
        self.app = app
        self.holder = holder
        self.events = events  # users with events since the watermark: filtered or to the app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            if "\ufffd" in scope["path"] and _not_utf8(scope):
                await _send_json(send, 400, _NOT_UTF8)
                return
            body = self._answer(scope)
            if body is not None:
                await _send_json(send, 200, body)
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Any) -> bytes | None:
        path = scope["path"]
        if not path.startswith("/recommend/") or scope.get("root_path"):
            return None
        user_id = path[11:]  # len("/recommend/")
        served = self.holder.current
        if not user_id or "/" in user_id or served is None or served.cache is None:
            return None
        params = _fast_query(scope["query_string"])
        if params is None:
            return None
        events = self.events
        if events is not None and events.concerns(served, user_id, params[1]):
            return events.cached_body(served, user_id, *params)
        return served.cache.body(user_id, *params)


_NOT_UTF8 = b'{"detail":"the URL path is not valid UTF-8: percent-encode ids as UTF-8 bytes"}'


def _not_utf8(scope: Any) -> bool:
    """Whether the path's percent-encoded bytes are not UTF-8: the server decoded them to
    U+FFFD, so the route would answer for an id nobody sent (every such id, one user)."""
    raw = scope.get("raw_path")
    if raw is None:
        return False
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _fast_query(query: bytes) -> tuple[int, bool] | None:
    """``(k, exclude_seen)`` from a query in canonical form (``k=10&exclude_seen=false``, in
    any order, each at most once), else None: the app parses anything else."""
    k, exclude_seen = None, None
    if query:
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"k" and k is None and value.isdigit() and value[:1] != b"0":
                k = int(value) if len(value) <= 4 else MAX_K + 1
                if k > MAX_K:
                    return None
            elif name == b"exclude_seen" and exclude_seen is None and value in _BOOLS:
                exclude_seen = _BOOLS[value]
            else:  # an unknown, repeated or unusually written parameter
                return None
    return (10 if k is None else k), (True if exclude_seen is None else exclude_seen)


_BOOLS = {b"true": True, b"false": False}
