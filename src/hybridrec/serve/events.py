"""``POST /events``: validate a batch of interactions and record it in the event log.

With an event log (``hybridrec serve --events PATH``) the service appends each validated
batch through the log's writer thread (:class:`hybridrec.events.EventLog`: never on the
event loop, never in the model's worker) and answers only once it is committed; what the
recorded events change in ``/recommend`` is :mod:`hybridrec.serve.recent`.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from hybridrec.data.columns import ISO_DATE
from hybridrec.data.encoding import CANONICAL_INT
from hybridrec.events import Event, EventLog, EventLogUnavailable
from hybridrec.serve.bodies import body_doc, parse_body

#: Most events in one ``POST /events`` batch.
MAX_EVENTS = 1000
#: Largest body parsed on the event loop (a 100-event batch is ~6 KB); larger ones in a thread.
_LOOP_BODY_BYTES = 16 * 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------------- request bodies


def _event_id(value: int | str) -> int | str:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("blank id (expected a non-empty integer or string id)")
        if "\x00" in text:  # SQLite's text ends there: stored, it would be another id
            raise ValueError("id contains a NUL character (expected an id without one)")
        return text
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("integer id outside int64 (expected an integer id of at most 64 bits)")
    return value


def _target(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("target is not finite (expected a finite number, e.g. 1 or 0)")
    return float(value)


#: A number written as text: ASCII digits only (Python's float() also reads "1_000" and
#: other scripts' digits, which no file or client means as a timestamp).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIME_EXPECTED = "expected Unix seconds or an ISO date such as 2024-05-01T12:00:00Z"


def _timestamp(value: float | str | None) -> float | None:
    """Unix seconds from a finite number or an ISO date (naive dates are UTC), as files."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            value = float(text)
        elif ISO_DATE.match(text):
            return _iso_seconds(text)
        else:
            raise ValueError(f"timestamp is neither a number nor an ISO date ({_TIME_EXPECTED})")
    if not math.isfinite(value):
        raise ValueError(f"timestamp is not finite ({_TIME_EXPECTED})")
    return float(value)


def _iso_seconds(text: str) -> float:
    """As a file's column of dates is read (a Series: microseconds, years 1-9999)."""
    stamps = pd.to_datetime(pd.Series([text]), errors="coerce", utc=True, format="ISO8601")
    if stamps.isna().iloc[0]:
        raise ValueError(f"timestamp is not a readable ISO date ({_TIME_EXPECTED})")
    return float(stamps.iloc[0].timestamp())


EventId = Annotated[StrictInt | StrictStr, AfterValidator(_event_id)]


class EventIn(BaseModel):
    """One interaction: ids as in the training files (JSON integers stay integers, text
    stays text), ``target`` a number (default 1: a positive), ``timestamp`` optional."""

    model_config = ConfigDict(extra="forbid")

    user: EventId
    item: EventId
    target: Annotated[StrictFloat | StrictInt, AfterValidator(_target)] = 1.0
    timestamp: Annotated[StrictFloat | StrictInt | StrictStr | None, AfterValidator(_timestamp)] = (
        Field(default=None, description="Unix seconds or an ISO date (naive: UTC)")
    )


class EventsRequest(BaseModel):
    """A batch, committed all or nothing."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsOut(BaseModel):
    accepted: int = Field(description="events committed (the whole batch)")
    first_id: int = Field(description="event id of the batch's first event")
    last_id: int = Field(description="event id of its last; the ids in between are the rest")


def _model_misfits(events: list[EventIn], rec: Any) -> list[dict[str, Any]]:
    """What ``hybridrec update --events`` of the served model would refuse, as 422 errors:
    text ids for a model whose ids are integers, and targets other than 0 and 1 for a model
    trained without ``--threshold``. Acknowledged, they would block every later update
    from the log (its watermark cannot pass them)."""
    threshold = rec.config.get("settings", {}).get("data", {}).get("threshold")
    integer = {"user": _integer_ids(rec.users), "item": _integer_ids(rec.items)}
    errors = []
    for j, event in enumerate(events):
        for field in ("user", "item"):
            text = str(getattr(event, field))  # 19-digit integers are read back as text
            if integer[field] and not _INTEGER.fullmatch(text):
                why = f"the model's {field} ids are integers (of at most 18 digits)"
                errors.append(_error(j, field, f"{why}; {text[:20]!r} is not (give one)"))
        if threshold is None and event.target not in (0.0, 1.0):
            why = "the model was trained on 0/1 labels, without --threshold"
            errors.append(_error(j, "target", f"target {event.target:g} is not 0 or 1 ({why})"))
    return errors[:3]  # the first few: the answer stays short (< 1 KB)


def _integer_ids(encoder: Any) -> bool:
    ids = encoder.ids
    return len(ids) > 0 and not isinstance(ids[0], str)


def _error(index: int, field: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", "events", index, field], "msg": message, "type": "value_error"}


#: How an integer id is written as text: what an integer-id model's encoder matches.
_INTEGER = re.compile(CANONICAL_INT)


def add_event_routes(app: FastAPI, log: EventLog | None, holder: Any = None) -> None:
    """``POST /events``: validate a batch, commit it, answer with its ids (404 without a log;
    503, nothing written, when the log cannot be written)."""

    @app.post(
        "/events",
        tags=["events"],
        response_model=EventsOut,
        responses={
            404: {"description": "the service has no event log (start it with --events PATH)"},
            422: {"description": "a bad event (its index and field named); nothing written"},
            503: {"description": "the log cannot be written now; nothing written, retry"},
        },
        openapi_extra=body_doc(EventsRequest),
    )
    async def post_events(request: Request) -> Response:
        """Record a batch of interactions; answered once the whole batch is committed."""
        if log is None:
            raise HTTPException(
                status_code=404,
                detail="this service records no events: start it with --events PATH "
                "(create_app(events=PATH)) to enable POST /events",
            )
        raw = await request.body()
        if len(raw) <= _LOOP_BODY_BYTES:
            body = parse_body(EventsRequest, raw)
        else:
            body = await run_in_threadpool(parse_body, EventsRequest, raw)
        served = holder.current if holder is not None else None
        misfits = [] if served is None else _model_misfits(body.events, served.recommender)
        if misfits:
            return JSONResponse({"detail": misfits}, status_code=422)
        events = [Event(e.user, e.item, e.target, e.timestamp) for e in body.events]
        try:
            first, last = await asyncio.wrap_future(log.append(events))
        except EventLogUnavailable as exc:
            raise HTTPException(
                status_code=503,
                detail=f"{exc}; nothing of this batch was written, retry it",
                headers={"Retry-After": "1"},
            ) from exc
        answer = b'{"accepted":%d,"first_id":%d,"last_id":%d}' % (len(events), first, last)
        return Response(answer, media_type="application/json")
