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

The machine may be loaded by other jobs, so the calls are interleaved
(:func:`rankmixer.bench.harness.interleaved_times`): ``repeats`` rounds, in each of which every
variant runs once, back to back (a load change hits all of them alike).
``speedup`` is best dense / best sparse over the rounds (the least disturbed runs);
``speedup_median_round`` the median over rounds of (faster dense in that round) / sparse;
``speedup_vs_batched`` is against the ``batched`` dense path alone. All under
``torch.inference_mode``. ``loop_overhead_ms`` is the ``loop`` path's time on a model with the
same ``T``, ``E``, batch and ratio but ``D = 4`` and a hidden width of 4: the matmuls are then
negligible, so it is the cost of the Python loop over the ``T*E`` experts, the gather and the
scatter. Every sparse output is checked against the dense one (``max_abs_diff``), and
``expert_rows`` is the number of (row, expert) pairs the experts actually ran on.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from rankmixer.bench.harness import interleaved_times
from rankmixer.core.files import write_json
from rankmixer.core.hardware import machine_info
from rankmixer.nn.moe import MoEConfig, PerTokenMoE


@torch.no_grad()
def set_active_ratio(moe: PerTokenMoE, x: torch.Tensor, ratio: float, skew: float = 0.0) -> float:
    """Set ``moe.router``'s biases so that a share ``ratio`` of its ReLU gates on ``x`` are
    positive; returns the share measured afterwards. ``skew = 0``: every (token, expert) gets
    ``ratio``; ``skew > 0``: expert ``j`` of every token gets a share proportional to
    ``(j + 1) ** -skew`` (capped at 1), with mean ``ratio`` (unbalanced experts)."""
    E = moe.num_experts
    w = torch.arange(1, E + 1, dtype=torch.float64) ** -skew
    per_expert = (ratio * E * w / w.sum()).clamp(max=1.0).tolist()
    moe.router.bias.zero_()
    pre = moe.router(x)  # [B, T, E], bias-free
    for j, r in enumerate(per_expert):
        if r >= 1.0:
            moe.router.bias[:, j] = -pre[:, :, j].amin(0) + 1e-3
        else:
            moe.router.bias[:, j] = -torch.quantile(pre[:, :, j].double(), 1.0 - r, dim=0).to(pre.dtype)
    return float((moe.router(x) > 0).float().mean())


