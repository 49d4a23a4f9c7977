"""``rankmixer bench search-budget``: architecture-search strategies compared at an equal trial
budget, from the searches they ran.

Input: a folder of ``rankmixer search`` outputs named ``<strategy>-s<seed>`` (one per strategy and
search seed, the same experiment, space and overrides). For every search it reads
``search.json`` and the trials' runs, and reports:

* **best so far**: the best validation metric among the first k complete trials, for each
  checkpoint k; and the same among the trials at or below ``flops_target`` FLOPs per sample;
  mean and standard deviation over the search seeds, per strategy;
* **against random search**, per strategy at each checkpoint: the difference of the seed means
  and whether it exceeds the larger of the two seed standard deviations ("beyond the spread");
* **the predictor's ranking quality on held-out trials** (rankmixer.search.predictor.
  cross_validate): Kendall's tau over k folds of each search's trials, for the AutoML
  predictor (ensemble, pairwise loss) and for its ablations (one member; a regression loss;
  labels without learning-curve extrapolation); mean and sd over the searches;
* **how the extrapolated labels agree with the values** the study maximizes: Spearman's rho and
  Kendall's tau between each trial's extrapolated label and its value, per search (a label
  that disagrees with the value steers the AutoML predictor away from the study's objective);
* every trial's validation NE and FLOPs, and a plot of NE against FLOPs with each strategy's
  Pareto front (``NAME.png``).
* for a rankitect-sampling search, its controller's mean reward and entropy after each update;
* each search's failed trials (``failed``) and the most of them in a row (``failed_in_a_row``:
  a search stops after 10).

Searches reported earlier by this command (``earlier``: its JSON reports) join the comparison
with their rows and trials as reported, so a new strategy is compared with searches whose
folders are gone; they must share the experiment, overrides, metric and FLOPs target. Where the
trainer changed what an override means, ``earlier_overrides`` maps an earlier report's override
to the one that trains the same trials today (``OLD -> NEW``, each OLD present in every earlier
report); the earlier overrides are read through it and the map is kept in the report's context.
Whether the two give the same trials is the caller's claim to check (``docs/search.md`` shows the
check: a random search's first trials, whose draws do not depend on the values, retrained).

``OUT/NAME.json`` holds it all, with the machine; ``OUT/NAME.md`` the tables.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from rankmixer.core.files import check_output, write_json, write_text_atomic
from rankmixer.core.hardware import machine_info
from rankmixer.core.rank_correlation import kendall_tau, spearman
from rankmixer.search.report import first_metrics, pareto_front
from rankmixer.search.space import load_architecture_space

__all__ = ["PREDICTOR_VARIANTS", "best_so_far", "comparison_table", "labels_table", "longest_run",
           "markdown_tables", "predictor_table", "run_search_budget", "searches_table", "summary_table"]

FOLDER = re.compile(r"(?P<strategy>[a-z][a-z-]*)-s(?P<seed>\d+)")
# name -> (Predictor options, extrapolate the labels)
PREDICTOR_VARIANTS: dict[str, tuple[dict, bool]] = {
    "ensemble of 5, pairwise, extrapolated labels": ({"members": 5, "loss": "pairwise"}, True),
    "one member, pairwise, extrapolated labels": ({"members": 1, "loss": "pairwise"}, True),
    "ensemble of 5, regression (MSE), extrapolated labels": ({"members": 5, "loss": "mse"}, True),
    "ensemble of 5, pairwise, short-run values": ({"members": 5, "loss": "pairwise"}, False),
}


def _searches(root: Path) -> list[dict]:
    found = []
    for folder in sorted(root.iterdir()):
        m = FOLDER.fullmatch(folder.name)
        if m and (folder / "search.json").is_file():
            report = json.loads((folder / "search.json").read_text())
            found.append({"strategy": m["strategy"], "seed": int(m["seed"]), "folder": folder, "report": report})
    if not found:
        raise FileNotFoundError(f"{root}: no <strategy>-s<seed>/search.json inside")
    return found


def _ne(folder: Path, trial: dict) -> float | None:
    return ((first_metrics(folder, trial.get("run_dirs")) or {}).get("valid") or {}).get("ne")


def longest_run(flags: Sequence[bool]) -> int:
    """The most consecutive true flags."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def best_so_far(values: Sequence[float], flops: Sequence[float], maximize: bool,
                flops_target: float | None = None) -> list[float]:
    """Entry k: the best of the first k+1 values (NaN until one qualifies), only those at or
    below ``flops_target`` FLOPs when given."""
    sign = 1.0 if maximize else -1.0
    best, out = -math.inf, []
    for v, f in zip(values, flops):
        if flops_target is None or f <= flops_target:
            best = max(best, sign * v)
        out.append(sign * best if math.isfinite(best) else math.nan)
    return out


