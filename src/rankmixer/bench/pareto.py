"""The Pareto front of a multi-task model's per-task test NE: WC-MHGD (learned task weights under
a preference, train/bilevel.py) against a grid of fixed linear scalarisations and against equal
weights, each over seeds, with the hypervolume of every method's front.

A study (``configs/bench/pareto.yaml``) names a multi-task experiment, the overrides that fix its
training budget (one validation at the end, so every run is judged at the same point), the
simplex step of the grid and WC-MHGD's options. It runs:

1. the linear grid: ``train.task_weights = T * w`` for every ``w`` on the simplex grid (its
   centroid is equal weights; every point mixed with ``floor`` of equal weights, since a weight
   of exactly 0 leaves a task's head untrained rather than traded off), every seed;
2. the ideal point: per task, the lowest mean validation NE over the grid's runs (the grid's
   corners train one task alone: the classic estimate of the utopia point);
3. WC-MHGD: ``train.bilevel`` with each preference of the same simplex grid and that ideal point,
   every seed.

Hypervolume: per seed, the area (volume) that a method's test NE points dominate up to the
reference point NE = 1 per task (a constant base-rate predictor), computed by pymoo; reported
as mean and standard deviation over seeds. Every number comes from the runs' ``metrics.json``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer import experiment
from rankmixer.bench.accuracy import read_yaml_keys
from rankmixer.config import ConfigError, config_path, load_config
from rankmixer.core.files import check_replaceable, write_json, write_marker, write_text_atomic
from rankmixer.core.hardware import machine_info
from rankmixer.bench.runs import train_unfinished

BENCH_KIND = "bench-pareto"
METHODS = ("linear", "wc-mhgd", "equal")


def simplex_grid(n_tasks: int, step: float) -> list[list[float]]:
    """Every point of the simplex whose coordinates are multiples of ``step`` (1/step an
    integer), plus the centroid (equal weights) when it is not one of them; in lexicographic
    order, descending."""
    k = round(1 / step)
    if k < 1 or abs(k * step - 1) > 1e-9:
        raise ValueError(f"grid_step {step}: 1 / step must be a whole number")
    points = [[c / k for c in combo] for combo in itertools.product(range(k, -1, -1), repeat=n_tasks)
              if sum(combo) == k]
    centroid = [1.0 / n_tasks] * n_tasks
    if not any(np.allclose(p, centroid) for p in points):
        points.append(centroid)
    return points


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume dominated by ``points`` ([n, T], lower is better) up to ``reference`` (pymoo's
    exact indicator); points beyond the reference count nothing."""
    from pymoo.indicators.hv import HV

    inside = points[(points < reference).all(axis=1)]
    return float(HV(ref_point=reference)(inside)) if len(inside) else 0.0


