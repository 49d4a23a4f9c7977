"""Scaling study: test AUC against dense parameters and against forward FLOPs per sample, for
several model families at several sizes each, all trained with one budget on one dataset.

A spec file names the dataset, the budget and the sizes of every family::

    # rankmixer bench scaling --spec scaling
    dataset:                       # a base experiment config (data section + optimizer, batch)
      config: synthetic_dcnv2
      overrides: [data=synthetic_1m, ...]
    budget: epochs=1               # epochs=N | steps=N | samples=N, the same for every run
    families:                      # family -> model sections, smallest first
      rankmixer:
        - {name: rankmixer, hidden_dim: 32, ...}
        - {name: rankmixer, hidden_dim: 64, ...}
    oracle: model/planted          # optional: the model-class oracle, one more run (synthetic sets)
    differences: [[rankmixer, dcnv2]]  # optional: A minus B at each size (paired bootstrap)

Every (family, size, seed) is one run of :func:`rankmixer.bench.accuracy.run_accuracy`, so the
study is resumable the same way (a finished run is read, not retrained) and reports progress
with an ETA. The loader streams Parquet row groups through a bounded shuffle buffer, so the
training set can be far larger than memory.

Slopes: AUC per doubling of FLOPs (and of dense parameters), least squares on log2 x over a
family's sizes, each with a 95% bootstrap interval: the test rows resampled (the same draws for
every size and seed), every size's seed-mean AUC and the slope refitted per draw. It covers
test-set noise, not seed-to-seed spread (the table's sd). With an ``oracle`` the report also
gives the best model's gap to it and its gap to the Bayes-optimal AUC: what is left to the
architecture, and what is not learnable from the budget at all. The spec's ``differences``
compare two families size by size (size i of every family is FLOP-matched in the specs we
ship): family A minus family B with a paired bootstrap interval over the same test rows.

Outputs in ``out``: ``scaling.json`` (every run, the per-family summary, the fitted slopes and
the gaps), ``scaling.md`` (the table) and ``scaling.png`` (the two plots, with the dataset's
Bayes-optimal AUC as the ceiling when it is known).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer.bench.accuracy import Cell, format_si, model_section, read_yaml_keys, run_accuracy
from rankmixer.bench.intervals import BOOTSTRAP, differences_table, paired_difference, run_predictions
from rankmixer.config import ConfigError, config_path
from rankmixer.core.bootstrap import bootstrap_distribution
from rankmixer.core.files import write_json, write_text_atomic

ORACLE = "model-class oracle"  # the model column of the spec's ``oracle`` run
SPEC_KEYS = ("dataset", "budget", "families", "oracle", "differences")
SLOPE_KEYS = {"flops_per_sample": "auc_per_doubling_flops", "dense_parameters": "auc_per_doubling_params"}


def cell_label(family: str, size: int | str) -> str:
    """The label (and run directory stem) of a family's size ``size``."""
    return f"scaling-{family}-{size}"


def load_spec(path: Path | str) -> tuple[list[Cell], str | None]:
    """The cells of a scaling spec (a file, or a packaged spec's name such as ``scaling``),
    families outer, sizes inner, and its budget. A size is a model section: a mapping, or a part
    name (``model/dcnv2``), or a mapping with ``defaults: model/<part>``."""
    path = config_path(path, kind="bench", what="scaling spec")
    tree = read_yaml_keys(path, "scaling spec", SPEC_KEYS)
    ds, families = tree.get("dataset"), tree.get("families")
    if not isinstance(ds, dict) or "config" not in ds:
        raise ConfigError(f"scaling spec {path}: 'dataset' must be a mapping with a 'config'")
    if not isinstance(families, dict) or not families:
        raise ConfigError(f"scaling spec {path}: 'families' must be a non-empty mapping of family -> list of sizes")
    ds_overrides = tuple(str(o) for o in ds.get("overrides") or [])
    cells = []
    for family, sizes in families.items():
        if not isinstance(sizes, list) or len(sizes) < 2:
            raise ConfigError(f"scaling spec {path}: family {family!r} needs a list of at least two model sections")
        for i, entry in enumerate(sizes):
            model = model_section(entry, [path.parent], f"scaling spec {path}: {family!r} size {i}")
            cells.append(Cell(cell_label(family, i), str(ds["config"]), (f"model={json.dumps(model)}", *ds_overrides),
                              family, "scaling"))
    if tree.get("oracle") is not None:
        model = model_section(tree["oracle"], [path.parent], f"scaling spec {path}: oracle")
        cells.append(Cell("scaling-oracle", str(ds["config"]), (f"model={json.dumps(model)}", *ds_overrides),
                          ORACLE, "scaling"))
    return cells, tree.get("budget")


