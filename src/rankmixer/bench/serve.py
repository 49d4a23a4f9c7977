"""``rankmixer bench serve``: a closed-loop load generator against the scoring server.

At each concurrency level C, C asyncio clients (one shared ``aiohttp.ClientSession``, a real
HTTP/1.1 connection pool of C connections on loopback) each send a request, wait for the answer, and send the next,
until the level has sent ``requests`` requests or run ``duration`` seconds, whichever comes
first. Latency is measured per request in the client (send to full response), so it includes
HTTP, JSON, queueing and micro-batching. Errors are non-2xx answers and transport failures.

Request bodies are built from real rows (serve_requests.py): the prepared test split of the
artifact's dataset, decoded back to raw values (ids -> vocabulary values, behaviour histories
as per-field arrays with each row's own length), grouped by user, ``candidates`` rows per
request, so every request is one user's candidate list, as a ranking call would be. The report
gives what the bodies weigh (``payload``: bytes per request, rows, history lengths) and the
bytes each level sent.

``--model`` names the artifact (its preprocess.json decodes the ids). Without ``--url`` the
server is started here, in a child process (``rankmixer serve``), on a free loopback port, and
stopped at the end; with ``--url`` an already running server (of that artifact) is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from rankmixer.bench.harness import percentile
from rankmixer.bench.serve_requests import payload_stats, real_requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> dict:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return r.json()
            if r.json().get("status") == "failed":
                raise RuntimeError(f"server failed to load: {r.json().get('detail')}")
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def start_server(model: str | Path, port: int, extra: list[str] | None = None,
                 threads: int | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rankmixer", "serve", "--model", str(model), "--port", str(port)] + (extra or [])
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_server(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


async def _level(url: str, bodies: list[bytes], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    # aiohttp, not httpx, drives the load: on 2 cores httpx's async client spent more CPU per
    # request than the server at 32+ connections and capped the measured QPS (see docs/serving.md).
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    rows = 0
    sent_bytes = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        t_end = time.perf_counter() + max_seconds

        async def worker() -> None:
            nonlocal sent, errors, rows, sent_bytes
            while sent < max_requests and time.perf_counter() < t_end:
                body = bodies[sent % len(bodies)]
                sent += 1
                sent_bytes += len(body)
                t0 = time.perf_counter()
                try:
                    async with session.post("/v1/score", data=body, headers=headers) as r:
                        payload = await r.read()
                        ok = r.status == 200
                    if ok:
                        rows += len(next(iter(json.loads(payload)["scores"].values())))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = sorted(t * 1000 for t in latencies)
    return {
        "concurrency": concurrency, "requests": len(latencies), "seconds": round(wall, 3),
        "qps": len(latencies) / wall if wall else 0.0, "rows_per_s": rows / wall if wall else 0.0,
        "p50_ms": percentile(lat, 50) if lat else float("nan"),
        "p95_ms": percentile(lat, 95) if lat else float("nan"),
        "p99_ms": percentile(lat, 99) if lat else float("nan"),
        "error_rate": errors / max(len(latencies), 1),
        "sent_bytes": sent_bytes, "sent_mb_per_s": sent_bytes / 1e6 / wall if wall else 0.0,
    }


def run_serve_bench(
    *,
    model: str | Path,
    url: str | None = None,
    prepared: str | Path | None = None,
    concurrency: list[int] = (1, 8, 32, 128),
    requests: int = 2000,
    duration: float = 20.0,
    candidates: int = 32,
    warmup: int = 50,
    server_args: list[str] | None = None,
    server_threads: int | None = None,
    log=print,
) -> dict:
    """Measure the server at each concurrency level (see the module docstring)."""
    from rankmixer.core.hardware import machine_info

    if prepared is None:
        raise ValueError("--prepared (the prepared data directory of the model's dataset) is needed for real rows")
    decoded = real_requests(model, prepared, candidates, limit=2000)
    if not decoded:
        raise ValueError(f"{prepared}: the test split has no rows to build requests from")
    bodies = [json.dumps(b).encode() for b in decoded]
    payload = payload_stats(decoded, bodies, json.loads((Path(model) / "preprocess.json").read_text()))
    proc = None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(model, port, server_args, server_threads)
    try:
        ready = wait_ready(url, proc)
        import httpx

        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        log(f"{len(bodies)} request bodies from {prepared} (up to {candidates} candidates of one user each); "
            f"serving {ready.get('model')} {ready.get('model_version')} ({ready.get('format')})")
        log(f"request bodies: {payload['bytes_mean']:,.0f} bytes on average (p95 {payload['bytes_p95']:,.0f}, "
            f"max {payload['bytes_max']:,}), {payload['rows_mean']:.1f} rows"
            + "".join(f"; {name}: {b['positions_mean']:.1f} positions on average (max {b['positions_max']}, "
                      f"max_len {b['max_len']})" for name, b in payload["behaviours"].items()))
        asyncio.run(_level(url, bodies, 4, warmup, 30.0))
        levels = []
        for c in concurrency:
            before = httpx.get(f"{url}/metrics", timeout=10).text
            r = asyncio.run(_level(url, bodies, c, requests, duration))
            after = httpx.get(f"{url}/metrics", timeout=10).text
            # Server side, this level only: mean rows and requests per model call.
            r["mean_batch_rows"] = _delta_mean(before, after, "rankmixer_batch_rows")
            r["mean_batch_requests"] = _delta_mean(before, after, "rankmixer_batch_requests")
            # Server-side time per model call: encoding raw values, and the model itself (ms).
            r["encode_ms_per_call"] = 1000 * (_delta_mean(before, after, "rankmixer_encode_seconds") or float("nan"))
            r["model_ms_per_call"] = 1000 * (_delta_mean(before, after, "rankmixer_model_seconds") or float("nan"))
            # Other processes share the CPU on a shared machine: say how busy it was.
            r["load_average_1m"] = os.getloadavg()[0]
            log(f"concurrency {c}: {r['requests']} requests, {r['qps']:.1f} QPS, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, errors {r['error_rate']:.2%}; per model call: "
                f"{r['mean_batch_rows'] or 0:.0f} rows, encode {r['encode_ms_per_call']:.1f} ms, "
                f"model {r['model_ms_per_call']:.1f} ms")
            levels.append(r)
    finally:
        if proc is not None:
            stop_server(proc)
    return {"url": url, "model": info.get("model"), "version": info.get("version"), "format": info.get("format"),
            "candidates_per_request": candidates, "payload": payload, "max_requests": requests, "max_seconds": duration,
            "server_args": server_args or [], "cpu_count": os.cpu_count(), "machine": machine_info(), "levels": levels}


def markdown_table(report: dict) -> str:
    """One row per concurrency level: client-side throughput and latency, server-side rows and
    time per model call, and the machine's 1-minute load average during the level."""
    lines = ["| clients | requests | QPS | rows/s | p50 ms | p95 ms | p99 ms | errors | rows/call | encode ms/call "
             "| model ms/call | load |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["levels"]:
        rows = f"{r['mean_batch_rows']:.0f}" if r.get("mean_batch_rows") else "-"
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['qps']:.1f} | {r['rows_per_s']:,.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['error_rate']:.1%} | {rows} | "
                     f"{r['encode_ms_per_call']:.1f} | {r['model_ms_per_call']:.1f} | {r['load_average_1m']:.1f} |")
    return "\n".join(lines) + "\n"


def _sum_count(text: str, name: str) -> tuple[float, float]:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[1])
    return total, count


def _delta_mean(before: str, after: str, name: str) -> float | None:
    (s0, c0), (s1, c1) = _sum_count(before, name), _sum_count(after, name)
    return (s1 - s0) / (c1 - c0) if c1 > c0 else None
