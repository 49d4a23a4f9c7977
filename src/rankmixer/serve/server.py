"""``rankmixer serve``: an HTTP scoring server for an exported artifact (FastAPI + uvicorn).

Request (``POST /v1/score``): the candidates of one user / context::

    {"model_version": "optional: refuse if another version is served",
     "context":    {"user_id": 7, "hour": 20, "weekday": 5, "hist_movies": [...], "hist_genres": [...]},
     "candidates": [{"movie_id": 1, "genres": ["Comedy"], "release_year": 1995}, ...]}

Each candidate row is ``context`` plus the candidate's own fields (a field in both is an
error); every input column of the artifact must be in one of them (``null`` = unknown value).
Response: ``{"model", "model_version", "tasks", "scores": {task: [p per candidate]}, "oov":
{feature: values mapped to OOV in this request}}``.

How a request flows: the handler reads the body (refusing it past ``max_body_bytes``), parses
and checks every value (4xx naming the field: nothing unchecked reaches the model), and queues
the rows. One background task, the *micro-batcher*, takes queued requests until it has
``max_batch_rows`` rows or ``max_wait_ms`` passed since the first, encodes them together and
runs the model in a worker thread (so the event loop keeps accepting requests meanwhile), then
hands each request its slice. If a batch fails, its requests are retried one by one, so one
request that breaks the model cannot fail the others.

Endpoints: ``/v1/score``, ``/v1/model`` (the manifest), ``/healthz`` (process up), ``/readyz``
(artifact loaded and warmed up), ``/metrics`` (Prometheus), ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rankmixer.serve.artifact import Artifact
from rankmixer.serve.preprocess import RowError


class ServeSettings(BaseModel):
    """Server limits and batching. Defaults suit a small CPU model."""

    model_config = ConfigDict(extra="forbid")

    max_batch_rows: int = Field(1024, ge=1, description="rows per model call (a micro-batch)")
    max_wait_ms: float = Field(2.0, ge=0, description="how long the first queued request waits for company")
    max_candidates: int = Field(1000, ge=1, description="rows one request may carry (more: 413)")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="request body limit (more: 413)")
    max_queued_rows: int = Field(50_000, ge=1, description="rows waiting for the model (more: 503, shed load)")
    threads: int | None = Field(None, ge=1, description="model threads (default: the runtime's)")


# ---- request / response models (also the OpenAPI schema) ------------------------------------
class ScoreRequest(BaseModel):
    """Candidates of one user / context. Each row = context + candidate."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name; refused (404) if another model is served")
    model_version: str | None = Field(None, description="refused (404) if another version is served")
    context: dict[str, Any] = Field(default_factory=dict, description="features shared by every candidate")
    candidates: list[dict[str, Any]] = Field(min_length=1, description="one object of feature values per candidate")


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


