"""A scoring request, from the bytes a client sent to checked rows (or a 4xx naming the field).

The contract: nothing a client can send reaches the model unchecked, and nothing a client can
send makes the server answer 500. Every failure of reading (a body too large or too slow, a
client that goes away), decoding (any bytes, any nesting depth, lone surrogates), validating
(unknown keys at any level, wrong types, out-of-range numbers) is an :class:`HTTPError` with a
4xx status, or :class:`ClientGone`. Messages quote client values shortened and escaped, so a
response is always valid UTF-8 JSON of bounded size.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request

from rankmixer.conversion.interpolate import check_windows
from rankmixer.serve.artifact import Artifact
from rankmixer.serve.interpolation import WINDOW_KEY
from rankmixer.serve.preprocess import RowError, field_name, show_value
from rankmixer.serve.settings import ServeSettings

__all__ = ["ClientGone", "ErrorResponse", "HTTPError", "ScoreRequest", "ScoreResponse", "field_of", "parse_request",
           "read_body"]


class ScoreRequest(BaseModel):
    """Candidates of one user / context. Each row = context + candidate."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name; refused (404) if another model is served")
    model_version: str | None = Field(None, description="refused (404) if another version is served")
    context: dict[str, Any] = Field(default_factory=dict, description="features shared by every candidate")
    candidates: list[dict[str, Any]] = Field(min_length=1, description="one object of feature values per candidate")
    window_days: float | None = Field(None, strict=True, description="conversion window in days, for an interpolating "
                                      "artifact (required there, within its two trained windows; refused elsewhere)")


class ScoreResponse(BaseModel):
    model: str
    model_version: str
    tasks: list[str]
    scores: dict[str, list[float]] = Field(description="task -> probability per candidate, in request order")
    oov: dict[str, int] = Field(description="feature -> values of this request mapped to the OOV id")


class ErrorResponse(BaseModel):
    detail: str
    field: str | None = None


class HTTPError(Exception):
    """A refused request; the message starts with the field it is about."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        if field and not detail.startswith(field):
            detail = f"{field}: {detail}"
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer, not our error."""


# ---- reading --------------------------------------------------------------------------------


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes (else 413) within ``timeout_s`` seconds (else 408);
    :class:`ClientGone` if the client disconnects first."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPError(415, f"content-encoding {show_value(encoding)} is not accepted; send plain JSON", "body")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request body is {int(declared)} bytes; the limit is {limit}", "body")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", "body")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(408, f"request body not received within {timeout_s:g} s", "body") from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


# ---- parsing --------------------------------------------------------------------------------


def field_of(e: RowError, where: str, context: dict[str, Any]) -> str:
    """The field a client wrote: ``context.x`` when the value came from the context, else the
    candidate's own ``candidates[i].x`` (``where`` = ``candidates[i]``)."""
    if e.key is not None and e.key in context and e.field.startswith(where):
        return "context" + e.field[len(where):]
    return e.field


def _window(req: ScoreRequest, artifact: Artifact) -> float | None:
    """The request's conversion window, checked against an interpolating artifact's trained
    windows (None for any other artifact, which refuses a window)."""
    windows = getattr(artifact, "windows", None)
    if windows is None:
        if req.window_days is not None:
            raise HTTPError(422, "window_days: this model does not interpolate conversion windows", "window_days")
        return None
    if req.window_days is None:
        raise HTTPError(422, f"window_days: required by this model (a conversion window in days, within "
                             f"[{windows[0]:g}, {windows[1]:g}])", "window_days")
    try:
        check_windows(*windows, req.window_days)
    except ValueError as e:
        raise HTTPError(422, f"window_days: {e}", "window_days") from None
    return float(req.window_days)


def parse_request(body: bytes, artifact: Artifact,
                  settings: ServeSettings) -> tuple[ScoreRequest, list[dict[str, Any]]]:
    """Body -> (the request, its checked rows), or an HTTPError naming the field."""
    if not body:
        raise HTTPError(400, "empty request body; expected a JSON object", "body")
    try:
        # Python's parser accepts NaN / Infinity; the value checks below refuse them by field.
        doc = json.loads(body)
    except RecursionError:
        raise HTTPError(400, "malformed JSON: nested too deeply", "body") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, ints past the digit limit
        raise HTTPError(400, f"malformed JSON: {str(e)[:200]}", "body") from None
    if not isinstance(doc, dict):
        raise HTTPError(422, f"expected a JSON object with 'candidates', got {type(doc).__name__}", "body")
    n = doc.get("candidates")
    if isinstance(n, list) and len(n) > settings.max_candidates:
        raise HTTPError(413, f"{len(n)} rows in one request; the limit is {settings.max_candidates}",
                        "candidates")
    try:
        req = ScoreRequest.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(field_name(p) for p in err["loc"]) or "body"
        raise HTTPError(422, f"{loc}: {err['msg']}", loc) from None
    except RecursionError:
        raise HTTPError(400, "request nested too deeply", "body") from None
    if req.model is not None and req.model != artifact.name:
        raise HTTPError(404, f"{show_value(req.model)} is not served here (serving {artifact.name!r})", "model")
    if req.model_version is not None and req.model_version != artifact.version:
        raise HTTPError(404, f"{show_value(req.model_version)} is not served here (serving "
                             f"{artifact.version!r})", "model_version")
    window = _window(req, artifact)
    pre = artifact.preprocessor
    rows = []
    for i, cand in enumerate(req.candidates):
        where = f"candidates[{i}]"
        clash = sorted((k for k in cand if k in req.context), key=str)
        if clash:
            field = f"{where}.{field_name(clash[0])}"
            raise HTTPError(422, f"{field}: also given in context (give it in one place)", field)
        try:
            row = pre.check_row({**req.context, **cand}, where)
            rows.append(row if window is None else {**row, WINDOW_KEY: window})
        except RowError as e:
            field = field_of(e, where, req.context)
            raise HTTPError(422, f"{field}: {e.message}", field) from None
        except RecursionError:
            raise HTTPError(400, f"{where}: nested too deeply", where) from None
    return req, rows
