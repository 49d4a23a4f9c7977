"""What every timing benchmark shares: variants, interleaved rounds, peaks, memory, summaries.

A *variant* is one timed configuration (a training step, an inference call, a matmul). The
variants of a run take turns: every variant runs once per round (or ``calls`` times back to
back), over several rounds, so a load change on a shared machine hits all of them alike.
Results are "best" (the least disturbed call) and "median" (the median of the rounds).

MFU (model FLOP utilisation) is achieved matmul FLOP/s divided by ONE stated peak per
precision: the best dense matmul rate measured in the same run (:func:`best_peaks`, over
shapes and rounds), recorded in the report as the denominator. Best and median achieved rates
are both divided by it, so the median MFU never exceeds the best (:data:`MFU_DEFINITION`).

Precisions: a low precision that the machine only emulates (bf16 on an AVX2-only CPU, about
50x slower than fp32) is dropped from the default precisions with a message, and kept with a
warning when asked for explicitly (:func:`choose_precisions`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rankmixer.core.hardware import PRECISIONS, native_low_precision, precision_warning
from rankmixer.core.processes import process_memory_mb

__all__ = [
    "DEFAULT_PRECISIONS", "MFU_DEFINITION", "Variant", "best_peaks", "choose_precisions", "interleaved_times",
    "format_mfu", "peak_variants", "percentile", "run_interleaved", "summary_row", "sync", "time_call",
]

DEFAULT_PRECISIONS = ("fp32", "bf16")
MFU_DEFINITION = ("mfu = achieved GFLOP/s / peak_gflops[precision]; achieved from the best call (mfu_best) or "
                  "the median round (mfu_median); peak_gflops[precision] is the best dense matmul rate measured "
                  "in this run (over peak shapes and rounds), the same denominator for every row of that precision")


# ------------------------------------------------------------------------------------------
# precisions
# ------------------------------------------------------------------------------------------
def choose_precisions(requested: Sequence[str] | None, device: torch.device,
                      log: Callable[[str], None] = print) -> list[str]:
    """The precisions to run. ``None``: :data:`DEFAULT_PRECISIONS` minus those this device only
    emulates (with a message naming what was dropped). Explicit: all of them, each emulated one
    with a warning. Unknown names are a ``ValueError``."""
    for p in requested or ():
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; known: {', '.join(PRECISIONS)}")
    if requested is None:
        keep = [p for p in DEFAULT_PRECISIONS if native_low_precision(p, device)]
        for p in DEFAULT_PRECISIONS:
            if p not in keep:
                log(f"WARNING: {precision_warning(p, device)}. Dropped {p} from the default precisions; "
                    f"pass --precision {p} to time it anyway.")
        return keep
    for p in requested:
        warning = precision_warning(p, device)
        if warning:
            log(f"WARNING: {warning}. Timing {p} as asked: expect a slow run.")
    return list(requested)


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device (CUDA runs asynchronously; a timer must not stop before the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int,
                      device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds per call of every function over ``repeats`` rounds, the functions taking turns in
    each round; one warm-up call each first."""
    device = device or torch.device("cpu")
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_call(fn, device))
    return times


@dataclass
class Variant:
    """One timed configuration. ``flops``: matmul FLOPs of one call; ``peak_key``: the
    precision whose measured peak its MFU is relative to (None: no MFU)."""

    name: str
    kind: str  # "peak" | "train" | "infer" | "optim"
    fn: Callable[[], object]
    batch: int = 0
    flops: float = 0.0
    precision: str = "fp32"
    impl: str = ""
    peak_key: str | None = None
    warmup: int = 1
    calls: int = 1  # per round; set from the warm-up time for everything but training
    info: dict = field(default_factory=dict)
    times: list[list[float]] = field(default_factory=list)  # per round, per call
    memory: dict = field(default_factory=dict)


def run_interleaved(
    variants: list[Variant], rounds: int, device: torch.device, call_target_s: float = 0.3, max_calls: int = 30,
    log: Callable[[str], None] = print,
) -> None:
    """Warm every variant up (measuring its peak memory), then ``rounds`` rounds in each of
    which every variant runs ``calls`` times back to back. Fills ``times`` and ``memory``."""
    for v in variants:
        before = process_memory_mb() if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
        ok = _reset_peak_memory(device)
        t = 0.0
        for _ in range(max(1, v.warmup)):
            t = time_call(v.fn, device)
        v.memory = {"peak_mb": round(_peak_memory_mb(device) or 0.0, 1) if ok else None,
                    ("rss_before_mb" if device.type == "cpu" else "allocated_before_mb"): round(before or 0.0, 1)}
        if v.kind != "train":
            v.calls = max(1, min(max_calls, math.ceil(call_target_s / max(t, 1e-6))))
        log(f"  warm-up {v.name}: {t * 1e3:.1f} ms/call, {v.calls} call(s)/round")
    for r in range(rounds):
        for v in variants:
            v.times.append([time_call(v.fn, device) for _ in range(v.calls)])
        log(f"  round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})")


