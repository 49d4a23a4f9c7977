"""``rankmixer bench speed``: throughput, MFU and latency against the machine's own matmul peak.

One run times, interleaved (:mod:`rankmixer.bench.harness`: every variant once per round,
several rounds, so a load change hits all of them alike):

* the dense matmul **peak** per precision, same threads: a large square and a shape-matched
  ``[B, D] x [D, kD]`` matmul (``peak_shapes`` to choose others), the best rate over shapes and
  rounds. It is the one MFU denominator of that precision (``harness.MFU_DEFINITION``);
* RankMixer **training** samples/s of the full step and **inference** latency p50 / p99 and
  samples/s per batch size, ours beside the public-style baseline and the ablations
  (:mod:`rankmixer.bench.speed_variants`); **peak memory** per variant (CPU: the process's
  peak RSS since the variant's warm-up, every model the run holds included; CUDA: allocator);
* separately, in their own interleaved rounds: our DCNv2 vs FuxiCTR's
  (:mod:`rankmixer.bench.fuxictr_dcnv2`) and sparse vs dense MoE inference
  (:mod:`rankmixer.bench.moe`); with ``profile``, where the time goes
  (:mod:`rankmixer.bench.speed_profile`).

Precisions default to fp32 and bf16, minus bf16 where this machine only emulates it (an
AVX2-only CPU: about 50x slower than fp32), with a message; an explicit ``--precision bf16``
still runs, with a warning. The report records :func:`rankmixer.core.hardware.machine_info`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rankmixer.bench.fuxictr_dcnv2 import run_dcn_comparison
from rankmixer.bench.harness import (
    MFU_DEFINITION, best_peaks, choose_precisions, peak_variants, run_interleaved, summary_row,
)
from rankmixer.bench.moe import run_moe_bench
from rankmixer.bench.speed_profile import profile_step
from rankmixer.bench.speed_table import format_table
from rankmixer.bench.speed_variants import rankmixer_variants
from rankmixer.core.files import write_json
from rankmixer.core.hardware import device_name, machine_info, pick_device
from rankmixer.models import registry
from rankmixer.models.rankmixer import RankMixerConfig

__all__ = ["default_peak_shapes", "run_speed_bench"]

# The "before" each ablation row is compared with (ours_speedup = ours / that row).
_BEFORE_OF = {"ours-forloop-opt": "ours", "ours-nocache": "ours", "ours-moe-dense": "ours", "ours-bmm": "ours",
              "ours-fused": "ours"}


def default_peak_shapes(cfg: RankMixerConfig, train_batch: int, device: torch.device) -> list[tuple[int, int, int]]:
    """A large square (8192^3 on CUDA, 2048^3 on CPU) and the model's own FFN matmul
    ``[B, D] x [D, kD]`` (``[B*T, D]`` on CUDA, where the tokens are batched into one GEMM)."""
    big = 8192 if device.type == "cuda" else 2048
    rows = train_batch * (cfg.num_tokens if device.type == "cuda" else 1)
    return [(big, big, big), (rows, cfg.hidden_dim, cfg.ffn_hidden)]


def run_speed_bench(
    model: str = "rankmixer-100m",
    overrides: dict | None = None,
    batch_sizes: Sequence[int] = (512,),
    train_batch: int | None = None,
    precisions: Sequence[str] | None = None,
    device: str = "auto",
    threads: int | None = None,
    rounds: int = 3,
    optimizer: str = "adamw",
    baseline: bool = True,
    ablations: bool = True,
    compile_mode: str | None = None,
    peak_shapes: Sequence[tuple[int, int, int]] | None = None,
    dcn: bool = True,
    dcn_options: dict | None = None,
    moe_bench: bool = True,
    moe_options: dict | None = None,
    profile: bool = False,
    inference_copy: bool = True,
    out: Path | str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark; print the table; return (and with ``out`` write) the report.
    ``precisions=None``: fp32 and bf16, minus bf16 where it is emulated (see the module doc)."""
    dev = pick_device(device)
    precisions = choose_precisions(precisions, dev, log)
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if peak_shapes is not None and (not peak_shapes or any(len(s) != 3 or min(s) < 1 for s in peak_shapes)):
        raise ValueError(f"peak shapes must be (M, K, N) triples of positive sizes, got {list(peak_shapes)}")
    cfg = registry.parse_config(model, overrides or {})
    if not isinstance(cfg, RankMixerConfig):
        raise ValueError(f"bench speed measures RankMixer models; {model!r} is not one")
    before_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    train_batch = train_batch or batch_sizes[0]
    try:
        peak_shapes = list(peak_shapes or default_peak_shapes(cfg, train_batch, dev))
        log(f"bench speed: {model} {overrides or {}} on {device_name(dev)}, {torch.get_num_threads()} thread(s), "
            f"precisions {', '.join(precisions)}")
        rm_variants, info = rankmixer_variants(cfg, batch_sizes, train_batch, precisions, dev, optimizer, baseline,
                                               ablations, compile_mode, seed, log, inference_copy)
        peak_vs = peak_variants(precisions, peak_shapes, dev)
        variants = peak_vs + rm_variants
        log(f"analytic training step: {info['train_gflop_per_step']} GFLOP at batch {train_batch}; "
            f"{len(variants)} variants x {rounds} rounds")
        run_interleaved(variants, rounds, dev, log=log)
        peaks, per_round = best_peaks(peak_vs)
        rows = [summary_row(v, peaks) for v in variants]
        _add_ratios(rows)
        report: dict[str, Any] = {
            "setup": _setup(model, overrides, cfg, dev, rounds, train_batch, batch_sizes, precisions, optimizer,
                            compile_mode, peak_shapes),
            "peak_gflops": peaks, "peak_gflops_per_round": per_round, "mfu_definition": MFU_DEFINITION,
            "rankmixer": info, "rows": rows,
        }
        if profile:
            report["profile"] = {p: profile_step(cfg, train_batch, p, dev, optimizer, seed) for p in precisions}
        if dcn:
            # FuxiCTR's own precision is fp32: always in the comparison. Each DCNv2 call is short,
            # so it gets more rounds than the big model. Its MFU uses this run's peaks.
            dcn_prec = ["fp32", *[p for p in precisions if p != "fp32"]]
            report["dcn"] = run_dcn_comparison(precisions=dcn_prec, device=dev, rounds=max(rounds, 5), peaks=peaks,
                                               log=log, **(dcn_options or {}))
        if moe_bench:
            opts = {"T": 16, "D": 256, "k": 4, "experts": (4,), "ratios": (0.25,), "batch_size": 512,
                    "repeats": max(3, rounds), **(moe_options or {})}
            report["moe"] = run_moe_bench(log=log, **opts)
        report["setup"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        torch.set_num_threads(before_threads)
    log(format_table(report))
    if out is not None:
        log(f"wrote {write_json(out, report)}")
    return report


def _add_ratios(rows: list[dict]) -> None:
    """``vs_public`` (samples/s of ours over the public baseline, same kind/precision/batch) and
    ``ours_speedup`` on the ablation rows (ours over that "before")."""
    index = {(r["impl"], r["kind"], r["precision"], r["batch"]): r for r in rows if r["kind"] not in ("peak", "optim")}
    for (impl, kind, p, b), r in index.items():
        pub = index.get(("public", kind, p, b))
        if impl == "ours" and pub is not None:
            r["vs_public_best"] = round(r["samples_per_s_best"] / pub["samples_per_s_best"], 2)
            r["vs_public_median"] = round(r["samples_per_s_median"] / pub["samples_per_s_median"], 2)
        before = _BEFORE_OF.get(impl)
        if before is not None and (before, kind, p, b) in index:
            o = index[(before, kind, p, b)]
            r["ours_speedup_best"] = round(o["samples_per_s_best"] / r["samples_per_s_best"], 2)
            r["ours_speedup_median"] = round(o["samples_per_s_median"] / r["samples_per_s_median"], 2)


def _setup(model, overrides, cfg, dev, rounds, train_batch, batch_sizes, precisions, optimizer, compile_mode,
           peak_shapes) -> dict:
    machine = machine_info(dev)
    return {
        "model": model, "overrides": overrides or {}, "config": cfg.model_dump(mode="json"),
        "device": dev.type, "device_name": machine["device_name"], "cpu_flags": machine["cpu_flags"],
        "threads": machine["threads"], "torch": machine["torch"], "machine": machine, "rounds": rounds,
        "train_batch": train_batch, "batch_sizes": list(batch_sizes), "precisions": list(precisions),
        "optimizer": optimizer, "compile": compile_mode, "peak_shapes": [list(s) for s in peak_shapes],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "note": "interleaved rounds; best = least disturbed call, median = median of rounds",
    }
