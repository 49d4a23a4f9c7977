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

Kept draws: each run in ``scaling.json`` keeps its test AUC on every resample of
:data:`BOOTSTRAP` (``auc_draws``), so that slopes and paired differences outlive the runs'
folders; ``earlier=`` (``--earlier``) joins an earlier report's runs to these
(:func:`run_scaling`; the rules, and the fallbacks for runs kept without draws, in
``docs/scaling.md``).

Outputs in ``out``: ``scaling.json`` (every run, the per-family summary, the fitted slopes and
the gaps), ``scaling.md`` (the table) and ``scaling.png`` (the two plots, with the dataset's
Bayes-optimal AUC as the ceiling when it is known).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer.bench.accuracy import (Cell, format_si, machine_kind, model_section, read_yaml_keys, run_accuracy,
                                      summarise)
from rankmixer.bench.intervals import BOOTSTRAP, differences_table, run_dir_name, run_predictions
from rankmixer.config import ConfigError, config_path
from rankmixer.core.bootstrap import bootstrap_distribution, percentile_interval
from rankmixer.core.files import check_output, write_json, write_text_atomic

ORACLE = "model-class oracle"  # the model column of the spec's ``oracle`` run
SPEC_KEYS = ("dataset", "budget", "families", "oracle", "differences")
SLOPE_KEYS = {"flops_per_sample": "auc_per_doubling_flops", "dense_parameters": "auc_per_doubling_params"}
# Overrides that change where and how fast a run trains, not what it learns: an earlier report
# made with other values of these is still the same study.
PLACEMENT_OVERRIDES = ("train.threads=", "train.device=", "train.progress=")


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


def size_differences(rows: list[dict], pairs: list[tuple[str, str]], draws: dict[str, np.ndarray | None],
                     earlier: list[dict] = (), fresh: set[str] = frozenset()) -> list[dict]:
    """Family A minus family B at each size both have (size i of one spec is FLOP-matched
    across families), labelled ``size i``: the paired bootstrap difference of the seed-mean test
    AUC from both rows' draws (``draws``: :func:`row_draws`). Without draws on both sides:
    ``earlier``'s difference of the pair when neither row is in ``fresh`` (the labels trained
    or read here), else an unpaired one from the rows' intervals (see the module docstring)."""
    by_label = {r["label"]: r for r in rows}
    kept = {(d["a"], d["b"]): d for d in earlier}
    out = []
    for a, b in pairs:
        for label_a in (lab for lab, r in by_label.items() if r["model"] == a):
            size = label_a.rsplit("-", 1)[1]
            label_b = cell_label(b, size)
            if label_b not in by_label:
                continue
            ra, rb = by_label[label_a], by_label[label_b]
            head = {"dataset": f"size {size}", "model_a": a, "model_b": b, "a": label_a, "b": label_b,
                    "metric": "auc", "seeds_a": ra["seeds"], "seeds_b": rb["seeds"]}
            if draws.get(label_a) is not None and draws.get(label_b) is not None:
                with np.errstate(invalid="ignore"):
                    ci = percentile_interval(ra["auc"] - rb["auc"], draws[label_a] - draws[label_b],
                                             BOOTSTRAP["level"])
                out.append({**head, **ci.as_dict(), "paired": True})
            elif (label_a, label_b) in kept and not {label_a, label_b} & fresh:
                out.append(kept[(label_a, label_b)])
            elif all(r.get("auc_ci_low") is not None for r in (ra, rb)):
                out.append({**head, **unpaired_difference(ra, rb)})
    return out


def unpaired_difference(ra: dict, rb: dict) -> dict:
    """Row A minus row B from their own 95% intervals, as independent normals: half-widths
    combined in quadrature. Conservative beside the paired difference (the shared test-set noise
    is not cancelled); for rows whose draws are gone."""
    z = 1.959963984540054
    half = float(np.hypot(*((r["auc_ci_high"] - r["auc_ci_low"]) / 2 for r in (ra, rb))))
    est = ra["auc"] - rb["auc"]
    return {"estimate": est, "low": est - half, "high": est + half, "level": BOOTSTRAP["level"],
            "n_boot": None, "n_valid": None, "unit": "rows", "paired": False, "se": half / z}


