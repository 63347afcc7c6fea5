"""What every model call in the worker shares: user errors turned into 404/422, known ids
mapped back to the model's own, and JSON serialised off the event loop.

Apart so that the routes, the admin routes and :mod:`hybridrec.serve.recent` use them
without importing one another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, Response
from pydantic import BaseModel

from hybridrec.errors import HybridRecError
from hybridrec.recommend import Recommender
from hybridrec.serve.schemas import plain


def _known_ids(recommender: Recommender, user_ids: Sequence[Any]) -> list[Any]:
    """The model's own raw id for each known user ("42" in a URL -> 42), else the id as given.

    One vectorised lookup per request: the per-user alternative dominates a batch's overhead.
    """
    index = recommender.users.transform(list(user_ids)) if len(user_ids) else []
    known = recommender.users.ids
    return [plain(known[i - 1]) if i > 0 else raw for raw, i in zip(user_ids, index, strict=True)]


def _json_response(out: BaseModel) -> Response:
    """A response model as JSON, serialised here (in the worker thread) rather than by
    FastAPI on the event loop."""
    return Response(out.model_dump_json(), media_type="application/json")


@contextmanager
def _model_call() -> Iterator[None]:
    """Turn the user's errors in recommender code into 404/422 (the code runs in the
    :class:`ModelGate`'s worker, one call at a time, without autograd)."""
    try:
        yield
    except KeyError as exc:  # UnknownIdError is a KeyError
        raise HTTPException(status_code=404, detail=_message(exc)) from exc
    except (HybridRecError, ValueError) as exc:
        raise HTTPException(status_code=422, detail=_message(exc)) from exc


def _message(exc: BaseException) -> str:
    # str(KeyError("x")) is "'x'"; the message itself reads better
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)
