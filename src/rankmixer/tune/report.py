"""What a study has found, as ``tune.json`` holds it: every trial (values as the config takes
them, state, value, per-seed values, run directories), the best trial, and its values as
override strings ready for ``rankmixer train`` or a config.

The report is rebuilt from the storage each time, so it covers the trials of every process
working on the study, not only this one's.
"""

from __future__ import annotations

import json
import shlex

from rankmixer.tune.space import SearchSpace

__all__ = ["build_report", "format_value", "trials_markdown", "trial_record"]


def trial_record(trial, space: SearchSpace) -> dict:
    """One Optuna trial as the report lists it."""
    origin = trial.user_attrs.get("origin", trial.number)
    start, end = trial.datetime_start, trial.datetime_complete
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": space.values(trial.params),
        "values_per_seed": trial.user_attrs.get("values"),
        "run_dirs": trial.user_attrs.get("run_dirs"),
        "retry_of": origin if origin != trial.number else None,
        "interrupted": bool(trial.user_attrs.get("interrupted")),
        "error": trial.user_attrs.get("error"),
        "started": start.isoformat(timespec="seconds") if start else None,
        "finished": end.isoformat(timespec="seconds") if end else None,
        "duration_s": round((end - start).total_seconds(), 1) if start and end else None,
    }


def build_report(study, space: SearchSpace, context: dict) -> dict:
    """The report of ``study``; ``context`` (config, overrides, storage, machine ...) is copied in."""
    trials = [trial_record(t, space) for t in study.get_trials(deepcopy=False)]
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = None
    if complete:
        b = study.best_trial
        values = space.values(b.params)
        overrides = space.overrides(values)
        best = {"number": b.number, "value": b.value, "params": values, "overrides": overrides,
                "run_dirs": b.user_attrs.get("run_dirs"),
                "train_command": shlex.join(["rankmixer", "train", "-c", context["config"],
                                             *context["overrides"], *overrides])}
    return {
        **context,
        "objective": space.objective.model_dump(),
        "space": space.describe(),
        "searched": [p.key for p in space.searched],
        "states": states,
        "best": best,
        "best_overrides": best["overrides"] if best else [],
        "trials": trials,
    }


def format_value(value) -> str:
    """A searched value in a printed or Markdown table: floats to 4 significant digits, text as
    it is, anything else (lists, mappings, null) as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def trials_markdown(report: dict, top: int = 10) -> str:
    """The ``top`` complete trials of a ``tune.json``, best first: the objective's value and each
    searched key's value (the keys' last dotted part as the header)."""
    keys = report["searched"]
    done = sorted((t for t in report["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"],
                  reverse=report["objective"]["direction"] == "maximize")
    metric = f"{report['objective']['split']} {report['objective']['metric']}"
    lines = ["| rank | trial | " + metric + " | " + " | ".join(k.rsplit(".", 1)[-1] for k in keys) + " |",
             "|---:|---:|---:|" + "---|" * len(keys)]
    for rank, t in enumerate(done[:top], start=1):
        lines.append(f"| {rank} | {t['number']} | {t['value']:.4f} | "
                     + " | ".join(format_value(t["params"].get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
