"""The architecture search command: ``rankmixer search``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rankmixer.cli.common import console, user_errors

__all__ = ["search"]


def search(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment whose data and training recipe every trial "
                                "uses: a packaged name (movielens_dcnv2) or a YAML file; the search draws its model."),
    space: Path = typer.Option(Path("default"), "--space", help="Architecture space: a YAML file or a packaged space "
                               "(docs/search.md)."),
    strategy: str = typer.Option("tpe", help="random (random search) or tpe (Optuna's TPE)."),
    budget: int = typer.Option(..., "--budget", min=1, help="Complete trials the study should hold in total (a "
                               "study that has some already runs only the rest)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Search folder: new, empty or one of ours (trials' run "
                                       "directories, search.json, tune.json, the default storage study.db). "
                                       "Default: runs/search-STRATEGY."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage shared by every process of the search: an RDB "
                                          "URL or a journal file path (default: sqlite:///OUT/study.db)."),
    study: Optional[str] = typer.Option(None, help="Study name inside the storage (default: the strategy)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the strategy's sampler (default: the space's)."),
    heartbeat: int = typer.Option(60, min=1, help="Seconds between a running trial's heartbeats (RDB storages)."),
    workers: int = typer.Option(1, min=1, help="Processes working on the study at once (each trial with "
                                "cores/workers threads unless train.threads is given)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every trial (not model.*)."),
) -> None:
    """Search ranking architectures on the validation split: each trial trains a drawn architecture;
    writes OUT/search.json (every trial with its FLOPs and parameters, the Pareto front, the best)."""
    from rankmixer.search import run_search
    from rankmixer.search.report import markdown_table
    from rankmixer.tune import MissingExtra, TuneError, import_optuna

    out = out or Path(f"runs/search-{strategy}")
    with user_errors(MissingExtra, TuneError):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        report = run_search(config, space, strategy, budget, out, list(overrides or []), storage, study, seed,
                            log=console.print, heartbeat_s=heartbeat, workers=workers)
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    best = report["best"]
    if best:
        console.print(f"best: trial {best['number']}, valid {report['objective']['metric']} {best['value']:.5f}: "
                      f"{best['architecture']}", markup=False, soft_wrap=True)
        console.print(f"  {best['train_command']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'search.json'}")
