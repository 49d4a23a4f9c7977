"""The printed table of a ``bench speed`` report (the JSON holds every number; this is for reading)."""

from __future__ import annotations

from typing import Any

from rankmixer.bench.fuxictr_dcnv2 import format_dcn_table
from rankmixer.bench.harness import format_mfu
from rankmixer.bench.moe import format_table as format_moe_table

__all__ = ["format_table", "profile_table", "rankmixer_table"]


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def _counter_ratio(info: dict) -> str:
    a, c = info["analytic_flops_per_sample"], info["flop_counter_per_sample"]
    return (f"forward {c['forward_per_sample'] / a['forward']:.4f}, "
            f"forward+backward {c['train_per_sample'] / a['train']:.4f}")


def rankmixer_table(report: dict) -> str:
    """The RankMixer rows (training, optimizer steps, inference) as a Markdown table."""
    lines = ["| variant | samples/s best / median | ms best | p50 / p99 ms | GFLOP/s best | MFU best / median "
             "| vs public | vs before | peak mem MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["kind"] == "peak":
            continue
        if r["kind"] == "optim":
            lines.append(f"| {r['name']} (step alone, {r['params'] / 1e6:.0f}M params) | - | {r['ms_best']:.1f} "
                         f"(median {r['ms_median']:.1f}) | - | - | - | - | - | {_fmt(r['memory'].get('peak_mb'), ',.0f')} |")
            continue
        lat = f"{r['latency_ms_p50']:.1f} / {r['latency_ms_p99']:.1f}" if r["kind"] == "infer" else "-"
        mfu = format_mfu(r)
        vp = f"{r['vs_public_best']:.2f}x / {r['vs_public_median']:.2f}x" if "vs_public_best" in r else "-"
        vb = f"ours {r['ours_speedup_best']:.2f}x / {r['ours_speedup_median']:.2f}x" if "ours_speedup_best" in r else "-"
        lines.append(f"| {r['name']} | {r['samples_per_s_best']:,.0f} / {r['samples_per_s_median']:,.0f} | "
                     f"{r['ms_best']:.1f} | {lat} | {r['achieved_gflops_best']:,.1f} | {mfu} | {vp} | {vb} | "
                     f"{_fmt(r['memory'].get('peak_mb'), ',.0f')} |")
    return "\n".join(lines)


def profile_table(prof: dict, top: int = 10) -> str:
    """The ``top`` operators of one profiled call by self CPU time."""
    lines = ["| op | self ms | share | calls |", "|---|---|---|---|"]
    lines += [f"| {e['op']} | {e['self_ms']:.1f} | {e['share']:.1%} | {e['calls']} |" for e in prof["top"][:top]]
    return "\n".join(lines)


def format_table(report: dict) -> str:
    """Setup, peaks, the RankMixer rows, then the profile, DCNv2 and MoE sections if present."""
    s = report["setup"]
    lines = [f"{s['model']} {s['overrides']} on {s['device_name']}, {s['threads']} thread(s), torch {s['torch']}, "
             f"{s['rounds']} interleaved rounds, load {s['loadavg_start']} -> {s.get('loadavg_end')}",
             "peak GFLOP/s (best over shapes and rounds; the MFU denominator): "
             + ", ".join(f"{p} {v:,.1f}" for p, v in report["peak_gflops"].items()),
             f"analytic training step: {report['rankmixer']['train_gflop_per_step']} GFLOP; flop counter / analytic: "
             + _counter_ratio(report["rankmixer"]),
             "MFU best / median: achieved GFLOP/s of the best call / of the median round, over that one peak",
             "", rankmixer_table(report)]
    for precision, prof in report.get("profile", {}).items():
        for what in ("train", "infer"):
            pr = prof[what]
            lines += ["", f"profile, one {what} call ({precision}): {pr['total_ms']:.0f} ms self time", profile_table(pr)]
    if "dcn" in report:
        lines += ["", format_dcn_table(report["dcn"])]
    if "moe" in report:
        lines += ["", format_moe_table(report["moe"])]
    return "\n".join(lines)
