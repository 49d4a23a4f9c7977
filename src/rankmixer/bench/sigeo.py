"""``rankmixer bench sigeo``: does SiGeo's proxy rank subnets as training them would?

For each warm-up share (e.g. 0, 0.01, 0.1 of the training rows) one SiGeo search
(``rankmixer.search.sigeo``) scores the same ``subnets`` paths of the space's supernet. Every
path is then trained from scratch as a ``searched`` model, over ``seeds`` seeds, by the accuracy
benchmark (``OUT/scratch``: resumable, ``processes`` at once). The report gives, per warm-up and
per proxy (SiGeo and each of its terms: ZiCo, the Fisher-Rao norm, the negative training loss),
the Spearman and Kendall (tau-b) rank correlations between the proxy and the seed-mean test AUC.

``OUT/NAME.json`` holds the context, every path (its architecture, FLOPs, test AUC mean and sd,
and its proxies per warm-up) and the correlations; ``OUT/NAME.md`` the correlation table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from rankmixer.bench.accuracy import Cell, run_accuracy
from rankmixer.core.files import check_replaceable, write_json, write_marker, write_text_atomic
from rankmixer.core.rank_correlation import kendall_tau, spearman
from rankmixer.search.sigeo import PROXIES, run_sigeo
from rankmixer.tune.space import format_override

__all__ = ["markdown_table", "run_sigeo_bench"]

KIND = "sigeo-bench"


def run_sigeo_bench(
    config: str | Path,
    space: str | Path,
    out_dir: Path,
    overrides: list[str] | None = None,
    *,
    warmups: Sequence[float] = (0.0, 0.01, 0.1),
    subnets: int = 32,
    seeds: Sequence[int] = (0,),
    batches: int = 8,
    search_seed: int = 0,
    processes: int = 1,
    name: str = "sigeo",
    log: Callable[[str], None] = print,
) -> dict:
    """Score the paths at every warm-up, train them from scratch, correlate; write the report."""
    out_dir, overrides = Path(out_dir), list(overrides or [])
    check_replaceable(out_dir, KIND, overwrite=True)  # new, empty or ours: continue it
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, KIND)
    searches = {}
    for share in warmups:
        log(f"SiGeo search, warm-up {share:g}")
        searches[share] = run_sigeo(config, space, out_dir / "search" / f"warmup-{share:g}", overrides, warmup=share,
                                    subnets=subnets, batches=batches, seed=search_seed, log=log)
    first = searches[warmups[0]]["paths"]
    paths = sorted((tuple(p["path"]) for p in first))  # the same paths at every warm-up (same seed)
    models = {tuple(p["path"]): p for p in first}
    cells = [Cell(f"path-{'-'.join(map(str, p))}", str(config), (format_override("model", models[p]["model"]),))
             for p in paths]
    acc = run_accuracy(cells, list(seeds), out_dir / "scratch", overrides, log=log, name="subnets",
                       processes=processes)
    by_label = {row["label"]: row for row in acc["summary"]}
    rows = []
    for p, cell in zip(paths, cells):
        row = by_label[cell.label]
        scores = {f"{share:g}": next({k: r[k] for k in PROXIES} for r in searches[share]["paths"] if tuple(r["path"]) == p)
                  for share in warmups}
        rows.append({"path": list(p), "architecture": models[p]["architecture"], "label": cell.label,
                     "flops_per_sample": row.get("flops_per_sample"), "test_auc": row.get("auc"),
                     "test_auc_std": row.get("auc_std"), "proxies": scores})
    auc = [r["test_auc"] for r in rows]
    correlations = []
    for share in warmups:
        for proxy in PROXIES:
            values = [r["proxies"][f"{share:g}"][proxy] for r in rows]
            finite = [i for i, v in enumerate(values) if math.isfinite(v)]
            xs, ys = [values[i] for i in finite], [auc[i] for i in finite]
            correlations.append({"warmup": share, "proxy": proxy, "subnets": len(finite),
                                 "spearman": spearman(xs, ys), "kendall": kendall_tau(xs, ys)})
    flops = [r["flops_per_sample"] for r in rows]  # the cost alone, as a proxy to beat
    correlations.append({"warmup": None, "proxy": "flops", "subnets": len(rows),
                         "spearman": spearman(flops, auc), "kendall": kendall_tau(flops, auc)})
    report = {
        "seed_agreement": _seed_agreement(acc["cells"], [c.label for c in cells], list(seeds)),
        "context": {"config": str(config), "space": str(space), "overrides": overrides, "warmups": list(warmups),
                    "subnets": len(paths), "seeds": list(seeds), "proxy_batches": batches, "search_seed": search_seed,
                    "machine": acc["machine"],
                    "searches": {f"{s:g}": searches[s]["context"] for s in warmups}},
        "paths": rows,
        "correlations": correlations,
    }
    write_json(out_dir / f"{name}.json", report)
    write_text_atomic(out_dir / f"{name}.md", markdown_table(report))
    return report


def _seed_agreement(cells: list[dict], labels: list[str], seeds: list[int]) -> dict | None:
    """Rank correlation between the test AUCs of the first two seeds of the same subnets: how
    well one training run ranks them, the most a proxy can be asked for."""
    if len(seeds) < 2:
        return None
    auc = {(c["label"], c["seed"]): c["test"]["auc"] for c in cells}
    a, b = [auc[(lab, seeds[0])] for lab in labels], [auc[(lab, seeds[1])] for lab in labels]
    return {"seeds": seeds[:2], "spearman": spearman(a, b), "kendall": kendall_tau(a, b)}


def markdown_table(report: dict) -> str:
    """Rank correlation of each proxy with the from-scratch test AUC, a row per warm-up, then
    FLOPs as a proxy and the agreement of two training seeds."""
    lines = ["| warm-up (share of train rows) | proxy | subnets | Spearman | Kendall tau-b |", "|---|---|---|---|---|"]
    for c in report["correlations"]:
        share = "-" if c["warmup"] is None else f"{c['warmup']:g}"
        lines.append(f"| {share} | {c['proxy']} | {c['subnets']} | {c['spearman']:+.3f} | {c['kendall']:+.3f} |")
    agree = report.get("seed_agreement")
    if agree:
        lines.append(f"\nSeed {agree['seeds'][0]} against seed {agree['seeds'][1]} of the same subnets (each trained "
                     f"from scratch): Spearman {agree['spearman']:+.3f}, Kendall tau-b {agree['kendall']:+.3f}.")
    return "\n".join(lines) + "\n"