def _stats(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _labelled(search: dict, horizon: int | None) -> dict[bool, dict]:
    """One search's labelled trials (rankmixer.search.automl.study_labels), keyed by whether
    the labels are extrapolated to ``horizon`` (True) or the trials' values (False)."""
    import optuna

    from rankmixer.search.automl import AutoMLOptions, study_labels

    rep, folder = search["report"], search["folder"]
    space = load_architecture_space(rep["space_file"])
    study = optuna.load_study(study_name=rep["study"], storage=f"sqlite:///{(folder / 'study.db').resolve()}")
    return {extrapolated: study_labels(AutoMLOptions(space, str(folder), labels="extrapolated" if extrapolated
                                                     else "value", horizon_steps=horizon if extrapolated else None),
                                       study)
            for extrapolated in (True, False)}


def _predictor_quality(labelled: dict[bool, dict], seed: int, folds: int) -> dict:
    """Kendall tau per predictor variant over ``folds`` folds of one search's trials."""
    from rankmixer.search.predictor import cross_validate

    out = {}
    for name, (options, extrapolated) in PREDICTOR_VARIANTS.items():
        got = labelled[extrapolated]
        cv = cross_validate(got["x"], got["labels"], got["flops"], folds=folds, seed=seed, **options)
        out[name] = {"kendall": cv["kendall"], "flops_kendall": cv["flops_kendall"], "trials": cv["trials"]}
    return out


def _label_agreement(labelled: dict[bool, dict]) -> dict:
    """Spearman's rho and Kendall's tau between the extrapolated labels and the values."""
    ext, val = labelled[True]["labels"], labelled[False]["labels"]
    return {"spearman": spearman(ext, val), "kendall": kendall_tau(ext, val), "trials": len(ext)}


def run_search_budget(root: Path, out_dir: Path, name: str = "search_budget", *,
                      checkpoints: Sequence[int] = (10, 25, 50, 100), flops_target: float | None = None,
                      baseline: str = "random", folds: int = 5, earlier: Sequence[Path] = (),
                      earlier_overrides: Mapping[str, str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Compare the searches under ``root`` and those of the ``earlier`` reports (module
    docstring); write and return the report."""
    root, out_dir = Path(root), Path(out_dir)
    if earlier_overrides and not earlier:
        raise ValueError(f"--earlier-override {dict(earlier_overrides)} reads earlier reports' overrides, "
                         "but no --earlier was given")
    searches = _searches(root)
    files = [out_dir / f"{name}{ext}" for ext in (".json", ".md", ".png")]
    for f in files:  # never into a search's own folder, nor over a report it reads
        check_output(f, [s["folder"] for s in searches] + [Path(e) for e in earlier], "--out")
    reports = [json.loads(Path(e).read_text()) for e in earlier]
    horizons = {s["report"].get("automl", {}).get("options", {}).get("horizon_steps") for s in searches}
    horizon = max((horizons | {r["context"]["horizon_steps"] for r in reports}) - {None}, default=None)
    rows, trials = [], []
    for s in searches:
        rep = s["report"]
        maximize = rep["objective"]["direction"] == "maximize"
        done = sorted((t for t in rep["trials"] if t["state"] == "COMPLETE" and t["flops_per_sample"] is not None),
                      key=lambda t: t["number"])
        values = [t["value"] for t in done]
        flops = [t["flops_per_sample"] for t in done]
        curve = best_so_far(values, flops, maximize)
        under = best_so_far(values, flops, maximize, flops_target)
        best = max(done, key=lambda t: (1 if maximize else -1) * t["value"])
        cheap = [t for t in done if flops_target is None or t["flops_per_sample"] <= flops_target]
        best_under = max(cheap, key=lambda t: (1 if maximize else -1) * t["value"]) if cheap else None
        for t in done:
            trials.append({"strategy": s["strategy"], "seed": s["seed"], "number": t["number"], "value": t["value"],
                           "ne": _ne(s["folder"], t), "flops_per_sample": t["flops_per_sample"]})
        log(f"{s['folder'].name}: {len(done)} complete trials, best {best['value']:.5f}")
        labelled = _labelled(s, horizon) if len(done) >= 2 * folds else None
        rows.append({
            "strategy": s["strategy"], "seed": s["seed"], "complete": len(done), "curve": curve, "curve_under": under,
            "search_seconds": float(sum(t["duration_s"] or 0.0 for t in rep["trials"])),
            "failed": sum(t["state"] == "FAIL" for t in rep["trials"]),
            "failed_in_a_row": longest_run([t["state"] == "FAIL" for t in sorted(rep["trials"], key=lambda t: t["number"])]),
            "best": {k: best[k] for k in ("number", "value", "flops_per_sample", "architecture", "model")},
            "best_under": None if best_under is None else
            {k: best_under[k] for k in ("number", "value", "flops_per_sample", "architecture", "model")},
            "predictor": _predictor_quality(labelled, s["seed"], folds) if labelled else None,
            "labels": _label_agreement(labelled) if labelled and horizon else None,
            # a rankitect-sampling search's controller, update by update (None for other strategies)
            "controller": [{"mean_reward": float(np.mean(u["rewards"])), "entropy": u["entropy"]}
                           for u in rep["sampling"]["updates"]] if "sampling" in rep else None,
        })
    context = {"config": searches[0]["report"]["config"], "overrides": searches[0]["report"]["overrides"],
               "metric": searches[0]["report"]["objective"]["metric"], "flops_target": flops_target}
    renamed = dict(earlier_overrides or {})
    for path, old in zip(earlier, reports):
        missing = [o for o in renamed if o not in old["context"]["overrides"]]
        if missing:
            raise ValueError(f"{path}: --earlier-override names overrides its searches did not use: {missing}")
        theirs = {**old["context"], "overrides": [renamed.get(o, o) for o in old["context"]["overrides"]]}
        differs = [f"{k} ({theirs.get(k)} against {v})" for k, v in context.items() if theirs.get(k) != v]
        if differs:
            raise ValueError(f"{path}: its searches differ from those under {root} in {'; '.join(differs)}")
        clash = {(r["strategy"], r["seed"]) for r in old["searches"]} & {(r["strategy"], r["seed"]) for r in rows}
        if clash:
            raise ValueError(f"{path}: reports searches also given, or in another report: {sorted(clash)}")
        rows.extend(old["searches"])
        trials.extend(old["trials"])
        log(f"{path}: {len(old['searches'])} searches reported earlier")
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    summary = []
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        for k in checkpoints:
            at = [r["curve"][k - 1] if len(r["curve"]) >= k else math.nan for r in mine]
            at_under = [r["curve_under"][k - 1] if len(r["curve_under"]) >= k else math.nan for r in mine]
            (m, sd), (mu, sdu) = _stats(at), _stats(at_under)
            summary.append({"strategy": strategy, "trials": k, "searches": sum(math.isfinite(x) for x in at),
                            "best_mean": m, "best_sd": sd, "best_under_mean": mu, "best_under_sd": sdu})
    comparison = []
    for strategy in strategies:
        if strategy == baseline or baseline not in strategies:
            continue
        for k in checkpoints:
            a = next(x for x in summary if x["strategy"] == strategy and x["trials"] == k)
            b = next(x for x in summary if x["strategy"] == baseline and x["trials"] == k)
            for what in ("best", "best_under"):
                diff = a[f"{what}_mean"] - b[f"{what}_mean"]
                spread = max(a[f"{what}_sd"], b[f"{what}_sd"])
                comparison.append({"strategy": strategy, "baseline": baseline, "trials": k, "what": what,
                                   "difference": diff, "spread": spread,
                                   "beyond_spread": bool(math.isfinite(diff) and abs(diff) > spread)})
    report = {
        "context": {**context, "root": str(root), "earlier": [str(e) for e in earlier],
                    "earlier_overrides": renamed, "machine": machine_info(),
                    "checkpoints": list(checkpoints), "horizon_steps": horizon, "folds": folds},
        "searches": rows, "summary": summary, "comparison": comparison, "trials": trials,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(files[0], report, [], "search-budget report")
    write_text_atomic(files[1], markdown_tables(report))
    plot(report, files[2])
    return report


def plot(report: dict, path: Path) -> None:
    """Validation NE against FLOPs per sample of every trial, each strategy's Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for strategy in dict.fromkeys(t["strategy"] for t in report["trials"]):
        pts = [t for t in report["trials"] if t["strategy"] == strategy and t["ne"] is not None]
        line = ax.scatter([t["flops_per_sample"] for t in pts], [t["ne"] for t in pts], s=9, alpha=0.45, label=strategy)
        front = pareto_front([(i, t["ne"], t["flops_per_sample"]) for i, t in enumerate(pts)], maximize=False)
        ax.step([pts[i]["flops_per_sample"] for i in front], [pts[i]["ne"] for i in front], where="post",
                color=line.get_facecolor()[0][:3])
    target = report["context"]["flops_target"]
    if target:
        ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    nes = np.array([t["ne"] for t in report["trials"] if t["ne"] is not None])
    if len(nes):  # a few diverged trials (NE far above 1) would flatten the rest: they lie above the frame
        low, high = float(nes.min()), float(np.percentile(nes, 98))
        ax.set_ylim(low - 0.005, high + 0.01)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per sample")
    ax.set_ylabel("validation NE (short run; lower is better; top 2% cut)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"every trial, {len({(t['strategy'], t['seed']) for t in report['trials']})} searches", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pm(m: float, sd: float) -> str:
    return "-" if not math.isfinite(m) else f"{m:.4f} ± {sd:.4f}"


def markdown_tables(report: dict) -> str:
    """The best-so-far table, the comparison with the baseline, and the predictor's quality."""
    return "\n".join(t(report) for t in (summary_table, comparison_table, predictor_table, labels_table,
                                         searches_table))


def summary_table(report: dict) -> str:
    """Per strategy and checkpoint: mean ± sd over search seeds of the best validation metric
    so far, over all trials and over those within the FLOPs target."""
    c = report["context"]
    target = c["flops_target"]
    lines = [f"| strategy | trials | searches | best valid {c['metric']} | best at <= {target:,.0f} FLOPs |"
             if target else f"| strategy | trials | searches | best valid {c['metric']} | - |",
             "|---|---:|---:|---|---|"]
    for s in report["summary"]:
        lines.append(f"| {s['strategy']} | {s['trials']} | {s['searches']} | {_pm(s['best_mean'], s['best_sd'])} | "
                     f"{_pm(s['best_under_mean'], s['best_under_sd'])} |")
    return "\n".join(lines) + "\n"


def searches_table(report: dict) -> str:
    """One row per search: its best trial (valid metric, FLOPs, architecture), its best within
    the FLOPs target, and the trials' summed training time."""
    c = report["context"]
    lines = [f"| strategy | seed | trials | best valid {c['metric']} | FLOPs/sample | architecture | "
             "best within the target | trials' time |", "|---|---:|---:|---:|---:|---|---|---:|"]
    for r in report["searches"]:
        b, u = r["best"], r["best_under"]
        under = "-" if u is None else f"{u['value']:.4f} @ {u['flops_per_sample']:,.0f} (trial {u['number']})"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['complete']} | {b['value']:.4f} | "
                     f"{b['flops_per_sample']:,.0f} | `{b['architecture']}` | {under} | "
                     f"{r['search_seconds'] / 60:.0f} min |")
    return "\n".join(lines) + "\n"


def comparison_table(report: dict) -> str:
    """Each strategy against the baseline: difference of seed means, the larger seed sd, and
    whether the difference exceeds it."""
    lines = ["| strategy | against | trials | best of | difference of means | larger seed sd | beyond the spread |",
             "|---|---|---:|---|---:|---:|---|"]
    for x in report["comparison"]:
        what = "all trials" if x["what"] == "best" else "trials within the FLOPs target"
        lines.append(f"| {x['strategy']} | {x['baseline']} | {x['trials']} | {what} | {x['difference']:+.4f} | "
                     f"{x['spread']:.4f} | {'yes' if x['beyond_spread'] else 'no'} |")
    return "\n".join(lines) + "\n"


def predictor_table(report: dict) -> str:
    """Per predictor variant and per strategy whose trials it learned: mean ± sd over searches of
    the held-out Kendall tau (score and FLOPs heads)."""
    lines = ["| predictor | trials of | searches | Kendall tau, held-out trials | Kendall tau, FLOPs head |",
             "|---|---|---:|---|---|"]
    rows = [r for r in report["searches"] if r["predictor"]]
    for variant in PREDICTOR_VARIANTS:
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            got = [r["predictor"][variant] for r in rows if r["strategy"] == strategy and variant in r["predictor"]]
            if got:
                lines.append(f"| {variant} | {strategy} | {len(got)} | {_pm(*_stats([g['kendall'] for g in got]))} | "
                             f"{_pm(*_stats([g['flops_kendall'] for g in got]))} |")
    return "\n".join(lines) + "\n"


def labels_table(report: dict) -> str:
    """Per strategy whose trials were labelled: mean ± sd over its searches of the agreement
    between the extrapolated labels and the trials' values (Spearman's rho, Kendall's tau)."""
    horizon = report["context"]["horizon_steps"]
    rho = f"Spearman rho, labels at {horizon:,} steps vs values" if horizon else "Spearman rho"
    lines = [f"| trials of | searches | trials | {rho} | Kendall tau |", "|---|---:|---:|---|---|"]
    rows = [r for r in report["searches"] if r.get("labels")]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        got = [r["labels"] for r in rows if r["strategy"] == strategy]
        lines.append(f"| {strategy} | {len(got)} | {sum(g['trials'] for g in got)} | "
                     f"{_pm(*_stats([g['spearman'] for g in got]))} | {_pm(*_stats([g['kendall'] for g in got]))} |")
    return "\n".join(lines) + "\n"