def run_moe_bench(
    T: int = 16,
    D: int = 256,
    k: int = 4,
    experts: tuple[int, ...] | list[int] = (4, 8),
    ratios: tuple[float, ...] | list[float] = (1.0, 1 / 2, 1 / 4, 1 / 8),
    batch_size: int = 512,
    repeats: int = 5,
    impls: tuple[str, ...] | list[str] = ("loop", "padded"),
    skews: tuple[float, ...] | list[float] = (0.0,),
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
        rows = _run(T, D, k, list(experts), list(ratios), batch_size, repeats, list(impls), list(skews),
                    seed, log)
    finally:
        torch.set_num_threads(before)
    report = {
        "setup": {"T": T, "D": D, "k": k, "batch_size": batch_size, "repeats": repeats,
                  "torch_threads": threads or before, "torch": torch.__version__,
                  "machine": machine_info(torch.device("cpu")), "device": "cpu",
                  "load_average_1min": os.getloadavg()[0]},
        "rows": rows,
    }
    log(format_table(report))
    if out is not None:
        write_json(out, report)
    return report


def _run(T, D, k, experts, ratios, B, repeats, impls, skews, seed, log) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.layer_norm(torch.randn(B, T, D, generator=g), (D,))
    x_tiny = torch.randn(B, T, 4, generator=g)
    for E in experts:
        torch.manual_seed(seed)
        moe = PerTokenMoE(T, D, k, MoEConfig(num_experts=E, routing="relu_dtsi")).eval()
        tiny = PerTokenMoE(T, 4, 1, MoEConfig(num_experts=E, routing="relu_dtsi")).eval()
        params = sum(p.numel() for n, p in moe.named_parameters() if not n.startswith("router"))
        log(f"E={E}: expert params {params / 1e6:.1f}M")
        for ratio, skew in ((r, sk) for r in ratios for sk in skews):
            measured = set_active_ratio(moe, x, ratio, skew)
            set_active_ratio(tiny, x_tiny, ratio, skew)

            def dense(impl, m=moe):
                return m.dense_experts(x, m.gates(x)[0], impl)

            def sparse(impl, m=moe, xx=x):
                G, mask, _ = m.gates(xx)
                return m.sparse_experts(xx, G, mask, impl)

            with torch.inference_mode():
                ref = dense("batched")
                checks = {}
                for impl in impls:
                    checks[impl] = (float((sparse(impl) - ref).abs().max()), moe.last_expert_rows)
                fns = {"dense_batched": lambda: dense("batched"), "dense_loop": lambda: dense("loop")}
                fns.update({f"sparse_{impl}": (lambda impl=impl: sparse(impl)) for impl in impls})
                if "loop" in impls:
                    fns["overhead_loop"] = lambda m=tiny: sparse("loop", m, x_tiny)
                times = interleaved_times(fns, repeats)
            best = {name: min(v) for name, v in times.items()}
            dense_s = min(best["dense_batched"], best["dense_loop"])
            dense_rounds = [min(a, b) for a, b in zip(times["dense_batched"], times["dense_loop"], strict=True)]
            for impl in impls:
                sp = times[f"sparse_{impl}"]
                per_round = [d / s for d, s in zip(dense_rounds, sp, strict=True)]
                row = {
                    "E": E, "target_ratio": ratio, "skew": skew, "active_ratio": round(measured, 4), "impl": impl,
                    "expert_params": params,
                    "dense_ms": round(dense_s * 1e3, 2),
                    "dense_batched_ms": round(best["dense_batched"] * 1e3, 2),
                    "dense_loop_ms": round(best["dense_loop"] * 1e3, 2),
                    "sparse_ms": round(min(sp) * 1e3, 2),
                    "dense_samples_per_s": round(B / dense_s, 1),
                    "sparse_samples_per_s": round(B / min(sp), 1),
                    "speedup": round(dense_s / min(sp), 2),
                    "speedup_median_round": round(statistics.median(per_round), 2),
                    "speedup_vs_batched": round(best["dense_batched"] / min(sp), 2),
                    "ideal_speedup": round(1 / measured, 2) if measured > 0 else None,
                    "expert_rows": checks[impl][1], "dense_rows": B * T * E,
                    "loop_overhead_ms": round(best["overhead_loop"] * 1e3, 2) if impl == "loop" else None,
                    "max_abs_diff": checks[impl][0],
                }
                rows.append(row)
                log(f"  ratio {measured:.3f} skew {skew} {impl:6s}: dense {row['dense_ms']:8.1f} ms, sparse "
                    f"{row['sparse_ms']:8.1f} ms, x{row['speedup']} (median round x{row['speedup_median_round']})")
    return rows


def format_table(report: dict) -> str:
    """The setup line, then :func:`moe_table`."""
    s = report["setup"]
    return (f"PerTokenMoE eval, T={s['T']} D={s['D']} k={s['k']} batch={s['batch_size']}, "
            f"{s['torch_threads']} thread(s), {s['repeats']} interleaved rounds\n" + moe_table(report))


def moe_table(report: dict) -> str:
    """One row per (experts, ratio, skew, sparse implementation), as a Markdown table."""
    cols = ["E", "ratio", "skew", "impl", "dense samples/s", "sparse samples/s", "speed-up", "median round",
            "vs batched", "ideal", "rows computed", "loop overhead ms", "max \\|diff\\|"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report["rows"]:
        lines.append("| " + " | ".join(str(v) for v in [
            r["E"], f"{r['active_ratio']:.3f}", r["skew"], r["impl"], f"{r['dense_samples_per_s']:,.0f}",
            f"{r['sparse_samples_per_s']:,.0f}", f"{r['speedup']:.2f}x",
            f"{r['speedup_median_round']:.2f}x", f"{r['speedup_vs_batched']:.2f}x",
            "-" if r["ideal_speedup"] is None else f"{r['ideal_speedup']:.1f}x",
            f"{r['expert_rows']:,} / {r['dense_rows']:,}",
            "-" if r["loop_overhead_ms"] is None else f"{r['loop_overhead_ms']:.1f}",
            f"{r['max_abs_diff']:.1e}"]) + " |")
    return "\n".join(lines)