def nondominated(points: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (lower is better in every coordinate)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        others = np.delete(points, i, axis=0)
        if len(others) and ((others <= points[i]).all(axis=1) & (others < points[i]).any(axis=1)).any():
            keep[i] = False
    return keep


def load_study(name: str, suite: Path | str = "pareto") -> dict:
    """One study of a suite (a file, or a packaged suite's name), with its defaults filled in."""
    suite = config_path(suite, kind="bench", what="pareto suite")
    studies = read_yaml_keys(suite, "pareto suite", ("studies",)).get("studies") or {}
    if name not in studies:
        raise ConfigError(f"study {name!r} is not in {suite}; have {sorted(studies)}")
    study = {"overrides": [], "grid_step": 0.25, "floor": 0.1, "bilevel": {}, **studies[name]}
    unknown = set(study) - {"config", "overrides", "grid_step", "floor", "bilevel", "description"}
    if unknown:
        raise ConfigError(f"{suite}: study {name!r} has unknown keys {sorted(unknown)}")
    return study


def _bilevel_override(options: dict) -> str:
    return "train.bilevel=" + json.dumps(options)


def _read(cfg, tasks: list[str]) -> dict:
    m = json.loads((cfg.resolved_run_dir() / "metrics.json").read_text())
    row = {split: {f"{t}/{k}": m[split][f"{t}/{k}"] for t in tasks for k in ("ne", "auc", "logloss")}
           for split in ("valid", "test")}
    row["bayes"] = m.get("bayes")
    return row


def _final_weights(cfg) -> list[float] | None:
    """The learned task weights at the end of a WC-MHGD run (its last ``bilevel`` record)."""
    last = None
    with open(cfg.resolved_run_dir() / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") == "bilevel":
                last = rec["weights"]
    return last


def run_pareto(study_name: str, out_dir: Path, seeds: list[int], *, suite: Path | str = "pareto", processes: int = 1,
               name: str = "pareto", log: Callable[[str], None] = print) -> dict:
    """Run (or read) every run of the study; write ``<name>.json``, ``<name>.md`` and
    ``<name>.png`` into ``out_dir`` (runs under ``out_dir/runs``)."""
    study = load_study(study_name, suite)
    check_replaceable(out_dir, BENCH_KIND, overwrite=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, BENCH_KIND)
    base = [*study["overrides"], "train.progress=false", "train.tensorboard=false"]

    def cfg_for(tag: str, seed: int, extra: list[str]):
        return load_config(study["config"], [*base, *extra, f"seed={seed}", f"run_dir={out_dir / 'runs' / f'{tag}-s{seed}'}"])

    probe = cfg_for("probe", seeds[0], [])
    tasks = list(experiment.prepare_data(probe.data, log=log).labels)
    if len(tasks) < 2:
        raise ValueError(f"study {study_name!r}: {study['config']} has one task; a Pareto front needs two or more")
    T = len(tasks)
    floor = study["floor"]
    if not 0.0 <= floor < 1.0:
        raise ConfigError(f"study {study_name!r}: floor {floor} is not in [0, 1)")
    # Each grid point mixed with `floor` of equal weights: a weight of exactly 0 would leave a
    # task's head untrained, not traded off.
    grid = [[round((1 - floor) * x + floor / T, 10) for x in w] for w in simplex_grid(T, study["grid_step"])]

    def tag(kind: str, w: list[float]) -> str:
        return f"{kind}-" + "_".join(f"{x:.3f}" for x in w)

    linear = [(w, seed, cfg_for(tag("linear", w), seed, [f"train.task_weights={[T * x for x in w]}"]))
              for w in grid for seed in seeds]
    train_unfinished([(f"linear {w} seed {s}", c) for w, s, c in linear], processes, log)
    tasks_valid = [[_read(c, tasks)["valid"][f"{t}/ne"] for t in tasks] for _, _, c in linear]
    by_w = {}
    for (w, _, _), ne in zip(linear, tasks_valid, strict=True):
        by_w.setdefault(tuple(w), []).append(ne)
    ideal = np.min([np.mean(v, axis=0) for v in by_w.values()], axis=0).tolist()
    log("ideal point (lowest mean validation NE of the grid, per task): "
        + ", ".join(f"{t} {z:.4f}" for t, z in zip(tasks, ideal, strict=True)))

    bilevel = [(r, seed, cfg_for(tag("wc-mhgd", r), seed, [_bilevel_override(
        {**study["bilevel"], "preference": r, "ideal": ideal})])) for r in grid for seed in seeds]
    train_unfinished([(f"wc-mhgd {r} seed {s}", c) for r, s, c in bilevel], processes, log)

    runs = []
    for method, items in (("linear", linear), ("wc-mhgd", bilevel)):
        for w, seed, cfg in items:
            row = _read(cfg, tasks)
            runs.append({"method": method, "setting": w, "seed": seed, "run_dir": str(cfg.resolved_run_dir()),
                         "valid": row["valid"], "test": row["test"],
                         "final_weights": _final_weights(cfg) if method == "wc-mhgd" else [T * x for x in w]})
    bayes = _read(linear[0][2], tasks)["bayes"]
    report = summarise(runs, tasks, seeds, grid)
    report.update({
        "machine": machine_info(), "study": study_name, "config": study["config"], "overrides": study["overrides"],
        "bilevel": study["bilevel"], "grid_step": study["grid_step"], "floor": floor, "ideal": ideal,
        "bayes_test": None if not bayes else {t: (bayes.get("test") or {}).get(f"{t}/logloss") for t in tasks},
        "runs": runs,
    })
    write_json(out_dir / f"{name}.json", report)
    write_text_atomic(out_dir / f"{name}.md", markdown_tables(report))
    plot(report, out_dir / f"{name}.png")
    return report


def summarise(runs: list[dict], tasks: list[str], seeds: list[int], grid: list[list[float]]) -> dict:
    """Per (method, setting): mean and sd over seeds of each task's test NE and AUC; per method:
    the hypervolume of its per-seed front (equal weights = the grid's centroid alone)."""
    T = len(tasks)
    reference = np.ones(T)
    centroid = [1.0 / T] * T
    points = []
    for method in ("linear", "wc-mhgd"):
        for w in grid:
            rows = [r for r in runs if r["method"] == method and np.allclose(r["setting"], w)]
            ne = np.array([[r["test"][f"{t}/ne"] for t in tasks] for r in rows])
            auc = np.array([[r["test"][f"{t}/auc"] for t in tasks] for r in rows])
            weights = np.array([r["final_weights"] for r in rows if r["final_weights"] is not None])
            points.append({"method": method, "setting": w, "seeds": len(rows),
                           "ne_mean": ne.mean(0).tolist(), "ne_sd": ne.std(0, ddof=1).tolist() if len(rows) > 1 else None,
                           "auc_mean": auc.mean(0).tolist(),
                           "weights_mean": weights.mean(0).tolist() if len(weights) else None})
    hv = {}
    for method in METHODS:
        per_seed = []
        for seed in seeds:
            if method == "equal":
                rows = [r for r in runs if r["method"] == "linear" and r["seed"] == seed and np.allclose(r["setting"], centroid)]
            else:
                rows = [r for r in runs if r["method"] == method and r["seed"] == seed]
            ne = np.array([[r["test"][f"{t}/ne"] for t in tasks] for r in rows])
            per_seed.append(hypervolume(ne, reference))
        hv[method] = {"mean": float(np.mean(per_seed)), "sd": float(np.std(per_seed, ddof=1)) if len(seeds) > 1 else None,
                      "per_seed": per_seed}
    means = np.array([p["ne_mean"] for p in points])
    for p, keep in zip(points, nondominated(means), strict=True):
        p["on_front"] = bool(keep)
    return {"tasks": tasks, "seeds": seeds, "reference_point": reference.tolist(), "points": points, "hypervolume": hv}


def _fmt_w(w: list[float]) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in w) + ")"


def points_table(report: dict) -> str:
    """Every setting of every method: mean test NE per task (± sd over seeds), mean test AUC,
    the learned (WC-MHGD) or fixed weights, and whether the seed mean is on the front of all
    settings' means."""
    tasks = report["tasks"]
    head = ["method", "preference / weights", *(f"{t} NE" for t in tasks), *(f"{t} AUC" for t in tasks),
            "final weights", "on front"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in report["points"]:
        sd = p["ne_sd"] or [None] * len(tasks)
        ne = [f"{m:.4f}" + (f" ± {s:.4f}" if s is not None else "") for m, s in zip(p["ne_mean"], sd, strict=True)]
        auc = [f"{a:.4f}" for a in p["auc_mean"]]
        w = _fmt_w(p["weights_mean"]) if p["weights_mean"] else "-"
        lines.append("| " + " | ".join([p["method"], _fmt_w(p["setting"]), *ne, *auc, w, "yes" if p["on_front"] else ""]) + " |")
    return "\n".join(lines) + "\n"


def hypervolume_table(report: dict) -> str:
    """Each method's hypervolume (reference NE = 1 per task): mean ± sd over seeds, per seed."""
    lines = ["| method | runs per seed | hypervolume (mean ± sd over seeds) | per seed |", "| --- | --- | --- | --- |"]
    per_method = {"linear": len(report["points"]) // 2, "wc-mhgd": len(report["points"]) // 2, "equal": 1}
    for method in METHODS:
        h = report["hypervolume"][method]
        sd = f" ± {h['sd']:.5f}" if h["sd"] is not None else ""
        lines.append(f"| {method} | {per_method[method]} | {h['mean']:.5f}{sd} | "
                     + ", ".join(f"{x:.5f}" for x in h["per_seed"]) + " |")
    return "\n".join(lines) + "\n"


def markdown_tables(report: dict) -> str:
    return points_table(report) + "\n" + hypervolume_table(report)


def plot(report: dict, path: Path) -> None:
    """Test NE of every run (small) and every setting's seed mean (large), task 0 against each
    other task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["tasks"]
    pairs = [(0, j) for j in range(1, len(tasks))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    colours = {"linear": "tab:blue", "wc-mhgd": "tab:red"}
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        for method, colour in colours.items():
            runs = [r for r in report["runs"] if r["method"] == method]
            ax.scatter([r["test"][f"{tasks[i]}/ne"] for r in runs], [r["test"][f"{tasks[j]}/ne"] for r in runs],
                       s=10, alpha=0.35, color=colour)
            pts = [p for p in report["points"] if p["method"] == method]
            ax.scatter([p["ne_mean"][i] for p in pts], [p["ne_mean"][j] for p in pts], s=60, color=colour,
                       label=f"{method} (seed mean)", edgecolor="black")
        centroid = [p for p in report["points"] if p["method"] == "linear" and np.allclose(p["setting"], 1 / len(tasks))]
        if centroid:
            ax.scatter([centroid[0]["ne_mean"][i]], [centroid[0]["ne_mean"][j]], marker="*", s=250, color="gold",
                       edgecolor="black", label="equal weights", zorder=5)
        ax.set_xlabel(f"{tasks[i]} test NE")
        ax.set_ylabel(f"{tasks[j]} test NE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['study']}: per-task test NE (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
