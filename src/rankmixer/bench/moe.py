"""Sparse vs dense inference of :class:`~rankmixer.nn.moe.PerTokenMoE`.

For every expert count ``E`` and target active ratio, the inference router's biases are set so
that exactly that share of (row, token, expert) gates is positive on the benchmark batch (per
token and expert, the bias is minus the ``1 - ratio`` quantile of the bias-free router output),
then the module's eval computation is timed two ways on the same weights and inputs:

* ``dense``: routing + every expert computed, multiplied by the (partly zero) gates; its cost
  does not depend on the ratio. Both dense implementations are timed (``batched``: the
  training computation, also what eval runs with ``sparse_inference=False``; ``loop``: one
  matmul pair per expert) and the speed-up is against the *faster* of the two;
* ``sparse``: routing + only the active (row, expert) pairs (``loop`` and ``padded``
  implementations, see :mod:`rankmixer.nn.moe`).

Timings are the best of ``repeats`` runs under ``torch.inference_mode`` (the machine may be
loaded by other jobs: the minimum is the least disturbed run). ``loop_overhead_ms`` is the
``loop`` path's time on a model with the same ``T``, ``E``, batch and ratio but ``D = 4`` and a
hidden width of 4: the matmuls are then negligible, so it is the cost of the Python loop,
gather and scatter. Every sparse output is checked against the dense one (``max_abs_diff``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from rankmixer.nn.moe import MoEConfig, PerTokenMoE


@torch.no_grad()
def set_active_ratio(moe: PerTokenMoE, x: torch.Tensor, ratio: float) -> float:
    """Set ``moe.router``'s biases so that a share ``ratio`` of its ReLU gates on ``x`` are
    positive (per token and expert); returns the share measured afterwards."""
    moe.router.bias.zero_()
    pre = moe.router(x)  # [B, T, E], bias-free
    if ratio >= 1.0:
        moe.router.bias.copy_(-pre.amin(0) + 1e-3)
    else:
        q = torch.quantile(pre.double(), 1.0 - ratio, dim=0).to(pre.dtype)  # [T, E]
        moe.router.bias.copy_(-q)
    return float((moe.router(x) > 0).float().mean())


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_moe_bench(
    T: int = 16,
    D: int = 256,
    k: int = 4,
    experts: tuple[int, ...] | list[int] = (4, 8),
    ratios: tuple[float, ...] | list[float] = (1.0, 1 / 2, 1 / 4, 1 / 8),
    batch_size: int = 512,
    repeats: int = 5,
    impls: tuple[str, ...] | list[str] = ("loop", "padded"),
    threads: int | None = None,
    out: Path | str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Time dense vs sparse eval of a ``relu_dtsi`` PerTokenMoE; print a table; return (and with
    ``out`` write as JSON) ``{"setup": ..., "rows": [...]}``, one row per (E, ratio, impl)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows = _run(T, D, k, list(experts), list(ratios), batch_size, repeats, list(impls), seed, log)
    finally:
        torch.set_num_threads(before)
    report = {
        "setup": {"T": T, "D": D, "k": k, "batch_size": batch_size, "repeats": repeats,
                  "torch_threads": threads or before, "torch": torch.__version__,
                  "machine": platform.processor() or platform.machine(), "device": "cpu"},
        "rows": rows,
    }
    log(format_table(report))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return report


def _run(T, D, k, experts, ratios, B, repeats, impls, seed, log) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.layer_norm(torch.randn(B, T, D, generator=g), (D,))
    x_tiny = torch.randn(B, T, 4, generator=g)
    for E in experts:
        torch.manual_seed(seed)
        moe = PerTokenMoE(T, D, k, MoEConfig(num_experts=E, routing="relu_dtsi")).eval()
        tiny = PerTokenMoE(T, 4, 1, MoEConfig(num_experts=E, routing="relu_dtsi")).eval()
        params = sum(p.numel() for n, p in moe.named_parameters() if n.startswith(("w", "b")))
        with torch.inference_mode():
            G, mask, _ = moe.gates(x)
            dense_by_impl = {
                impl: _best_time(lambda impl=impl: moe.dense_experts(x, moe.gates(x)[0], impl), repeats)
                for impl in ("batched", "loop")
            }
        dense_s = min(dense_by_impl.values())
        log(f"E={E}: expert params {params / 1e6:.1f}M, dense eval ms/batch: "
            + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in dense_by_impl.items()))
        for ratio in ratios:
            measured = set_active_ratio(moe, x, ratio)
            set_active_ratio(tiny, x_tiny, ratio)
            with torch.inference_mode():
                G, mask, _ = moe.gates(x)
                ref = moe.dense_experts(x, G)
                for impl in impls:

                    def sparse(m=moe, xx=x, impl=impl):
                        G, mask, _ = m.gates(xx)
                        return m.sparse_experts(xx, G, mask, impl)

                    diff = float((sparse() - ref).abs().max())
                    rows_run = moe.last_expert_rows
                    sparse_s = _best_time(sparse, repeats)
                    overhead_s = (_best_time(lambda: sparse(tiny, x_tiny), repeats) if impl == "loop" else None)
                    row = {
                        "E": E, "target_ratio": ratio, "active_ratio": round(measured, 4), "impl": impl,
                        "expert_params": params, "dense_ms": round(dense_s * 1e3, 2),
                        "dense_batched_ms": round(dense_by_impl["batched"] * 1e3, 2),
                        "dense_loop_ms": round(dense_by_impl["loop"] * 1e3, 2),
                        "sparse_ms": round(sparse_s * 1e3, 2),
                        "dense_samples_per_s": round(B / dense_s, 1),
                        "sparse_samples_per_s": round(B / sparse_s, 1),
                        "speedup": round(dense_s / sparse_s, 2),
                        "ideal_speedup": round(1 / measured, 2) if measured > 0 else None,
                        "expert_rows": rows_run, "dense_rows": B * T * E,
                        "loop_overhead_ms": None if overhead_s is None else round(overhead_s * 1e3, 2),
                        "max_abs_diff": diff,
                    }
                    rows.append(row)
                    log(f"  ratio {ratio:.3f} {impl:6s}: {row['sparse_ms']:8.1f} ms  x{row['speedup']}")
    return rows


def format_table(report: dict) -> str:
    s = report["setup"]
    head = (f"PerTokenMoE eval, T={s['T']} D={s['D']} k={s['k']} batch={s['batch_size']}, "
            f"{s['torch_threads']} thread(s), best of {s['repeats']}")
    cols = ["E", "ratio", "impl", "dense samples/s (best of batched, loop)", "sparse samples/s", "speed-up", "ideal",
            "rows computed", "loop overhead ms", "max |diff|"]
    lines = [head, " | ".join(cols), " | ".join("---" for _ in cols)]
    for r in report["rows"]:
        lines.append(" | ".join(str(v) for v in [
            r["E"], f"{r['active_ratio']:.3f}", r["impl"], f"{r['dense_samples_per_s']:.0f}",
            f"{r['sparse_samples_per_s']:.0f}", f"{r['speedup']:.2f}x",
            "-" if r["ideal_speedup"] is None else f"{r['ideal_speedup']:.1f}x",
            f"{r['expert_rows']}/{r['dense_rows']}",
            "-" if r["loop_overhead_ms"] is None else f"{r['loop_overhead_ms']:.1f}",
            f"{r['max_abs_diff']:.1e}"]))
    return "\n".join(lines)