def _slopes(log2x: np.ndarray, auc: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``auc`` [..., n] on ``log2x`` [n], along the last axis."""
    dx = log2x - log2x.mean()
    return ((auc - auc.mean(axis=-1, keepdims=True)) * dx).sum(axis=-1) / (dx * dx).sum()


def fit_slopes(rows: list[dict], draws: dict[str, np.ndarray | None] | None = None, earlier: dict | None = None,
               fresh: set[str] = frozenset()) -> dict[str, dict]:
    """Per family (the oracle is none): AUC gained per doubling of FLOPs and of dense parameters
    (least squares on log2 x), the best AUC and that of its largest size. One number per curve,
    to compare families. With every size's ``draws`` (:func:`row_draws`), each slope also gets a
    bootstrap interval (``<slope>_ci``: [low, high], see the module docstring). Without them, a
    family none of whose rows is in ``fresh`` takes its ``earlier`` entry (the slopes of the same
    runs, with the interval computed when their predictions were there); else no interval."""
    out = {}
    for family in dict.fromkeys(r["model"] for r in rows if r["model"] != ORACLE):
        group = [r for r in rows if r["model"] == family]
        auc = np.array([r["auc"] for r in group])
        sizes = [(draws or {}).get(r["label"]) for r in group]
        stacked = np.stack(sizes, axis=1) if all(d is not None for d in sizes) else None
        before = (earlier or {}).get(family)
        if stacked is None and before is not None and not {r["label"] for r in group} & fresh:
            out[family] = before
            continue
        fit: dict = {"best_auc": float(auc.max()), "largest_auc": float(auc[-1])}
        for key, name in SLOPE_KEYS.items():
            x = np.array([r[key] or np.nan for r in group], dtype=float)
            ok = np.isfinite(x) & (x > 0)
            fit[name] = fit[name + "_ci"] = None
            if ok.sum() >= 2 and np.ptp(np.log2(x[ok])) > 0:
                fit[name] = float(_slopes(np.log2(x[ok]), auc[ok]))
                if stacked is not None:
                    values = _slopes(np.log2(x[ok]), stacked[:, ok])
                    level = BOOTSTRAP["level"]
                    fit[name + "_ci"] = [float(q) for q in np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])]
        out[family] = fit
    return out


def labels_fingerprint(labels: np.ndarray) -> str:
    """Which test rows draws were taken from: a hash of the labels in their order (float32)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.float32).tobytes()).hexdigest()[:16]


def run_draws(cell: dict, runs_dir: Path | None) -> dict | None:
    """A run's test AUC on each resample of :data:`BOOTSTRAP`, from its saved predictions (the
    first task): ``{"n_boot", "seed", "test_rows", "float32_base64"}`` (``nan`` where the AUC is
    undefined); the draws the cell already keeps where its predictions are gone; None where it
    has neither."""
    preds = run_predictions(cell, runs_dir)
    if preds is None:
        return cell.get("auc_draws")
    values = bootstrap_distribution(preds.labels, [preds.probs], "auc", n_boot=BOOTSTRAP["n_boot"],
                                    seed=BOOTSTRAP["seed"])[:, 0]
    return {"n_boot": BOOTSTRAP["n_boot"], "seed": BOOTSTRAP["seed"], "test_rows": labels_fingerprint(preds.labels[:, 0]),
            "float32_base64": base64.b64encode(values.astype("<f4").tobytes()).decode("ascii")}


def draw_values(kept: dict) -> np.ndarray:
    """The [n_boot] values of a run's kept draws (:func:`run_draws`), as float64."""
    return np.frombuffer(base64.b64decode(kept["float32_base64"]), dtype="<f4").astype(np.float64)


def row_draws(rows: list[dict], cells: list[dict]) -> dict[str, np.ndarray | None]:
    """Label -> [n_boot] seed-mean test AUC of the row on each resample, from its runs' kept
    ``auc_draws``; None where a run kept none. Draws of other resamples or other test rows than
    the rest are a ConfigError naming the runs: such a study mixes test sets."""
    kinds: dict[tuple, list[str]] = {}
    for c in cells:
        if d := c.get("auc_draws"):
            kinds.setdefault((d["n_boot"], d["seed"], d["test_rows"]), []).append(f"{c['label']} seed {c['seed']}")
    if len(kinds) > 1:
        groups = "; ".join(f"test rows {k[2]} ({k[0]} resamples, seed {k[1]}): {', '.join(v)}" for k, v in kinds.items())
        raise ConfigError(f"the runs' bootstrap draws come from different test sets or resamples: {groups}")
    out: dict[str, np.ndarray | None] = {}
    for r in rows:
        runs = [c.get("auc_draws") for c in cells if c["label"] == r["label"]]
        out[r["label"]] = np.mean([draw_values(d) for d in runs], axis=0) if runs and all(runs) else None
    return out


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
                processes: int = 1, report_only: bool = False, earlier: Path | None = None) -> dict:
    """Train (or read) the spec's runs, all of them or those of ``families``, ``processes`` at
    a time (``report_only``: the finished ones only, nothing trained); write the report files
    into ``out_dir`` (see the module docstring).

    ``earlier``: a ``scaling.json`` of the same study. Its runs join the report where no run of
    the same point is here, and the points it holds are not trained again (unless a run of the
    point is already in ``out_dir``, which is then read or resumed as usual): a machine that
    continues the study trains only what is still missing."""
    check_output(out_dir / "scaling.json", [earlier], "scaling report")  # before any training
    all_cells, spec_budget = load_spec(spec)
    cells = pick_families(all_cells, families) if families else all_cells
    budget = budget or spec_budget
    before = read_earlier(earlier, spec, all_cells, budget, overrides or []) if earlier is not None else {}
    if before and not report_only:
        held = {c["label"] for c in before["cells"]}
        started = {c.label for c in cells for s in seeds if (out_dir / "runs" / run_dir_name(c.label, s)).is_dir()}
        skip = [c.label for c in cells if c.label in held and c.label not in started]
        cells = [c for c in cells if c.label not in skip]
        if skip:
            log(f"not trained, held by {earlier}: {', '.join(skip)}")
        if not cells:
            raise ConfigError(f"every point asked for is held by {earlier}; nothing to train (--report-only reports)")
    report = run_accuracy(cells, seeds, out_dir, overrides, log=log, name="scaling_runs", budget=budget,
                          processes=processes, report_only=report_only)
    runs_dir = out_dir / "runs"
    for cell in report["cells"]:
        cell["auc_draws"] = run_draws(cell, runs_dir)
    fresh = {c["label"] for c in report["cells"]}
    if before:
        check_same_test_rows(earlier, before["cells"], report["cells"])
        carried = [c for c in before["cells"] if c["label"] not in fresh]
        order = {c.label: i for i, c in enumerate(all_cells)}
        report["cells"] = sorted(report["cells"] + carried, key=lambda c: (order[c["label"]], c["seed"]))
        # The fresh rows are summarised already; the carried ones keep their stored intervals.
        report["summary"] = sorted(report["summary"] + summarise(carried, None, stored=before.get("summary") or ()),
                                   key=lambda r: order[r["label"]])
        report["earlier"] = {"report": str(earlier), "labels": list(dict.fromkeys(c["label"] for c in carried))}
        report["machine"]["run_machines"] = run_machines([report["machine"], before.get("machine")])
        log(f"carried {len(carried)} runs from {earlier}: {', '.join(report['earlier']['labels']) or 'none'}")
    rows = report["summary"]
    draws = row_draws(rows, report["cells"])
    bayes = next((r["bayes_auc"] for r in rows if r.get("bayes_auc")), None)
    slopes = fit_slopes(rows, draws, before.get("slopes"), fresh)
    report.update({"spec": str(spec), "slopes": slopes, "bayes_auc": bayes, "gaps": gaps(rows, bayes),
                   "differences": size_differences(rows, spec_differences(spec), draws,
                                                   before.get("differences") or [], fresh)})
    write_json(out_dir / "scaling.json", report, inputs=[earlier], what="scaling report")
    write_text_atomic(out_dir / "scaling.md", markdown(rows, slopes, bayes, report["differences"]))
    plot(rows, bayes, out_dir / "scaling.png",
         f"{Path(spec).name}: budget {budget or 'per config'}, {len(seeds)} seed(s) per point")
    return report


