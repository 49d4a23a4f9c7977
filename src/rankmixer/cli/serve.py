"""Serving commands: ``export`` (a run -> a self-contained artifact) and ``serve`` (HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rankmixer.cli.common import console, fail, user_errors

__all__ = ["export", "serve"]


def export(
    run: Path = typer.Option(..., "--run", help="Run directory (its best model)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript | pt2 | eager (MoE: eager)."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (a new one, or an artifact of ours "
                             "with --overwrite)."),
    version: Optional[str] = typer.Option(None, help="Model version (default: run name + weights hash)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it is an artifact rankmixer wrote."),
) -> None:
    """Export a run as a self-contained serving artifact (graph, vocabularies, manifest)."""
    from rankmixer.serve.export import export_run

    with user_errors():
        export_run(run, format, out, version=version, overwrite=overwrite, log=console.print)


def serve(
    model: Path = typer.Option(..., "--model", help="Artifact directory (rankmixer export)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", help="Interface (0.0.0.0 for all)."),
    max_batch_rows: int = typer.Option(1024, min=1, help="Rows per model call."),
    max_wait_ms: float = typer.Option(2.0, min=0.0, help="Micro-batching wait after the first queued request."),
    max_candidates: int = typer.Option(1000, min=1, help="Rows one request may carry."),
    max_body_bytes: int = typer.Option(4 << 20, help="Request body limit."),
    threads: Optional[int] = typer.Option(None, help="Model threads."),
    header_timeout: float = typer.Option(10.0, help="Seconds a connection has to send a complete request head."),
    body_timeout: float = typer.Option(30.0, help="Seconds a request body has to arrive (else 408)."),
    idle_timeout: float = typer.Option(5.0, help="Seconds an idle keep-alive connection stays open."),
) -> None:
    """Serve an artifact over HTTP (POST /v1/score; /healthz, /readyz, /metrics, /docs)."""
    try:
        from rankmixer.serve.artifact import read_manifest
        from rankmixer.serve.server import serve as run_server
        from rankmixer.serve.settings import ServeSettings, check_port
    except ImportError as e:
        fail(ValueError(f"serving needs the serve extra ({e}): pip install -c constraints/cpu.txt -e '.[serve]'"))
    with user_errors():
        check_port(port)
        read_manifest(model)  # a missing or damaged artifact is an error now, not a server that never gets ready
        settings = ServeSettings(max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms, max_candidates=max_candidates,
                                 max_body_bytes=max_body_bytes, threads=threads, header_timeout_s=header_timeout,
                                 body_timeout_s=body_timeout, idle_timeout_s=idle_timeout)
        console.print(f"serving {model} on http://{host}:{port} (docs at /docs)")
        run_server(str(model), host, port, settings)
