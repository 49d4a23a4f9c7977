"""``rankmixer search``: an architecture search over a declarative space as a tuning study.

A trial draws an architecture (rankmixer.search.space), trains the experiment with it as its
``searched`` model once per seed and scores it on the validation split; trials live in an Optuna
study (SQLite in the output folder by default, or any storage several processes share), so a
killed search continues where it stopped and `optuna-dashboard` shows it. A trial that fails
(out of memory, a diverged run, an architecture the data cannot feed) is recorded as failed with
its error and the search goes on, unless :data:`MAX_FAILED_IN_A_ROW` fail in a row.

Strategies: ``random`` (Optuna's random sampler) and ``tpe`` (its tree-structured Parzen
estimator, define-by-run over the conditional space), at the same trial budget.

``workers`` > 1 runs the trials in that many processes working on the one study (Optuna's own
way to parallelise: every process asks the shared storage for its next trial; no scheduler of
ours), each training with ``cores // workers`` threads unless the overrides set
``train.threads``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rankmixer.core.files import write_json
from rankmixer.search.report import search_report
from rankmixer.search.space import ArchitectureSpace, load_architecture_space
from rankmixer.tune import SamplerConfig, run_tune

__all__ = ["MAX_FAILED_IN_A_ROW", "SEARCH_REPORT", "STRATEGIES", "run_search"]

STRATEGIES = ("random", "tpe")
SEARCH_REPORT = "search.json"
MAX_FAILED_IN_A_ROW = 10


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
) -> dict:
    """Run the study until it holds ``budget`` complete trials; write and return ``search.json``.
    ``seed`` seeds the strategy's sampler (default: the space's); ``study`` defaults to the
    strategy's name; ``workers`` processes share the study."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    sampler = SamplerConfig(name=strategy, seed=space.sampler.seed if seed is None else seed)  # type: ignore[arg-type]
    space = dataclasses.replace(space, sampler=sampler)
    out_dir = Path(out_dir)
    overrides = list(overrides or [])
    if workers > 1:
        threads = [] if any(o.startswith("train.threads=") for o in overrides) \
            else [f"train.threads={max(1, (os.cpu_count() or 1) // workers)}"]
        log(f"{workers} processes on one study, each trial with {threads[0] if threads else 'the given threads'}")
        # spawn, not fork: torch's thread pools do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_tune, config, space, budget, out_dir, overrides + threads, storage,
                                   study or strategy, print, heartbeat_s, True, MAX_FAILED_IN_A_ROW)
                       for _ in range(workers)]
            for fut in as_completed(futures):
                fut.result()  # a worker's error (TuneError ...) ends the search here
        log("the workers are done")
    tune = run_tune(config, space, budget, out_dir, overrides, storage, study or strategy, log, heartbeat_s,
                    catch_errors=True, max_failures_in_a_row=MAX_FAILED_IN_A_ROW)
    report = search_report(tune, out_dir, strategy)
    write_json(out_dir / SEARCH_REPORT, report, [space.file], "search report")
    return report