def run_machines(machines: list[dict | None]) -> list[dict]:
    """The distinct machines that trained a report's runs, from reports' ``machine`` sections
    (each the machine itself, or one that lists ``run_machines``)."""
    out: list[dict] = []
    for m in machines:
        for one in (m or {}).get("run_machines") or ([m] if m else []):
            kind = machine_kind(one)
            if kind not in out:
                out.append(kind)
    return out


def read_earlier(path: Path, spec: Path | str, cells: list[Cell], budget: str | None, overrides: list[str]) -> dict:
    """An earlier ``scaling.json`` to carry runs from, checked against this study: the same
    spec, budget and overrides (those of :data:`PLACEMENT_OVERRIDES` aside), and every run one
    of the spec's points with the model and data it has now. A ConfigError names the first
    difference."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--earlier {path}: not a readable JSON report ({e})") from e
    if not isinstance(rep, dict) or not isinstance(rep.get("cells"), list) or "slopes" not in rep:
        raise ConfigError(f"--earlier {path}: not a `bench scaling` report (no cells and slopes)")
    if Path(str(rep.get("spec"))).stem != Path(str(spec)).stem:
        raise ConfigError(f"--earlier {path}: a report of spec {rep.get('spec')!r}, not {str(spec)!r}")
    if rep.get("budget") != budget:
        raise ConfigError(f"--earlier {path}: budget {rep.get('budget')!r}, here {budget!r}")
    theirs, ours = (sorted(x for x in o if not x.startswith(PLACEMENT_OVERRIDES))
                    for o in (rep.get("overrides") or [], overrides))
    if theirs != ours:
        raise ConfigError(f"--earlier {path}: overrides {rep.get('overrides')}, here {overrides}")
    spec_cells = {c.label: c for c in cells}
    for c in rep["cells"]:
        cell = spec_cells.get(c.get("label"))
        if cell is None:
            raise ConfigError(f"--earlier {path}: run {c.get('label')!r} is not a point of {spec}")
        if list(c.get("overrides") or []) != list(cell.overrides):
            raise ConfigError(f"--earlier {path}: run {cell.label} trained {c.get('overrides')}, the spec now "
                              f"says {list(cell.overrides)}")
    return rep


def check_same_test_rows(path: Path, earlier: list[dict], fresh: list[dict]) -> None:
    """The earlier report's runs and these were tested on the same rows: the same Bayes-optimal
    test AUC, where the data has one (a synthetic set drawn with other options has another)."""
    bayes = {round(b, 12) for c in [*earlier, *fresh] if (b := ((c.get("bayes") or {}).get("test") or {}).get("auc"))}
    if len(bayes) > 1:
        raise ConfigError(f"--earlier {path}: its runs and these were tested on different rows "
                          f"(Bayes-optimal test AUCs {sorted(bayes)})")
