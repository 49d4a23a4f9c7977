"""Training a benchmark's own runs: the unfinished ones, in this process or in worker processes.

A run is finished when its ``metrics.json`` exists, so a benchmark killed half-way trains only
what is missing when run again (each unfinished run resumes through
:func:`rankmixer.experiment.train_to_end`). Used by the studies that build their run configs
themselves (``bench pareto``, ``bench exfm``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from rankmixer import experiment
from rankmixer.core.processes import run_in_processes
from rankmixer.core.rundir import METRICS_FILE

__all__ = ["train_timed", "train_unfinished"]


def train_timed(cfg) -> float:
    """Finish one run; the seconds it took."""
    t0 = time.time()
    experiment.train_to_end(cfg)
    return time.time() - t0


def train_unfinished(jobs: list[tuple[str, object]], processes: int, log: Callable[[str], None]) -> None:
    """Train the unfinished ``(label, config)`` runs: one after another in this process, or
    ``processes`` at a time in workers, each with ``cores // processes`` threads unless its
    config sets ``train.threads`` (more threads than cores stall every run). Each data set is
    prepared once, before any run starts."""
    todo = [(label, cfg) for label, cfg in jobs if not (cfg.resolved_run_dir() / METRICS_FILE).is_file()]
    log(f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; training {len(todo)}")
    if not todo:
        return
    for data in {str(cfg.data.prepared_path()): cfg.data for _, cfg in todo}.values():
        experiment.prepare_data(data, log=lambda *_: None)
    if processes <= 1:
        for i, (label, cfg) in enumerate(todo, start=1):
            log(f"[{i}/{len(todo)}] {label}: finished in {train_timed(cfg):.0f}s")
        return
    threads = max(1, (os.cpu_count() or 1) // processes)
    todo = [(label, cfg if cfg.train.threads else cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"threads": threads})})) for label, cfg in todo]
    run_in_processes([(label, train_timed, (cfg,)) for label, cfg in todo], processes, log)
