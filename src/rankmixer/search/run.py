"""``rankmixer search``: an architecture search over a declarative space as a tuning study.

A trial draws an architecture (rankmixer.search.space), trains the experiment with it as its
``searched`` model once per seed and scores it on the validation split; trials live in an Optuna
study (SQLite in the output folder by default, or any storage several processes share), so a
killed search continues where it stopped and `optuna-dashboard` shows it. A trial that fails
(out of memory, a diverged run, an architecture the data cannot feed) is recorded as failed with
its error and the search goes on, unless :data:`MAX_FAILED_IN_A_ROW` fail in a row.

Strategies: ``random`` (Optuna's random sampler), ``tpe`` (its tree-structured Parzen
estimator, define-by-run over the conditional space), ``automl`` (a predictor of the finished
trials and a REINFORCE policy against it under a FLOPs budget, rankmixer.search.automl) and
``rankitect-sampling`` (Rankitect's sampling-based search: a REINFORCE controller moved by the
trials' own validation results, rankmixer.search.sampling), at the same trial budget. An automl
search's report adds its labels (the trials' learning curves extrapolated to the full run) and
its predictor's cross-validated ranking quality; a rankitect-sampling search's report adds the
controller's updates and its most likely architecture.

``workers`` > 1 runs the trials in that many processes working on the one study (Optuna's own
way to parallelise: every process asks the shared storage for its next trial; no scheduler of
ours), each training with ``cores // workers`` threads unless the config sets
``train.threads``. The data are prepared and the study created once before they start.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rankmixer import experiment
from rankmixer.config import config_path, load_config
from rankmixer.core.files import write_json
from rankmixer.data.loader import ParquetBatches
from rankmixer.search.report import search_report
from rankmixer.search.space import ArchitectureSpace, load_architecture_space
from rankmixer.tune import SamplerConfig, run_tune
from rankmixer.tune.study import storage_url

__all__ = ["MAX_FAILED_IN_A_ROW", "SEARCH_REPORT", "STRATEGIES", "run_search"]

STRATEGIES = ("random", "tpe", "automl", "rankitect-sampling")
POLICY_STRATEGIES = ("automl", "rankitect-sampling")  # strategies with their own sampler and options
SEARCH_REPORT = "search.json"
MAX_FAILED_IN_A_ROW = 10


def _worker(threads: int, args: tuple, heartbeat_s: int, sampler_factory, keep_checkpoints: bool) -> None:
    """One worker process: its trials at ``threads`` torch threads (the trainer sets its own only
    when ``train.threads`` is given), the study's other arguments unchanged."""
    import torch

    torch.set_num_threads(threads)
    run_tune(*args, log=print, heartbeat_s=heartbeat_s, catch_errors=True, max_failures_in_a_row=MAX_FAILED_IN_A_ROW,
             sampler_factory=sampler_factory, keep_checkpoints=keep_checkpoints)


def full_run_steps(config: str | Path, overrides: list[str], log: Callable[[str], None]) -> int:
    """The optimizer steps a from-scratch run of the experiment takes at its batch size (its
    epochs over the training split, ``train.max_steps`` left out): the horizon an automl search
    extrapolates its short trials to."""
    cfg = load_config(config_path(config), overrides)
    fm = experiment.prepare_data(cfg.data, log=log)
    return ParquetBatches(fm, "train", cfg.train.batch_size).batches_per_epoch() * cfg.train.epochs


def run_search(
    config: str | Path,
    space: str | Path | ArchitectureSpace,
    strategy: str,
    budget: int,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int | None = None,
    log: Callable[[str], None] = print,
    heartbeat_s: int = 60,
    workers: int = 1,
    options: dict | None = None,
    keep_checkpoints: bool = False,
) -> dict:
    """Run the study until it holds ``budget`` complete trials; write and return ``search.json``.
    ``seed`` seeds the strategy's sampler (default: the space's); ``study`` defaults to the
    strategy's name; ``workers`` processes share the study. ``options``: the automl or
    rankitect-sampling strategy's settings (rankmixer.search.automl.AutoMLOptions: startup_trials,
    round_size, labels, flops_target, horizon_steps, explore, default horizon :func:`full_run_steps`;
    rankmixer.search.sampling.SamplingOptions: batch, controller_lr, flops_target, penalty_unit).
    ``keep_checkpoints``: keep finished trials' checkpoints (by default only their metrics and
    best weights stay)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    seed = space.sampler.seed if seed is None else seed
    out_dir = Path(out_dir)
    overrides = list(overrides or [])
    factory = None
    if strategy in POLICY_STRATEGIES:
        # draws outside the strategy's own plan (start-up trials, a retry) are random
        space = dataclasses.replace(space, sampler=SamplerConfig(name="random", seed=seed))
        settings = dict(options or {})
        if strategy == "automl":
            from rankmixer.search.automl import AutoMLOptions

            if settings.get("horizon_steps") is None and settings.get("labels") == "extrapolated":
                settings["horizon_steps"] = full_run_steps(config, overrides, log)
            factory = AutoMLOptions(space, str(out_dir), seed, **settings)
        else:
            from rankmixer.search.sampling import SamplingOptions

            factory = SamplingOptions(space, str(out_dir), seed, **settings)
    elif options:
        raise ValueError(f"strategy options given to the {strategy} strategy")
    else:
        space = dataclasses.replace(space, sampler=SamplerConfig(name=strategy, seed=seed))  # type: ignore[arg-type]
    args = (config, space, budget, out_dir, overrides, storage, study or strategy)
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        log(f"{workers} processes on one study, each with {threads} torch thread(s) unless train.threads is set")
        experiment.prepare_data(load_config(config_path(config), overrides).data, log=log)  # once, not per worker
        run_tune(*args[:2], 0, *args[3:], log=log, heartbeat_s=heartbeat_s)  # the storage and study, once
        # spawn, not fork: torch's thread pools do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_worker, threads, args, heartbeat_s, factory, keep_checkpoints)
                                     for _ in range(workers)]):
                fut.result()  # a worker's error (TuneError ...) ends the search here
        log("the workers are done")
    tune = run_tune(*args, log=log, heartbeat_s=heartbeat_s, catch_errors=True,
                    max_failures_in_a_row=MAX_FAILED_IN_A_ROW, sampler_factory=factory, keep_checkpoints=keep_checkpoints)
    report = search_report(tune, out_dir, strategy)
    if strategy == "automl":
        from rankmixer.search.automl import automl_report

        report["automl"] = automl_report(factory, storage_url(out_dir, storage), study or strategy)
    elif strategy == "rankitect-sampling":
        from rankmixer.search.sampling import sampling_report

        report["sampling"] = sampling_report(factory, storage_url(out_dir, storage), study or strategy)
    write_json(out_dir / SEARCH_REPORT, report, [space.file], "search report")
    return report
