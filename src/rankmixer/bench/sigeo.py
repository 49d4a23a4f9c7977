"""``rankmixer bench sigeo``: does SiGeo's proxy rank subnets as training them would?

For each warm-up share (e.g. 0, 0.01, 0.1 of the training rows) one SiGeo search
(``rankmixer.search.sigeo``) scores the same ``subnets`` paths of the space's supernet. Every
path is then trained from scratch as a ``searched`` model, over ``seeds`` seeds, by the accuracy
benchmark (``OUT/scratch``: resumable, ``processes`` at once). The report gives, per warm-up and
per proxy (SiGeo and each of its terms: ZiCo, the Fisher-Rao norm, the negative training loss),
the Spearman and Kendall (tau-b) rank correlations between the proxy and the seed-mean test AUC,
and (in the table) Spearman's with FLOPs held fixed, since a proxy that grows with the subnet's
size ranks subnets as far as their cost does.

``OUT/NAME.json`` holds the context, every path (its architecture, FLOPs, test AUC mean and sd,
and its proxies per warm-up) and the correlations; ``OUT/NAME.md`` the correlation table.
:func:`picks_table` reads the same JSON as a search would use it: the subnet each proxy puts
first, its from-scratch AUC and its rank among the trained subnets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median

from rankmixer.bench.accuracy import Cell, run_accuracy
from rankmixer.core.files import check_replaceable, write_json, write_marker, write_text_atomic
from rankmixer.core.rank_correlation import kendall_tau, partial_spearman, spearman
from rankmixer.search.sigeo import PROXIES, run_sigeo
from rankmixer.tune.space import format_override

__all__ = ["given_flops", "markdown_table", "picks", "picks_table", "run_sigeo_bench"]

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
    scratch_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Score the paths at every warm-up, train them from scratch (in ``scratch_dir``, default
    ``OUT/scratch``: a subnet's runs depend on its architecture, not on the supernet that scored
    it, so benches of spaces with the same candidates share them), correlate; write the report."""
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
    scratch_dir = Path(scratch_dir) if scratch_dir is not None else out_dir / "scratch"
    acc = run_accuracy(cells, list(seeds), scratch_dir, overrides, log=log, name="subnets", processes=processes)
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
                    "scratch": str(scratch_dir),
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


def given_flops(report: dict, warmup: float, proxy: str) -> float:
    """Spearman's rho of a proxy and the test AUC with FLOPs held fixed (over the subnets whose
    proxy is finite): what the proxy knows of the AUC beyond the subnet's cost, which FLOPs
    alone already rank (the report's last row)."""
    rows = [p for p in report["paths"] if math.isfinite(p["proxies"][f"{warmup:g}"][proxy])]
    return partial_spearman([p["proxies"][f"{warmup:g}"][proxy] for p in rows], [p["test_auc"] for p in rows],
                            [p["flops_per_sample"] for p in rows])


def markdown_table(report: dict) -> str:
    """Rank correlation of each proxy with the from-scratch test AUC, a row per warm-up (also
    with FLOPs held fixed), then FLOPs as a proxy and the agreement of two training seeds."""
    lines = ["| warm-up (share of train rows) | proxy | subnets | Spearman | Kendall tau-b "
             "| Spearman, FLOPs held fixed |", "|---|---|---|---|---|---|"]
    for c in report["correlations"]:
        share = "-" if c["warmup"] is None else f"{c['warmup']:g}"
        fixed = "-" if c["warmup"] is None else f"{given_flops(report, c['warmup'], c['proxy']):+.3f}"
        lines.append(f"| {share} | {c['proxy']} | {c['subnets']} | {c['spearman']:+.3f} | {c['kendall']:+.3f} | "
                     f"{fixed} |")
    agree = report.get("seed_agreement")
    if agree:
        lines.append(f"\nSeed {agree['seeds'][0]} against seed {agree['seeds'][1]} of the same subnets (each trained "
                     f"from scratch): Spearman {agree['spearman']:+.3f}, Kendall tau-b {agree['kendall']:+.3f}.")
    return "\n".join(lines) + "\n"


def picks(report: dict) -> list[dict]:
    """What a search by each proxy would hand the user: per warm-up and proxy (and FLOPs, the
    largest first), the subnet the proxy ranks first, its seed-mean test AUC and its rank by that
    AUC among the trained subnets (1 = the best of them). Ties in the proxy go to the first path."""
    paths = [p for p in report["paths"] if p["test_auc"] is not None]
    by_auc = sorted(paths, key=lambda p: -p["test_auc"])
    rank = {p["label"]: i + 1 for i, p in enumerate(by_auc)}

    def row(warmup: float | None, proxy: str, score: Callable[[dict], float]) -> dict:
        scored = [p for p in paths if math.isfinite(score(p))]
        top = max(scored, key=score)
        return {"warmup": warmup, "proxy": proxy, "label": top["label"], "architecture": top["architecture"],
                "flops_per_sample": top["flops_per_sample"], "test_auc": top["test_auc"],
                "rank": rank[top["label"]], "subnets": len(paths)}

    rows = [row(share, proxy, lambda p, k=f"{share:g}", q=proxy: p["proxies"][k][q])
            for share in report["context"]["warmups"] for proxy in PROXIES]
    rows.append(row(None, "flops", lambda p: p["flops_per_sample"]))
    return rows


def picks_table(report: dict) -> str:
    """The subnet each proxy picks against the best, the median and the worst trained subnet."""
    aucs = sorted(p["test_auc"] for p in report["paths"] if p["test_auc"] is not None)
    lines = ["| warm-up (share of train rows) | proxy | picked subnet | FLOPs/sample | its test AUC | its rank |",
             "|---|---|---|---:|---|---|"]
    for r in picks(report):
        share = "-" if r["warmup"] is None else f"{r['warmup']:g}"
        lines.append(f"| {share} | {r['proxy']} | `{r['architecture']}` | {r['flops_per_sample']:,.0f} | "
                     f"{r['test_auc']:.4f} | {r['rank']} of {r['subnets']} |")
    lines.append(f"\nThe {len(aucs)} subnets trained from scratch: best {aucs[-1]:.4f}, median {median(aucs):.4f}, "
                 f"worst {aucs[0]:.4f} (seed-mean test AUC).")
    return "\n".join(lines) + "\n"
