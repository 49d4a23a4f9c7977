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

Every (family, size, seed) is one run of :func:`rankmixer.bench.accuracy.run_accuracy`, so the
study is resumable the same way (a finished run is read, not retrained) and reports progress
with an ETA. The loader streams Parquet row groups through a bounded shuffle buffer, so the
training set can be far larger than memory.

Outputs in ``out``: ``scaling.json`` (every run, the per-family summary and the fitted slopes),
``scaling.md`` (the table) and ``scaling.png`` (the two plots, with the dataset's Bayes-optimal
AUC as the ceiling when it is known).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer.bench.accuracy import Cell, format_si, model_section, read_yaml_keys, run_accuracy
from rankmixer.config import ConfigError, config_path
from rankmixer.core.files import write_json, write_text_atomic


def load_spec(path: Path | str) -> tuple[list[Cell], str | None]:
    """The cells of a scaling spec (a file, or a packaged spec's name such as ``scaling``),
    families outer, sizes inner, and its budget. A size is a model section: a mapping, or a part
    name (``model/dcnv2``), or a mapping with ``defaults: model/<part>``."""
    path = config_path(path, kind="bench", what="scaling spec")
    tree = read_yaml_keys(path, "scaling spec", ("dataset", "budget", "families"))
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
            cells.append(Cell(f"scaling-{family}-{i}", str(ds["config"]), (f"model={json.dumps(model)}", *ds_overrides),
                              family, "scaling"))
    return cells, tree.get("budget")


def fit_slopes(rows: list[dict]) -> dict[str, dict]:
    """Per family: AUC gained per doubling of FLOPs and of dense parameters (least squares on
    log2 x), and the AUC of its largest size. One number per curve, to compare families."""
    out = {}
    for family in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == family]
        auc = np.array([r["auc"] for r in group])
        fit = {}
        for key in ("flops_per_sample", "dense_parameters"):
            x = np.array([r[key] or np.nan for r in group], dtype=float)
            ok = np.isfinite(x) & (x > 0)
            fit[key] = float(np.polyfit(np.log2(x[ok]), auc[ok], 1)[0]) if ok.sum() >= 2 else None
        out[family] = {"auc_per_doubling_flops": fit["flops_per_sample"],
                       "auc_per_doubling_params": fit["dense_parameters"],
                       "best_auc": float(auc.max()), "largest_auc": float(auc[-1])}
    return out


def plot(rows: list[dict], bayes_auc: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, xlabel in ((axes[0], "dense_parameters", "dense parameters (embedding tables excluded)"),
                            (axes[1], "flops_per_sample", "forward FLOPs per sample")):
        for family in dict.fromkeys(r["model"] for r in rows):
            group = [r for r in rows if r["model"] == family]
            ax.errorbar([r[key] for r in group], [r["auc"] for r in group], yerr=[r["auc_std"] for r in group],
                        marker="o", capsize=3, label=family)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    # The ceiling is written, not drawn: on the same axis it would flatten every curve.
    axes[0].set_ylabel("test AUC" + (f"  (Bayes-optimal: {bayes_auc:.4f})" if bayes_auc else ""))
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], slopes: dict[str, dict], bayes_auc: float | None) -> str:
    lines = ["| family | size | dense params | FLOPs/sample | seeds | test AUC | test logloss |",
             "|---|---:|---:|---:|---:|---|---|"]
    def spread(r: dict, m: str) -> str:  # no spread from one seed
        return f"{r[m]:.4f} ± {r[m + '_std']:.4f}" if r["seeds"] > 1 else f"{r[m]:.4f}"

    for r in rows:
        lines.append(f"| {r['model']} | {r['label'].rsplit('-', 1)[1]} | {format_si(r['dense_parameters'])} | "
                     f"{format_si(r['flops_per_sample'])} | {r['seeds']} | {spread(r, 'auc')} | {spread(r, 'logloss')} |")
    if bayes_auc:
        lines.append(f"| Bayes-optimal | - | - | - | - | {bayes_auc:.4f} | |")
    lines += ["", "| family | AUC per doubling of FLOPs | AUC per doubling of dense params | best AUC |",
              "|---|---:|---:|---:|"]
    for family, s in slopes.items():
        f = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
        lines.append(f"| {family} | {f(s['auc_per_doubling_flops'])} | {f(s['auc_per_doubling_params'])} | "
                     f"{s['best_auc']:.4f} |")
    return "\n".join(lines) + "\n"


def run_scaling(spec: Path | str, seeds: list[int], out_dir: Path, overrides: list[str] | None = None,
                log: Callable[[str], None] = print, budget: str | None = None) -> dict:
    cells, spec_budget = load_spec(spec)
    budget = budget or spec_budget
    report = run_accuracy(cells, seeds, out_dir, overrides, log=log, name="scaling_runs", budget=budget)
    rows = report["summary"]
    bayes = next((r["bayes_auc"] for r in rows if r.get("bayes_auc")), None)
    slopes = fit_slopes(rows)
    report.update({"spec": str(spec), "slopes": slopes, "bayes_auc": bayes})
    write_json(out_dir / "scaling.json", report)
    write_text_atomic(out_dir / "scaling.md", markdown(rows, slopes, bayes))
    plot(rows, bayes, out_dir / "scaling.png",
         f"{Path(spec).name}: budget {budget or 'per config'}, {len(seeds)} seed(s) per point")
    return report