# ------------------------------------------------------------------------------------------
# memory (CPU: the process's peak RSS, reset through /proc/self/clear_refs; CUDA: allocator)
# ------------------------------------------------------------------------------------------
def _reset_peak_memory(device: torch.device) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: "5" resets the peak RSS (VmHWM) of the process
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = process_memory_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------
# the machine's matmul peak
# ------------------------------------------------------------------------------------------
def peak_variants(precisions: Sequence[str], shapes: Sequence[tuple[int, int, int]], device: torch.device,
                  reps: int = 3) -> list[Variant]:
    """One variant per (precision, shape): ``reps`` matmuls ``[M, K] x [K, N]`` per call, so a
    call lasts long enough to time; the same output buffer is reused (no allocation timed)."""
    out = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for p in precisions:
        for M, K, N in shapes:
            a = torch.randn(M, K, generator=g).to(device, PRECISIONS[p])
            b = torch.randn(K, N, generator=g).to(device, PRECISIONS[p])
            c = torch.empty(M, N, device=device, dtype=PRECISIONS[p])

            def fn(a=a, b=b, c=c):
                for _ in range(reps):
                    torch.mm(a, b, out=c)

            out.append(Variant(f"peak/{p}/{M}x{K}x{N}", "peak", fn, flops=2.0 * M * K * N * reps, precision=p,
                               info={"shape": [M, K, N]}))
    return out


def best_peaks(variants: Sequence[Variant]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The stated peak per precision, GFLOP/s: the best rate over the peak variants' shapes and
    rounds, rounded to 0.1 (the MFU denominator). Also the per-round best over shapes, recorded
    to show how much the peak itself moved during the run."""
    best: dict[str, float] = {}
    per_round: dict[str, list[float]] = {}
    for v in variants:
        if v.kind != "peak":
            continue
        rates = [v.flops / min(ts) / 1e9 for ts in v.times]
        cur = per_round.setdefault(v.precision, [0.0] * len(rates))
        per_round[v.precision] = [max(a, b) for a, b in zip(cur, rates, strict=True)]
        best[v.precision] = round(max(best.get(v.precision, 0.0), max(rates)), 1)
    return best, per_round


# ------------------------------------------------------------------------------------------
# summaries
# ------------------------------------------------------------------------------------------
def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of an ascending sequence."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = (len(sorted_vals) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summary_row(v: Variant, peaks: dict[str, float] | None = None) -> dict:
    """One table row of a timed variant. ``seconds_best`` is the fastest call, ``seconds_median``
    the median over rounds of each round's median call (both unrounded; every other time and
    rate is rounded for reading). ``peaks``: the stated peak per precision (GFLOP/s), the MFU
    denominator (:data:`MFU_DEFINITION`); a row without a peak for its precision has no MFU."""
    per_round = [statistics.median(ts) for ts in v.times]
    flat = sorted(t for ts in v.times for t in ts)
    best, med = flat[0], statistics.median(per_round)
    row: dict[str, Any] = {"name": v.name, "kind": v.kind, "impl": v.impl, "precision": v.precision,
                           "batch": v.batch, "calls": len(flat), **v.info,
                           "seconds_best": best, "seconds_median": med}
    if v.kind == "peak":
        row.update(gflops_best=round(v.flops / best / 1e9, 1), gflops_median=round(v.flops / med / 1e9, 1))
        return row
    row.update(ms_best=round(best * 1e3, 3), ms_median=round(med * 1e3, 3), memory=v.memory)
    if v.kind == "optim":
        return row
    achieved_best, achieved_med = v.flops / best / 1e9, v.flops / med / 1e9
    row.update(
        samples_per_s_best=round(v.batch / best, 1), samples_per_s_median=round(v.batch / med, 1),
        flops_per_call=v.flops,
        achieved_gflops_best=round(achieved_best, 2), achieved_gflops_median=round(achieved_med, 2),
    )
    if v.kind == "infer":
        row.update(latency_ms_p50=round(percentile(flat, 50) * 1e3, 3),
                   latency_ms_p99=round(percentile(flat, 99) * 1e3, 3))
    if v.peak_key is not None and peaks and v.peak_key in peaks:
        peak = peaks[v.peak_key]
        row.update(peak_gflops=peak, mfu_best=round(achieved_best / peak, 4), mfu_median=round(achieved_med / peak, 4))
    return row


def format_mfu(row: dict) -> str:
    """``best / median`` MFU of a summary row for tables, computed from its achieved GFLOP/s and
    its stated peak (:data:`MFU_DEFINITION`), so a table never shows another denominator."""
    if "peak_gflops" not in row or "achieved_gflops_best" not in row:
        return "-"
    peak = row["peak_gflops"]
    return f"{row['achieved_gflops_best'] / peak:.1%} / {row['achieved_gflops_median'] / peak:.1%}"