def spec_differences(path: Path | str) -> list[tuple[str, str]]:
    """A spec's ``differences``: pairs of its families, (A, B) for A minus B at each size."""
    path = config_path(path, kind="bench", what="scaling spec")
    tree = read_yaml_keys(path, "scaling spec", SPEC_KEYS)
    families = set(tree.get("families") or {})
    pairs = tree.get("differences") or []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and set(map(str, pair)) <= families):
            raise ConfigError(f"scaling spec {path}: each of 'differences' must be [A, B], two of its families; "
                              f"got {pair!r}")
    return [(str(a), str(b)) for a, b in pairs]


def size_differences(report: dict, pairs: list[tuple[str, str]], runs_dir: Path | None) -> list[dict]:
    """Family A minus family B at each size both have (size i of one spec is FLOP-matched
    across families): the paired bootstrap difference of test AUC (``paired_difference``),
    labelled ``size i``."""
    rows = {r["label"]: r for r in report["summary"]}
    out = []
    for a, b in pairs:
        for label_a in (lab for lab, r in rows.items() if r["model"] == a):
            size = label_a.rsplit("-", 1)[1]
            label_b = cell_label(b, size)
            if label_b in rows:
                diff = paired_difference(report, label_a, label_b, runs_dir, **BOOTSTRAP)
                out.append({"dataset": f"size {size}", "model_a": a, "model_b": b, **diff})
    return out


