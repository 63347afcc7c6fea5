"""Connection limits uvicorn lacks: a deadline for request headers and a cap on open connections.

uvicorn closes an idle keep-alive connection only after it has answered a request on it: a
connection that never sends a complete request (no bytes, or headers trickled a byte at a
time) is kept for ever, and about 20,000 of them exhausted the process's file descriptors,
after which the server refused everyone. Its ``limit_concurrency`` answers 503 only once
headers are complete, and in plain text. :class:`GuardedHttpProtocol` (uvicorn's
httptools protocol plus a few overrides, given to ``uvicorn.Config(http=...)``) adds:

- **a header deadline**: from the moment a connection opens, and again after each response,
  the next request's headers must be complete within ``header_timeout`` seconds and
  ``max_header_bytes`` bytes. Otherwise the connection is closed (a 408, or 431 for too many
  header bytes, is sent first when part of a request had arrived);
- **a connection cap**: a request arriving while more than ``max_connections`` connections
  are open gets a JSON 503 with ``Retry-After`` and the connection is closed; connections
  beyond twice that are closed as soon as they are accepted, so a flood can never use up the
  file descriptors. Half-open connections thus occupy a slot for at most ``header_timeout``.

- **a body deadline**: once a request's headers are complete, its body must be complete
  within ``body_timeout`` seconds, or a 408 is sent (if no answer has begun) and the
  connection is closed. Without it a client trickling a body one byte at a time held a
  connection, and its request task, for as long as it liked, and enough of them reached the
  cap. The body's size is bounded by :class:`hybridrec.serve.middleware.BodyLimit`.
- **a send deadline**: an answer the client stops reading (the transport's buffer above its
  high-water mark) must start draining again within ``body_timeout`` seconds, or the
  connection is aborted and its buffered answer dropped. Without it a client that never
  read kept its connection and megabytes of answer for as long as it liked.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a connection may take to send complete request headers (also the keep-alive idle
#: limit): far more than any real client needs on a network, short enough that idle
#: connections cannot pile up.
HEADER_TIMEOUT = 5.0
#: Seconds a request's body may take once its headers are complete: the largest body the
#: service accepts (16 MiB) needs ~4.5 Mbit/s to arrive in time; real clients send theirs
#: in one go.
BODY_TIMEOUT = 30.0
#: Open connections served at once; requests beyond get 503 (see the module docstring).
MAX_CONNECTIONS = 1000
#: Bytes of request line and headers accepted before they must be complete.
MAX_HEADER_BYTES = 64 * 1024

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}


def refusal(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with a JSON ``detail``."""
    body = json.dumps({"detail": detail}).encode()
    reason = _REASONS.get(status, b"Service Unavailable")
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"%sconnection: close\r\n\r\n%s" % (status, reason, len(body), retry, body)
    )


BUSY_DETAIL = "the service has too many open connections; retry shortly"


async def busy_app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a request gets while the server is over its connection cap."""
    body = json.dumps({"detail": BUSY_DETAIL}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap.

    Configure a subclass with :func:`guarded_protocol` (uvicorn builds one protocol object
    per connection from the class, so the limits are class attributes).
    """

    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES
    body_timeout: float = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._begun = False  # a request's first bytes parsed, its headers not yet complete
        self._in_body = False  # a request's headers complete, its body not yet
        self._answered_early = False  # its answer was complete before its body
        self._send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > 2 * self.max_connections:  # a flood: refuse at once
            self._close_with(refusal(503, BUSY_DETAIL))
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:  # waiting for headers: count them before parsing
            # (after, a read that completes them was never counted: ~128 KB got through);
            # body bytes that came in the same read are not header bytes
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4
            if self._header_bytes > self.max_header_bytes:
                detail = f"request headers over {self.max_header_bytes} bytes"
                self._close_with(refusal(431, detail))
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True  # also for bytes that came with the previous request's packet

    def on_headers_complete(self) -> None:
        self._begun = False
        self._cancel_deadline()
        over = len(self.connections) > self.max_connections
        self.app = busy_app if over else self.config.loaded_app  # read by the parent's method
        super().on_headers_complete()
        self._in_body = True
        # cancelled by on_message_complete: at once for a request without a body
        self._cancel_body_deadline()
        self._body_deadline = self.loop.call_later(self.body_timeout, self._expire_body)

    def on_message_complete(self) -> None:
        self._cancel_body_deadline()
        self._in_body = False
        super().on_message_complete()
        if self._answered_early and not self.transport.is_closing():
            self._answered_early = False  # the rest of the body is read: now the next one's
            self._await_headers()

    def on_response_complete(self) -> None:
        next_is_queued = bool(self.pipeline)  # its headers are complete already
        super().on_response_complete()
        if self._in_body:  # answered before its body was read (401, 413): the rest of the
            # body is no header bytes; the header clock starts once it has arrived (the body
            # deadline still bounds how long that may take)
            self._answered_early = True
            return
        if not next_is_queued and not self.transport.is_closing():
            if self._begun:  # part of the next request is here: not an idle keep-alive,
                self._unset_keepalive_if_required()  # so the header deadline answers 408
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_body_deadline()
        self._cancel_send_deadline()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.body_timeout, self._expire_send)

    def resume_writing(self) -> None:
        self._cancel_send_deadline()
        super().resume_writing()

    def _cancel_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _expire_send(self) -> None:
        """The client has not read its answer in time: drop the connection and the
        buffered answer."""
        self._send_deadline = None
        self.transport.abort()

    def _await_headers(self) -> None:
        """Start the clock for the next request's headers."""
        self._cancel_deadline()
        self._header_bytes = 0
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _expire_body(self) -> None:
        """The body did not arrive in time: a 408 unless an answer has begun, then close
        (the request's task sees a disconnect)."""
        self._body_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            detail = f"request body not complete within {self.body_timeout:g} s"
            self._close_with(refusal(408, detail))
        else:
            self.transport.close()

    def _expire(self) -> None:
        """The headers did not arrive in time: say so if a request had begun, then close."""
        self._deadline = None
        if self._header_bytes or self._begun:
            detail = f"request headers not complete within {self.header_timeout:g} s"
            self._close_with(refusal(408, detail))
        elif not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes it cannot parse as HTTP, as JSON like every error."""
        self._close_with(refusal(400, f"malformed HTTP request: {msg}"[:200]))

    def _close_with(self, response: bytes) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def guarded_protocol(
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_header_bytes: int = MAX_HEADER_BYTES,
    body_timeout: float = BODY_TIMEOUT,
) -> type[GuardedHttpProtocol]:
    """A :class:`GuardedHttpProtocol` subclass with these limits, for ``uvicorn.Config``.

    Raises:
        ValueError: a limit is not positive.
    """
    if (
        not header_timeout > 0
        or not body_timeout > 0
        or max_connections < 1
        or max_header_bytes < 1
    ):
        raise ValueError(
            "header_timeout, body_timeout, max_connections and max_header_bytes must be "
            f"positive, got {header_timeout}, {body_timeout}, {max_connections}, "
            f"{max_header_bytes}"
        )
    limits = {
        "header_timeout": float(header_timeout),
        "max_connections": int(max_connections),
        "max_header_bytes": int(max_header_bytes),
        "body_timeout": float(body_timeout),
    }
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), limits)
