"""The admin routes: ``POST /admin/reload`` and ``POST /admin/items``, with the bearer
token check and the confinement of reloads to the models root.

Apart because they are the service's only privileged surface: the secret's check and the
paths a reload may read are kept in one place, away from the public routes.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from hybridrec.errors import HybridRecError
from hybridrec.recommend import Recommender
from hybridrec.serve.bodies import body_doc, parse_body
from hybridrec.serve.calls import _message
from hybridrec.serve.holder import ModelHolder
from hybridrec.serve.schemas import NewItemsOut, NewItemsRequest, ReloadOut, ReloadRequest

logger = logging.getLogger(__name__)


#: Environment variable holding the admin secret when ``--admin-token`` is not given.
ADMIN_TOKEN_ENV = "HYBRIDREC_ADMIN_TOKEN"

#: What every admin endpoint may answer before its own work (:func:`_admin_check`).
_GUARD_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong admin token"},
    403: {"description": "admin endpoints are off (no token configured)"},
}


def _admin_check(token: str | None) -> Callable[[Request], None]:
    """The guard of ``/admin``: off (403) without a configured secret, else a bearer token
    compared in constant time (401 when wrong or missing)."""

    def check(request: Request) -> None:
        if not token:
            raise HTTPException(
                status_code=403,
                detail=f"admin endpoints are off: start the service with --admin-token or "
                f"{ADMIN_TOKEN_ENV} to enable them",
            )
        given = request.headers.get("authorization", "")
        scheme, _, secret = given.partition(" ")
        # the header's bytes (HTTP headers arrive decoded as Latin-1) against the secret's
        # UTF-8: a non-ASCII secret sent as UTF-8, as a shell or a client sends it, matches
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            secret.strip().encode("latin-1"), token.encode("utf-8")
        )
        if not ok:
            raise HTTPException(
                status_code=401,
                detail="admin endpoints need 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


#: Longest ``model_dir`` a reload takes (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096


def _confine(target: str, root: Path | None) -> None:
    """Refuse a reload path that is no path (a NUL, too long) or lies outside ``root``
    (symlinks resolved), so even a token holder cannot make the service read arbitrary
    directories."""
    if "\x00" in target or len(target) > MAX_PATH_CHARS:
        raise HTTPException(
            status_code=422,
            detail=f"model_dir must be a path of at most {MAX_PATH_CHARS} characters, "
            "without NUL characters",
        )
    if root is not None and not Path(target).resolve().is_relative_to(root.resolve()):
        raise HTTPException(
            status_code=403,
            detail="model_dir must lie under the service's models root (--models-root)",
        )


def _add_admin_routes(
    app: FastAPI, holder: ModelHolder, admin_token: str | None, models_root: Path | None
) -> None:
    """``POST /admin/reload``: swap in a model, for holders of the admin secret only, from
    under ``models_root``."""
    check = _admin_check(admin_token)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        responses={
            **_GUARD_ANSWERS,
            409: {"description": "loading failed; the previous model keeps serving"},
        },
        openapi_extra=body_doc(ReloadRequest, required=False),
    )
    async def reload(request: Request) -> ReloadOut:
        """Load a model (default: the current directory again) and swap it in once loaded."""
        check(request)  # before the body is even read
        raw = await request.body()
        body = parse_body(ReloadRequest, raw) if raw.strip() else None
        target = body.model_dir if body is not None else None
        if target is not None:
            _confine(target, models_root)
        try:  # a load takes seconds: in a thread of its own, not the model worker's queue
            served = await run_in_threadpool(holder.reload, target)
        except Exception as exc:  # any load failure: report it, keep the old model
            shown = "the current model" if target is None else repr(target[:200])
            logger.warning(f"reload of {shown} failed: {str(exc)[:500]}")
            reason = "no model_dir given" if isinstance(exc, ValueError) else "not a loadable model"
            raise HTTPException(  # the log has the details; the answer names no server paths
                status_code=409,
                detail=f"reload failed: {reason}; the previous model keeps serving",
            ) from exc
        return ReloadOut(
            status="reloaded", model=served.recommender.model_name, model_dir=str(served.model_dir)
        )

    @app.post(
        "/admin/items",
        tags=["admin"],
        responses={
            **_GUARD_ANSWERS,
            422: {"description": "the model has no item features, or a bad or known item"},
        },
        openapi_extra=body_doc(NewItemsRequest),
    )
    async def add_items(request: Request) -> NewItemsOut:
        """Add items the model has never seen, ranked from their features at once."""
        check(request)
        raw = await request.body()
        # 10,000 items (~10 MB) parsed on the event loop stalled cached answers ~200 ms
        frame = await run_in_threadpool(_parsed_items, holder.get().recommender, raw)
        try:
            served = await run_in_threadpool(holder.add_items, frame)
        except (HybridRecError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=_message(exc)) from exc
        total = served.recommender.items.num_embeddings
        # with_items refuses a known item, so all of the request's were added (a count taken
        # from the served model before the lock could include another request's items)
        return NewItemsOut(status="added", added=len(frame), num_items=total - 1, saved=False)


def _parsed_items(rec: Recommender, raw: bytes) -> pd.DataFrame:
    return _items_frame(rec, parse_body(NewItemsRequest, raw))


def _items_frame(rec: Recommender, body: NewItemsRequest) -> pd.DataFrame:
    """The request's items as a feature frame (id column, then one column per field)."""
    column = rec.config.get("settings", {}).get("data", {}).get("item_col", "itemId")
    names = sorted({name for item in body.items for name in item.features})
    if column in names:
        raise HTTPException(status_code=422, detail=f"{column!r} is the id, not a feature")
    rows = {column: [item.item_id for item in body.items]}
    rows.update({n: [item.features.get(n) for item in body.items] for n in names})
    if not names:
        raise HTTPException(status_code=422, detail="give each item's features")
    frame = pd.DataFrame(rows)
    frame.attrs["source"] = "the request's items"  # what its errors name, not <DataFrame>
    return frame
