"""The scoring server's Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Prometheus metrics on a private registry (several apps can live in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # status "499": the client went away before its request was read (not a server error).
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