def _slopes(log2x: np.ndarray, auc: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``auc`` [..., n] on ``log2x`` [n], along the last axis."""
    dx = log2x - log2x.mean()
    return ((auc - auc.mean(axis=-1, keepdims=True)) * dx).sum(axis=-1) / (dx * dx).sum()


def fit_slopes(rows: list[dict], cells: list[dict] | None = None, runs_dir: Path | None = None) -> dict[str, dict]:
    """Per family (the oracle is none): AUC gained per doubling of FLOPs and of dense parameters
    (least squares on log2 x), the best AUC and that of its largest size. One number per curve,
    to compare families. Given the report's ``cells`` and where their runs' test predictions
    are, each slope also gets a bootstrap interval (``<slope>_ci``: [low, high], see the module
    docstring); None where a run saved none."""
    out = {}
    for family in dict.fromkeys(r["model"] for r in rows if r["model"] != ORACLE):
        group = [r for r in rows if r["model"] == family]
        auc = np.array([r["auc"] for r in group])
        draws = _auc_draws(group, cells, runs_dir) if cells is not None else None
        fit: dict = {"best_auc": float(auc.max()), "largest_auc": float(auc[-1])}
        for key, name in SLOPE_KEYS.items():
            x = np.array([r[key] or np.nan for r in group], dtype=float)
            ok = np.isfinite(x) & (x > 0)
            fit[name] = fit[name + "_ci"] = None
            if ok.sum() >= 2 and np.ptp(np.log2(x[ok])) > 0:
                fit[name] = float(_slopes(np.log2(x[ok]), auc[ok]))
                if draws is not None:
                    values = _slopes(np.log2(x[ok]), draws[:, ok])
                    level = BOOTSTRAP["level"]
                    fit[name + "_ci"] = [float(q) for q in np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])]
        out[family] = fit
    return out


def _auc_draws(group: list[dict], cells: list[dict], runs_dir: Path | None) -> np.ndarray | None:
    """[n_boot, sizes]: every size's seed-mean test AUC on each bootstrap draw of the test rows
    (the same draws for all), or None if a run saved no predictions or the test rows differ."""
    runs = [[c for c in cells if c["label"] == r["label"]] for r in group]
    preds = [[run_predictions(c, runs_dir) for c in size] for size in runs]
    flat = [p for size in preds for p in size]
    if not flat or any(p is None for p in flat) or not all(np.array_equal(p.labels, flat[0].labels) for p in flat):
        return None
    values = bootstrap_distribution(flat[0].labels, [p.probs for p in flat], "auc",
                                    n_boot=BOOTSTRAP["n_boot"], seed=BOOTSTRAP["seed"])
    bounds = np.cumsum([0] + [len(size) for size in preds])
    return np.stack([values[:, a:b].mean(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)


def gaps(rows: list[dict], bayes_auc: float | None) -> dict | None:
    """The best model's test AUC against the oracle's and the Bayes-optimal AUC, or None
    without an oracle run: ``to_oracle`` (oracle minus best model: what the architecture
    leaves) and ``oracle_to_bayes`` (what this budget cannot teach the model's own form)."""
    oracle = next((r for r in rows if r["model"] == ORACLE), None)
    models = [r for r in rows if r["model"] != ORACLE]
    if oracle is None or not models:
        return None
    best = max(models, key=lambda r: r["auc"])
    return {"best_label": best["label"], "best_auc": best["auc"], "oracle_auc": oracle["auc"],
            "bayes_auc": bayes_auc, "to_oracle": oracle["auc"] - best["auc"],
            "oracle_to_bayes": None if bayes_auc is None else bayes_auc - oracle["auc"]}


def plot(rows: list[dict], bayes_auc: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, xlabel in ((axes[0], "dense_parameters", "dense parameters (embedding tables excluded)"),
                            (axes[1], "flops_per_sample", "forward FLOPs per sample")):
        for family in dict.fromkeys(r["model"] for r in rows if r["model"] != ORACLE):
            group = [r for r in rows if r["model"] == family]
            ax.errorbar([r[key] for r in group], [r["auc"] for r in group], yerr=[r["auc_std"] for r in group],
                        marker="o", capsize=3, label=family)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    # The ceilings are written, not drawn: on the same axis they would flatten every curve.
    oracle = next((r["auc"] for r in rows if r["model"] == ORACLE), None)
    ceilings = ([f"Bayes-optimal {bayes_auc:.4f}"] if bayes_auc else []) + ([f"oracle {oracle:.4f}"] if oracle else [])
    axes[0].set_ylabel("test AUC" + (f"  ({', '.join(ceilings)})" if ceilings else ""))
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], slopes: dict[str, dict], bayes_auc: float | None,
             differences: list[dict] | None = None) -> str:
    lines = ["| family | size | dense params | FLOPs/sample | seeds | test AUC | test logloss |",
             "|---|---:|---:|---:|---:|---|---|"]
    def spread(r: dict, m: str) -> str:  # no spread from one seed
        return f"{r[m]:.4f} ± {r[m + '_std']:.4f}" if r["seeds"] > 1 else f"{r[m]:.4f}"

    models, oracle = [r for r in rows if r["model"] != ORACLE], [r for r in rows if r["model"] == ORACLE]
    for r in models:
        lines.append(f"| {r['model']} | {r['label'].rsplit('-', 1)[1]} | {format_si(r['dense_parameters'])} | "
                     f"{format_si(r['flops_per_sample'])} | {r['seeds']} | {spread(r, 'auc')} | {spread(r, 'logloss')} |")
    for r in oracle:
        lines.append(f"| {ORACLE} | - | {format_si(r['dense_parameters'])} | {format_si(r['flops_per_sample'])} | "
                     f"{r['seeds']} | {spread(r, 'auc')} | {spread(r, 'logloss')} |")
    if bayes_auc:
        lines.append(f"| Bayes-optimal | - | - | - | - | {bayes_auc:.4f} | |")
    lines += ["", "| family | AUC per doubling of FLOPs | 95% CI | AUC per doubling of dense params | 95% CI | best AUC |",
              "|---|---:|---|---:|---|---:|"]
    f = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
    ci = lambda v: "-" if not v else f"[{v[0]:+.4f}, {v[1]:+.4f}]"  # noqa: E731
    for family, s in slopes.items():
        lines.append(f"| {family} | {f(s['auc_per_doubling_flops'])} | {ci(s.get('auc_per_doubling_flops_ci'))} | "
                     f"{f(s['auc_per_doubling_params'])} | {ci(s.get('auc_per_doubling_params_ci'))} | {s['best_auc']:.4f} |")
    g = gaps(rows, bayes_auc)
    if g is not None:
        bayes = "" if g["oracle_to_bayes"] is None else f"; oracle to Bayes-optimal {g['oracle_to_bayes']:+.4f}"
        lines += ["", f"Best model {g['best_label']} ({g['best_auc']:.4f}) to the model-class oracle "
                      f"({g['oracle_auc']:.4f}): {g['to_oracle']:+.4f}{bayes}."]
    if differences:
        lines += ["", differences_table(differences, first="size").rstrip("\n")]
    return "\n".join(lines) + "\n"


def pick_families(cells: list[Cell], families: list[str]) -> list[Cell]:
    """The cells of ``families`` (``oracle``: the oracle run), in that order: the order in
    which parallel runs start. An unknown name is an error naming the spec's families."""
    have = list(dict.fromkeys(c.model_label for c in cells))
    wanted = [ORACLE if f == "oracle" else f for f in families]
    unknown = [f for f in wanted if f not in have]
    if unknown:
        raise ConfigError(f"unknown families {unknown}; the spec has {have} (the oracle as 'oracle')")
    return [c for f in dict.fromkeys(wanted) for c in cells if c.model_label == f]


def run_scaling(spec: Path | str, seeds: list[int], out_dir: Path, overrides: list[str] | None = None,
                log: Callable[[str], None] = print, budget: str | None = None, families: list[str] | None = None,
                processes: int = 1, report_only: bool = False) -> dict:
    """Train (or read) the spec's runs, all of them or those of ``families``, ``processes`` at
    a time (``report_only``: the finished ones only, nothing trained); write the report files
    into ``out_dir`` (see the module docstring)."""
    cells, spec_budget = load_spec(spec)
    if families:
        cells = pick_families(cells, families)
    budget = budget or spec_budget
    report = run_accuracy(cells, seeds, out_dir, overrides, log=log, name="scaling_runs", budget=budget,
                          processes=processes, report_only=report_only)
    rows = report["summary"]
    bayes = next((r["bayes_auc"] for r in rows if r.get("bayes_auc")), None)
    slopes = fit_slopes(rows, report["cells"], out_dir / "runs")
    report.update({"spec": str(spec), "slopes": slopes, "bayes_auc": bayes, "gaps": gaps(rows, bayes),
                   "differences": size_differences(report, spec_differences(spec), out_dir / "runs")})
    write_json(out_dir / "scaling.json", report)
    write_text_atomic(out_dir / "scaling.md", markdown(rows, slopes, bayes, report["differences"]))
    plot(rows, bayes, out_dir / "scaling.png",
         f"{Path(spec).name}: budget {budget or 'per config'}, {len(seeds)} seed(s) per point")
    return report