# ---- metrics ------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics on a private registry (several apps can live in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rankmixer_requests", "Scoring requests by HTTP status", ["status"], registry=r)
        self.latency = Histogram(
            "rankmixer_request_latency_seconds", "Scoring request latency (body read to response)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r)
        self.batch_rows = Histogram(
            "rankmixer_batch_rows", "Rows per model call (micro-batch size)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192), registry=r)
        self.batch_requests = Histogram(
            "rankmixer_batch_requests", "Requests per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        secs = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
        self.encode_seconds = Histogram(
            "rankmixer_encode_seconds", "Raw values -> ids, per micro-batch", buckets=secs, registry=r)
        self.model_seconds = Histogram(
            "rankmixer_model_seconds", "Model call per micro-batch", buckets=secs, registry=r)
        self.rows = Counter("rankmixer_rows_scored", "Candidate rows scored", registry=r)
        self.oov = Counter("rankmixer_oov_values", "Values mapped to the OOV id, by feature", ["feature"], registry=r)
        self.queued = Gauge("rankmixer_queued_rows", "Rows waiting for the model", registry=r)
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        qps = Gauge("rankmixer_qps", "Scoring requests per second over the last 10 s", registry=r)
        qps.set_function(self.qps)

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)
        now = time.monotonic()
        with self._lock:
            self._recent.append(now)

    def qps(self, window: float = 10.0) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0] < now - window:
                self._recent.popleft()
            return len(self._recent) / window


# ---- micro-batching -------------------------------------------------------------------------
@dataclass
class _Job:
    rows: list[dict[str, Any]]
    future: asyncio.Future
    result: Any = field(default=None)


class MicroBatcher:
    """One background task that groups queued requests into model calls."""

    def __init__(self, artifact: Artifact, settings: ServeSettings, metrics: Metrics) -> None:
        self.artifact, self.settings, self.metrics = artifact, settings, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.queued_rows = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rankmixer-model")
        self._task: asyncio.Task | None = None
        self._carry: _Job | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Queue checked rows; returns (probabilities, OOV counts) of exactly these rows."""
        if self.queued_rows + len(rows) > self.settings.max_queued_rows:
            raise HTTPError(503, f"server overloaded: {self.queued_rows} rows queued (limit "
                                 f"{self.settings.max_queued_rows}); retry later")
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self.queued_rows += len(rows)
        self.metrics.queued.set(self.queued_rows)
        await self.queue.put(job)
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        first = self._carry or await self.queue.get()
        self._carry = None
        jobs, n = [first], len(first.rows)
        deadline = loop.time() + self.settings.max_wait_ms / 1000
        while n < self.settings.max_batch_rows:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            if n + len(job.rows) > self.settings.max_batch_rows:
                self._carry = job  # first of the next batch
                break
            jobs.append(job)
            n += len(job.rows)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            try:
                await loop.run_in_executor(self.executor, self._run, jobs)
            except Exception as e:  # noqa: BLE001 (keep the loop alive; fail only these jobs)
                for job in jobs:
                    job.result = e
            for job in jobs:
                self.queued_rows -= len(job.rows)
                if not job.future.done():  # the client may have gone
                    if isinstance(job.result, Exception):
                        job.future.set_exception(job.result)
                    else:
                        job.future.set_result(job.result)
            self.metrics.queued.set(self.queued_rows)

    def _run(self, jobs: list[_Job]) -> None:
        """Worker thread: score all jobs' rows in one call; on failure, each job alone."""
        t0 = time.perf_counter()
        rows = [r for j in jobs for r in j.rows]
        try:
            arrays, oov = self.artifact.preprocessor.encode(rows)
            t1 = time.perf_counter()
            probs = self.artifact.run_model(arrays)
            self.metrics.encode_seconds.observe(t1 - t0)
            self.metrics.model_seconds.observe(time.perf_counter() - t1)
            start = 0
            for j in jobs:
                end = start + len(j.rows)
                j.result = (probs[start:end], oov[start:end])
                start = end
        except Exception:
            for j in jobs:
                try:
                    j.result = self.artifact.score(j.rows)
                except Exception as e:  # noqa: BLE001 (the error goes back to its own request)
                    j.result = e
        for j in jobs:
            if not isinstance(j.result, Exception):
                for f, n in zip(self.artifact.preprocessor.oov_features, j.result[1].sum(axis=0).tolist()):
                    if n:
                        self.metrics.oov.labels(feature=f).inc(n)
        self.metrics.batch_rows.observe(len(rows))
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.rows.inc(len(rows))


# ---- request handling -----------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request body is {int(declared)} bytes; the limit is {limit}", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, artifact: Artifact, settings: ServeSettings) -> list[dict[str, Any]]:
    """Body -> checked rows, or an HTTPError naming the field."""
    if not body:
        raise HTTPError(400, "empty request body; expected a JSON object", "body")
    try:
        # Python's parser accepts NaN / Infinity; the value checks below refuse them by field.
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"malformed JSON: {e}", "body") from None
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
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise HTTPError(422, f"{loc}: {err['msg']}", loc) from None
    if req.model is not None and req.model != artifact.name:
        raise HTTPError(404, f"{req.model!r} is not served here (serving {artifact.name!r})", "model")
    if req.model_version is not None and req.model_version != artifact.version:
        raise HTTPError(404, f"{req.model_version!r} is not served here (serving "
                             f"{artifact.version!r})", "model_version")
    pre = artifact.preprocessor
    rows = []
    for i, cand in enumerate(req.candidates):
        clash = sorted(set(cand) & set(req.context))
        if clash:
            raise HTTPError(422, f"candidates[{i}].{clash[0]}: also given in context (give it in one place)",
                            f"candidates[{i}].{clash[0]}")
        try:
            rows.append(pre.check_row({**req.context, **cand}, f"candidates[{i}]"))
        except RowError as e:
            # Name the place the client wrote the value: context.x rather than candidates[i].x.
            name = e.field.split(".", 1)[1]
            field = f"context.{name}" if name.split("[")[0] in req.context else e.field
            raise HTTPError(422, f"{field}: {str(e).split(': ', 1)[1]}", field) from None
    return rows


def create_app(artifact_dir: str, settings: ServeSettings | None = None) -> FastAPI:
    """The server app. The artifact loads in a thread at startup; /readyz says when it is in."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    state: dict[str, Any] = {"artifact": None, "batcher": None, "error": None}

    def load() -> None:
        try:
            art = Artifact(artifact_dir, threads=settings.threads)
            # Warm-up: one real call, so the first request does not pay for lazy initialisation.
            dummy = {i.name: None for i in art.preprocessor.inputs}
            art.score([art.preprocessor.check_row(dummy, "warmup")])
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
        responses={c: {"model": ErrorResponse} for c in (400, 404, 413, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
    )
    async def score(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        status = 200
        try:
            batcher: MicroBatcher | None = state["batcher"]
            if batcher is None:
                raise HTTPError(503, "model not loaded yet (see /readyz)")
            body = await _read_body(request, settings.max_body_bytes)
            art = batcher.artifact
            rows = _parse(body, art, settings)
            probs, oov = await batcher.submit(rows)
            counts = oov.sum(axis=0).tolist()
            out = {"model": art.name, "model_version": art.version, "tasks": art.tasks,
                   "scores": {t: probs[:, k].tolist() for k, t in enumerate(art.tasks)},
                   "oov": {f: n for f, n in zip(art.preprocessor.oov_features, counts) if n}}
            return JSONResponse(out)
        except HTTPError as e:
            status = e.status
            return JSONResponse({"detail": e.detail, "field": e.field}, status_code=e.status)
        except Exception as e:  # noqa: BLE001 (a model failure for this request only)
            status = 500
            return JSONResponse({"detail": f"scoring failed: {type(e).__name__}: {e}"}, status_code=500)
        finally:
            metrics.observe_request(status, time.perf_counter() - t0)

    return app


def serve(artifact_dir: str, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(create_app(artifact_dir, settings), host=host, port=port, log_level=log_level, access_log=False)
