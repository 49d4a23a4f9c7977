"""The architecture search command: ``rankmixer search``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rankmixer.cli.common import console, user_errors

__all__ = ["search"]


def _found(what: str, model: dict, report: Path) -> None:
    """A one-shot search's result: its architecture, the command that retrains it, its report."""
    console.print(f"{what}: {model['architecture']}", markup=False, soft_wrap=True)
    console.print(f"  {model['train_command']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {report}")


def search(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment whose data and training recipe every trial "
                                "uses: a packaged name (movielens_dcnv2) or a YAML file; the search draws its model."),
    space: Path = typer.Option(Path("default"), "--space", help="Architecture space: a YAML file or a packaged space "
                               "(docs/search.md)."),
    strategy: str = typer.Option("tpe", help="random (random search), tpe (Optuna's TPE), automl (a predictor of the "
                                 "finished trials and a REINFORCE policy against it), rankitect-sampling (Rankitect's "
                                 "sampling-based search: a REINFORCE controller whose every draw is trained as a "
                                 "trial), distdnas (the space's supernet searched on each day's data, weights "
                                 "aggregated) or sigeo (the supernet "
                                 "warmed up on a share of the data, subnets ranked by a proxy) or rankitect (a "
                                 "REINFORCE controller over the supernet's paths, rewards against a co-trained "
                                 "baseline); docs/search.md."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="random, tpe, automl, rankitect-sampling: "
                                         "complete trials the study should hold in total (a study that has some "
                                         "already runs only the rest)."),
    startup_trials: int = typer.Option(20, min=2, help="automl: random trials before the predictor proposes."),
    round_size: int = typer.Option(10, min=1, help="automl: trials proposed per predictor fit."),
    flops_target: Optional[float] = typer.Option(None, min=0.0, help="automl, rankitect-sampling: FLOPs per "
                                                 "sample above which the policy's reward is penalized (default: no "
                                                 "budget)."),
    labels: str = typer.Option("value", help="automl: what the predictor learns from each trial: 'value' (its "
                               "value, the metric the study maximizes) or 'extrapolated' (its validation curve "
                               "extrapolated to --horizon-steps)."),
    horizon_steps: Optional[int] = typer.Option(None, min=1, help="automl, --labels extrapolated: steps each trial's "
                                                "validation curve is extrapolated to (default: a full run of the "
                                                "experiment)."),
    explore: float = typer.Option(0.0, min=0.0, help="automl: the policy scores the predictor's mean plus this "
                                  "many times its ensemble's spread (an upper confidence bound; 0: the mean)."),
    keep: int = typer.Option(1, min=1, help="distdnas: candidates kept per choice block."),
    epochs_per_day: int = typer.Option(1, min=1, help="distdnas: passes over each day's rows; rankitect: passes over "
                                       "the training split."),
    cost_weight: Optional[float] = typer.Option(None, min=0.0, help="distdnas: lambda of the expected-FLOPs loss "
                                                "(default: the space's supernet.cost_weight); rankitect: weight of "
                                                "the FLOPs share in the reward (default 0)."),
    warmup: float = typer.Option(0.01, min=0.0, max=1.0, help="sigeo: share of the training rows the supernet "
                                 "warms up on (0: none)."),
    subnets: int = typer.Option(32, min=1, help="sigeo: paths of the supernet scored."),
    proxy_batches: int = typer.Option(8, min=2, help="sigeo: training batches the proxies are computed on."),
    samples: int = typer.Option(8, min=2, help="rankitect: paths scored per controller update; "
                                "rankitect-sampling: complete trials per controller update."),
    update_every: int = typer.Option(5, min=1, help="rankitect: training steps between controller updates."),
    controller_lr: float = typer.Option(0.5, min=0.0, help="rankitect, rankitect-sampling: the "
                                          "controller's step size."),
    penalty_unit: str = typer.Option("metric", help="rankitect-sampling: the unit of the FLOPs penalty, one "
                                     "per doubling above --flops-target: metric (one unit of the metric) or spread "
                                     "(one standard deviation of the metric within the controller's batch)."),
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
    keep_checkpoints: bool = typer.Option(False, help="random, tpe, automl, rankitect-sampling: keep "
                                          "finished trials' checkpoints/ (by default a finished trial keeps its "
                                          "metrics and best weights only)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every trial (not model.*)."),
) -> None:
    """Search ranking architectures on the validation split: each trial trains a drawn architecture;
    writes OUT/search.json (every trial with its FLOPs and parameters, the Pareto front, the best).
    distdnas trains the space's supernet once per day and writes OUT/distdnas.json."""
    from rankmixer.search import run_search
    from rankmixer.search.report import markdown_table
    from rankmixer.tune import MissingExtra, TuneError, import_optuna

    out = out or Path(f"runs/search-{strategy}")
    if strategy == "distdnas":
        from rankmixer.search.distdnas import DISTDNAS_REPORT, run_distdnas, weights_table

        with user_errors():
            found = run_distdnas(config, space, out, list(overrides or []), keep=keep, epochs=epochs_per_day,
                                 cost_weight=cost_weight, workers=workers, log=console.print)
        for day in found["days"]:
            console.print(f"day {day['day']}: supernet valid auc {day['valid_auc']:.5f}, "
                          f"expected FLOPs/sample {day['expected_flops']:,.0f}")
        console.print(weights_table(found), markup=False, soft_wrap=True)
        _found("derived", found["derived"], out / DISTDNAS_REPORT)
        return
    if strategy == "rankitect":
        from rankmixer.search.rankitect import RANKITECT_REPORT, run_rankitect

        with user_errors():
            found = run_rankitect(config, space, out, list(overrides or []), epochs=epochs_per_day, samples=samples,
                                  update_every=update_every, controller_lr=controller_lr, cost_weight=cost_weight or 0.0,
                                  log=console.print)
        console.print(f"valid NE: chosen path {found['valid_ne']['path']:.5f}, baseline {found['valid_ne']['baseline']:.5f}")
        _found("chosen", found["best"], out / RANKITECT_REPORT)
        return
    if strategy == "sigeo":
        from rankmixer.search.sigeo import SIGEO_REPORT, run_sigeo

        with user_errors():
            found = run_sigeo(config, space, out, list(overrides or []), warmup=warmup, subnets=subnets,
                              batches=proxy_batches, seed=seed or 0, log=console.print)
        console.print("| rank | sigeo | zico | fisher_rao | -loss | architecture |\n|---|---|---|---|---|---|",
                      markup=False)
        for i, p in enumerate(found["paths"][:10], start=1):
            console.print(f"| {i} | {p['sigeo']:.3f} | {p['zico']:.3f} | {p['fisher_rao']:.3f} | {p['neg_loss']:.4f} "
                          f"| {p['architecture']} |", markup=False, soft_wrap=True)
        _found("best", found["best"], out / SIGEO_REPORT)
        return
    if budget is None:
        raise typer.BadParameter("random, tpe, automl and rankitect-sampling need --budget (the number of "
                                 "complete trials)", param_hint="--budget")
    options = None
    if strategy == "automl":
        options = {"startup_trials": startup_trials, "round_size": round_size, "labels": labels,
                   "flops_target": flops_target, "horizon_steps": horizon_steps, "explore": explore}
    elif strategy == "rankitect-sampling":
        options = {"batch": samples, "controller_lr": controller_lr, "flops_target": flops_target,
                   "penalty_unit": penalty_unit}
    with user_errors(MissingExtra, TuneError):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        report = run_search(config, space, strategy, budget, out, list(overrides or []), storage, study, seed,
                            log=console.print, heartbeat_s=heartbeat, workers=workers, options=options,
                            keep_checkpoints=keep_checkpoints)
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    best = report["best"]
    if best:
        console.print(f"best: trial {best['number']}, valid {report['objective']['metric']} {best['value']:.5f}: "
                      f"{best['architecture']}", markup=False, soft_wrap=True)
        console.print(f"  {best['train_command']}", markup=False, highlight=False, soft_wrap=True)
    cv = (report.get("automl") or {}).get("predictor")
    if cv:
        console.print(f"predictor: Kendall tau {cv['kendall']:+.3f} on held-out trials ({cv['folds']}-fold, "
                      f"{cv['trials']} trials); FLOPs head {cv['flops_kendall']:+.3f}")
    sampling = report.get("sampling")
    if sampling:
        updates = sampling["updates"]
        entropy = f", entropy after the last {updates[-1]['entropy']:.3f}" if updates else ""
        console.print(f"controller: {len(updates)} update(s){entropy}")
    console.print(f"wrote {out / 'search.json'}")
