"""Micro-batching: one background task groups queued requests into model calls.

Requests are checked before they are queued (request.py), so a batch holds only valid rows. The
batcher takes queued requests until it has ``max_batch_rows`` rows or ``max_wait_ms`` passed
since the first, encodes them together and runs the model in a worker thread (the event loop
keeps accepting requests meanwhile), then hands each request its slice. If a batch fails, its
requests are retried one by one, so one request that breaks the model cannot fail the others; a
row whose score is not finite fails its own request with a :class:`RowError` (a 4xx).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankmixer.serve.artifact import Artifact
from rankmixer.serve.metrics import Metrics
from rankmixer.serve.preprocess import RowError
from rankmixer.serve.request import HTTPError
from rankmixer.serve.settings import ServeSettings

__all__ = ["MicroBatcher"]


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
                bad = ~np.isfinite(j.result[0]).all(axis=1)
                if bad.any():
                    # Finite inputs at the edge of float32 can still overflow inside the model.
                    r = int(np.argmax(bad))
                    j.result = RowError(f"rows[{r}]", "the model gives no finite score for this row "
                                        "(input values too extreme)", row=r)
        for j in jobs:
            if not isinstance(j.result, Exception):
                for f, n in zip(self.artifact.preprocessor.oov_features, j.result[1].sum(axis=0).tolist()):
                    if n:
                        self.metrics.oov.labels(feature=f).inc(n)
        self.metrics.batch_rows.observe(len(rows))
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.rows.inc(len(rows))
