"""``rankmixer serve``: an HTTP scoring server for an exported artifact (FastAPI + uvicorn).

Request (``POST /v1/score``): the candidates of one user / context::

    {"model_version": "optional: refuse if another version is served",
     "context":    {"user_id": 7, "hour": 20, "weekday": 5, "hist_movies": [...], "hist_genres": [...]},
     "candidates": [{"movie_id": 1, "genres": ["Comedy"], "release_year": 1995}, ...]}

Each candidate row is ``context`` plus the candidate's own fields (a field in both is an
error); every input column of the artifact must be in one of them (``null`` = unknown value; a
behaviour field may be left out: no positions).
Response: ``{"model", "model_version", "tasks", "scores": {task: [p per candidate]}, "oov":
{feature: values mapped to OOV in this request}}``.
An interpolating artifact (two conversion-window models, ``interpolation.py``) also takes
``"window_days"``, the conversion window its scores are for.

How a request flows: the handler reads the body (refusing it past ``max_body_bytes`` or
``body_timeout_s``), parses and checks every value (request.py: a 4xx naming the field, never a
500, for anything a client can send), and queues the rows for the micro-batcher (batcher.py),
which runs the model on several requests at once. Connections that never send a complete request
head are closed (connections.py). A client that disconnects mid-body is counted as status 499.

Endpoints: ``/v1/score``, ``/v1/model`` (the manifest), ``/healthz`` (process up), ``/readyz``
(artifact loaded and warmed up), ``/metrics`` (Prometheus), ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rankmixer.serve.interpolation import InterpolatingArtifact, load_artifact
from rankmixer.serve.batcher import MicroBatcher
from rankmixer.serve.connections import timed_protocol
from rankmixer.serve.metrics import Metrics
from rankmixer.serve.preprocess import RowError
from rankmixer.serve.request import (
    ClientGone,
    ErrorResponse,
    HTTPError,
    ScoreRequest,
    ScoreResponse,
    field_of,
    parse_request,
    read_body,
)
from rankmixer.serve.settings import ServeSettings, check_port

__all__ = ["ServeSettings", "check_port", "create_app", "serve", "uvicorn_config"]


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a message quoting a client's key with a lone
    surrogate still encodes (the default UTF-8 rendering would raise, a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(e: HTTPError) -> JSONResponse:
    # After a 408 / 413 the rest of the body may still be on its way: close the connection.
    headers = {"connection": "close"} if e.status in (408, 413) else None
    return SafeJSONResponse({"detail": e.detail, "field": e.field}, status_code=e.status, headers=headers)


def create_app(artifact_dir: str, settings: ServeSettings | None = None) -> FastAPI:
    """The server app. The artifact loads in a thread at startup; /readyz says when it is in."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    state: dict[str, Any] = {"artifact": None, "batcher": None, "error": None}

    def load() -> None:
        try:
            art = load_artifact(artifact_dir, threads=settings.threads)
            # Warm-up: one real call, so the first request does not pay for lazy initialisation.
            dummy = {i.name: None for i in art.preprocessor.inputs}
            row = art.preprocessor.check_row(dummy, "warmup")
            art.score([art.warmup_row(row) if isinstance(art, InterpolatingArtifact) else row])
            state["artifact"] = art
        except Exception as e:  # noqa: BLE001 (reported by /readyz and the log)
            state["error"] = f"{type(e).__name__}: {e}"
            print(f"rankmixer serve: failed to load {artifact_dir}: {state['error']}", flush=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        loader = loop.run_in_executor(None, load)

        async def start_when_loaded() -> None:
            await loader
            if state["artifact"] is not None:
                b = MicroBatcher(state["artifact"], settings, metrics)
                b.start()
                state["batcher"] = b

        starter = loop.create_task(start_when_loaded())
        yield
        starter.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    app = FastAPI(title="rankmixer scoring server", version="1", lifespan=lifespan,
                  description="Scores candidate rows of one user/context with an exported rankmixer model.")
    app.state.metrics = metrics
    app.state.settings = settings

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state["batcher"] is not None:
            a = state["artifact"]
            return JSONResponse({"status": "ready", "model": a.name, "model_version": a.version, "format": a.format})
        if state["error"]:
            return JSONResponse({"status": "failed", "detail": state["error"]}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model_info() -> JSONResponse:
        a = state["artifact"]
        if a is None:
            return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
        return JSONResponse({**a.manifest, "request_inputs": a.preprocessor.spec["inputs"]})

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses={c: {"model": ErrorResponse} for c in (400, 404, 408, 413, 415, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
    )
    async def score(request: Request) -> Response:
        t0 = time.perf_counter()
        status = 200
        try:
            batcher: MicroBatcher | None = state["batcher"]
            if batcher is None:
                raise HTTPError(503, "model not loaded yet (see /readyz)")
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
            art = batcher.artifact
            req, rows = parse_request(body, art, settings)
            try:
                probs, oov = await batcher.submit(rows)
            except RowError as e:  # a row the encoder or the model could not turn into a finite score
                where = f"candidates[{e.row}]"
                e.field = where + e.field[len(f"rows[{e.row}]"):]
                field = field_of(e, where, req.context)
                raise HTTPError(422, f"{field}: {e.message}", field) from None
            counts = oov.sum(axis=0).tolist()
            out = {"model": art.name, "model_version": art.version, "tasks": art.tasks,
                   "scores": {t: probs[:, k].tolist() for k, t in enumerate(art.tasks)},
                   "oov": {f: n for f, n in zip(art.preprocessor.oov_features, counts) if n}}
            return JSONResponse(out)
        except HTTPError as e:
            status = e.status
            return _error(e)
        except ClientGone:
            status = 499  # nginx's "client closed request": nobody reads this answer
            return Response(status_code=499)
        except Exception as e:  # noqa: BLE001 (a model failure for this request only)
            status = 500
            return SafeJSONResponse({"detail": f"scoring failed: {type(e).__name__}: {e}"}, status_code=500)
        finally:
            metrics.observe_request(status, time.perf_counter() - t0)

    return app


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
                   log_level: str = "warning"):
    """The uvicorn configuration ``rankmixer serve`` runs: the app, the connection deadlines
    (head, idle keep-alive) of ``settings``."""
    import uvicorn

    settings = settings or ServeSettings()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          http=timed_protocol(settings.header_timeout_s), timeout_keep_alive=settings.idle_timeout_s)


def serve(artifact_dir: str, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "warning") -> None:
    import uvicorn

    settings = settings or ServeSettings()
    check_port(port)
    uvicorn.Server(uvicorn_config(create_app(artifact_dir, settings), host, port, settings, log_level)).run()
