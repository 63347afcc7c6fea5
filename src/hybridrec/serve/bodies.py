"""Request bodies and error answers: parsing a body into its model, its OpenAPI entry,
and the short 422 and HTTP-error answers.

Apart from the routes because every route group (recommend, score, admin, events) reads its
body through :func:`parse_body`, and the error handlers are the app's, not any route's.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` JSON validated as ``model``; a 422 (through :func:`_invalid_request`) if not.

    pydantic's own JSON parser is used: it bounds nesting depth, reads NaN/Infinity
    literals as numbers that strict fields then refuse, and validates while parsing.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for an endpoint that reads its body itself (``openapi_extra``),
    with the model's schema inlined (its ``$defs`` would not resolve there)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return inline(defs[ref.rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": required, "content": content}}


#: Validation errors listed in a 422 at most, and bytes its whole answer may take (about;
#: with the HTTP headers, an error answer stays under 1 KB).
MAX_ERRORS, MAX_ERROR_BYTES = 10, 700
#: Characters kept of a location part (a JSON key can be any length) and of a message.
_LOC_TEXT, _MSG_TEXT = 40, 160


def _short(value: Any, limit: int) -> Any:
    """Text cut to ``limit`` characters (marked with an ellipsis); anything else as is."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _short_error(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error with its location, message and type, shortened; never the input."""
    return {
        "loc": [_short(part, _LOC_TEXT) for part in list(error.get("loc", ()))[:6]],
        "msg": _short(str(error.get("msg", "")), _MSG_TEXT),
        "type": _short(str(error.get("type", "")), _LOC_TEXT),
    }


def _rendered_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


async def _invalid_request(request: Any, exc: Exception) -> Response:
    """A short 422 that names what was wrong without echoing the input.

    FastAPI's default answer repeats every offending value, so a 54 MB body got a 53 MB
    answer, and a NaN or Infinity literal in the body made the answer itself unrenderable
    (a 500). Here each error keeps its location, message and type, shortened, and errors are
    listed (at most :data:`MAX_ERRORS`) while the answer stays within
    :data:`MAX_ERROR_BYTES`; ``more_errors`` counts the rest.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    body: dict[str, Any] = {"detail": []}
    for error in errors[:MAX_ERRORS]:
        body["detail"].append(_short_error(error))
        if len(body["detail"]) > 1 and _rendered_size(body) > MAX_ERROR_BYTES:
            body["detail"].pop()
            break
    if len(errors) > len(body["detail"]):
        body["more_errors"] = len(errors) - len(body["detail"])
    return JSONResponse(body, status_code=422)


async def _http_error(request: Any, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a text detail shortened: a message may
    quote a requested id (an unknown item in a URL can be 60 KB long)."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        raise exc
    detail = _short(exc.detail, _MSG_TEXT)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Any, exc: Exception) -> Response:
    """A client that left before its whole body arrived (or was cut off at the body
    deadline, which already answered 408): nobody reads this answer, and a client's doing
    is no server error, so the log gets no traceback."""
    return JSONResponse(
        {"detail": "the connection closed before the whole body arrived"}, status_code=400
    )
