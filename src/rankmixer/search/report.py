"""What a search has found, as ``search.json`` holds it: the tuning report of its study plus,
per trial, the architecture in one line, its FLOPs per sample and dense parameters (read from
the trial's first run's ``metrics.json``: the one FLOP counter, measured when it trained), the
error of a failed trial, and the Pareto front of validation metric against FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

from rankmixer.core.rundir import METRICS_FILE
from rankmixer.models.searched import describe_blocks

__all__ = ["first_metrics", "markdown_table", "pareto_front", "search_report"]


def pareto_front(points: list[tuple[int, float, float]], maximize: bool = True) -> list[int]:
    """The ids of the points ``(id, value, flops)`` no other point dominates (a value at least as
    good at no more FLOPs, strictly better in one), in order of FLOPs."""
    sign = 1.0 if maximize else -1.0
    front = []
    for i, v, f in points:
        dominated = any(sign * w >= sign * v and g <= f and (sign * w > sign * v or g < f) for j, w, g in points if j != i)
        if not dominated:
            front.append((f, i))
    return [i for _, i in sorted(front)]


def first_metrics(out_dir: Path, run_dirs: list[str] | None) -> dict | None:
    """The ``metrics.json`` of a trial's first run (of ``run_dirs``, relative to ``out_dir``)
    that has one; None when none has."""
    for run in run_dirs or []:
        path = Path(out_dir) / run / METRICS_FILE
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _run_numbers(out_dir: Path, run_dirs: list[str] | None) -> dict:
    m = first_metrics(out_dir, run_dirs) or {}
    return {"flops_per_sample": m.get("flops_per_sample"), "dense_parameters": m.get("dense_parameters")}


def search_report(tune: dict, out_dir: Path, strategy: str) -> dict:
    """``tune`` (rankmixer.tune's report of the study) with each trial's architecture and costs,
    and the Pareto front of the complete trials."""
    trials = []
    for t in tune["trials"]:
        model = (t["params"] or {}).get("model")
        trials.append({
            "number": t["number"], "state": t["state"], "value": t["value"], "values_per_seed": t["values_per_seed"],
            "architecture": describe_blocks(model["blocks"]) if model else None, "model": model,
            **_run_numbers(out_dir, t["run_dirs"]), "run_dirs": t["run_dirs"], "error": t.get("error"),
            "retry_of": t["retry_of"], "duration_s": t["duration_s"],
        })
    maximize = tune["objective"]["direction"] == "maximize"
    done = [(t["number"], t["value"], t["flops_per_sample"]) for t in trials
            if t["state"] == "COMPLETE" and t["flops_per_sample"] is not None]
    best = tune["best"]
    return {
        "strategy": strategy,
        **{k: tune[k] for k in ("config", "overrides", "space_file", "storage", "study", "trials_target", "seeds",
                                "machine", "objective", "space", "states")},
        "best": None if best is None else {**best, "architecture": describe_blocks(best["params"]["model"]["blocks"])},
        "pareto": pareto_front(done, maximize),
        "trials": trials,
    }


def markdown_table(report: dict) -> str:
    """One row per trial: state, the validation metric, FLOPs per sample, dense parameters, on the
    Pareto front or not, and the architecture (a failed trial shows its error instead)."""
    metric = f"valid {report['objective']['metric']}"
    lines = [f"| trial | state | {metric} | FLOPs/sample | dense params | Pareto | architecture |",
             "|---:|---|---:|---:|---:|:---:|---|"]
    front = set(report["pareto"])
    for t in report["trials"]:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        flops = "-" if t["flops_per_sample"] is None else f"{t['flops_per_sample']:,.0f}"
        params = "-" if t["dense_parameters"] is None else f"{t['dense_parameters']:,}"
        what = t["architecture"] or "-"
        if t["error"]:
            what = f"{what} (failed: {t['error'].splitlines()[0][:80]})"
        lines.append(f"| {t['number']} | {t['state']} | {value} | {flops} | {params} | "
                     f"{'*' if t['number'] in front else ''} | `{what}` |")
    return "\n".join(lines)
