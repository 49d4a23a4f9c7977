"""The tuning command: ``rankmixer tune``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, user_errors

__all__ = ["tune", "trials_table"]


def trials_table(report: dict) -> Table:
    """One row per trial: number, state, value (per seed too) and the searched values; the best
    trial is starred."""
    from rankmixer.tune.report import format_value

    obj = report["objective"]
    searched = report["searched"]
    best = (report.get("best") or {}).get("number")
    table = Table(title=f"study {report['study']}: valid {obj['metric']} ({obj['direction']}), "
                        f"{report['states'].get('COMPLETE', 0)} complete of {report['trials_target']} asked")
    for c in ["trial", "state", f"valid {obj['metric']}", *searched]:
        table.add_column(c, justify="right")
    for t in report["trials"]:
        value = "-" if t["value"] is None else f"{t['value']:.5f}"
        table.add_row(f"{t['number']}{' *' if t['number'] == best else ''}", t["state"], value,
                      *(format_value(t["params"][k]) if k in t["params"] else "-" for k in searched))
    return table


def tune(
    config: Path = typer.Option(..., "--config", "-c",
                                help="Experiment: a packaged name (movielens_dcnv2) or a YAML file."),
    space: Path = typer.Option(..., "--space", help="Search space: a YAML file or a packaged space (docs/tuning.md)."),
    trials: int = typer.Option(..., "--trials", min=1, help="Complete trials the study should hold in total "
                               "(a study that has some already runs only the rest)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", help="Tuning folder: new, empty or one of ours (trials' run "
                             "directories, tune.json, and the default storage study.db)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage shared by every process of the study: an RDB URL "
                                          "(sqlite:///x.db, postgresql://...) or a journal file path "
                                          "(default: sqlite:///OUT/study.db)."),
    study: str = typer.Option("tune", help="Study name inside the storage."),
    heartbeat: int = typer.Option(60, min=1, help="Seconds between a running trial's heartbeats (RDB storages): a "
                                  "trial silent for twice as long is failed and run again."),
    print_best_overrides: bool = typer.Option(False, help="At the end print only the best trial's overrides, "
                                              "one per line (for a config or `rankmixer train`)."),
    keep_checkpoints: bool = typer.Option(False, help="Keep finished trials' checkpoints/ (by default a finished "
                                          "trial keeps its config, logs, metrics, predictions and best weights)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every trial, e.g. train.epochs=3"),
) -> None:
    """Tune an experiment's hyperparameters on the validation split: Optuna trials until the study
    holds --trials complete ones; writes OUT/tune.json (every trial, the best and its overrides)."""
    from rankmixer.tune import MissingExtra, TuneError, import_optuna, run_tune

    quiet = print_best_overrides
    with user_errors(MissingExtra, TuneError):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial instead
        report = run_tune(config, space, trials, out, list(overrides or []), storage, study,
                          log=(lambda *_: None) if quiet else console.print, heartbeat_s=heartbeat,
                          keep_checkpoints=keep_checkpoints)
    if quiet:
        print("\n".join(report["best_overrides"]))
        return
    console.print(trials_table(report))
    best = report["best"]
    if best:
        console.print(f"best: trial {best['number']}, valid {report['objective']['metric']} {best['value']:.5f}")
        console.print(f"  {best['train_command']}", highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'tune.json'}")
