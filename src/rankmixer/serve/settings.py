"""The scoring server's limits, batching and timeouts (one typed place; the CLI fills it).
Unknown keys and booleans given for numbers are errors (:class:`~rankmixer.core.strict.StrictModel`)."""

from __future__ import annotations

from pydantic import Field

from rankmixer.core.strict import StrictModel


class ServeSettings(StrictModel):
    """Server limits, batching and timeouts. Defaults suit a small CPU model."""

    max_batch_rows: int = Field(1024, ge=1, description="rows per model call (a micro-batch)")
    max_wait_ms: float = Field(2.0, ge=0,
                               description="how long the first queued request waits for company")
    max_candidates: int = Field(1000, ge=1, description="rows one request may carry (more: 413)")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="request body limit (more: 413)")
    max_queued_rows: int = Field(50_000, ge=1,
                                 description="rows waiting for the model (more: 503, shed load)")
    threads: int | None = Field(None, ge=1, description="model threads (default: the runtime's)")
    # Slow or idle clients must not hold connections (and memory) forever.
    header_timeout_s: float = Field(10.0, gt=0,
                                    description="a connection must send a complete request head within this "
                                    "many seconds of opening (or of its previous response); else it is closed")
    body_timeout_s: float = Field(30.0, gt=0,
                                  description="a request body must arrive within this many seconds (else 408)")
    idle_timeout_s: float = Field(5.0, gt=0,
                                  description="an idle keep-alive connection is closed after this long")

def check_port(port: int) -> int:
    """A TCP port to listen on: an integer in 1..65535 (0 would pick a random one)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1-65535, got {port!r}")
    return port
