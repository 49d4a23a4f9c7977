"""``rankmixer search``: an architecture search over a declarative space as a tuning study.

A trial draws an architecture (rankmixer.search.space), trains the experiment with it as its
``searched`` model once per seed and scores it on the validation split; trials live in an Optuna
study (SQLite in the output folder by default, or any storage several processes share), so a
killed search continues where it stopped and `optuna-dashboard` shows it. A trial that fails
(out of memory, a diverged run, an architecture the data cannot feed) is recorded as failed with
its error and the search goes on, unless :data:`MAX_FAILED_IN_A_ROW` fail in a row.

Strategies: ``random`` (Optuna's random sampler) and ``tpe`` (its tree-structured Parzen
estimator, define-by-run over the conditional space), at the same trial budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
) -> dict:
    """Run the study until it holds ``budget`` complete trials; write and return ``search.json``.
    ``seed`` seeds the strategy's sampler (default: the space's); ``study`` defaults to the
    strategy's name."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    sampler = SamplerConfig(name=strategy, seed=space.sampler.seed if seed is None else seed)  # type: ignore[arg-type]
    space = dataclasses.replace(space, sampler=sampler)
    out_dir = Path(out_dir)
    tune = run_tune(config, space, budget, out_dir, overrides, storage, study or strategy, log, heartbeat_s,
                    catch_errors=True, max_failures_in_a_row=MAX_FAILED_IN_A_ROW)
    report = search_report(tune, out_dir, strategy)
    write_json(out_dir / SEARCH_REPORT, report, [space.file], "search report")
    return report
