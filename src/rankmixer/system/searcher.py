"""The CubicML searcher: rank the untried settings by the predictor, run the best few for real.

Candidates are every setting of the space with the fixed knobs pinned (the model size at least:
the searcher speeds up the user's model, it does not trade it for a smaller one), minus those
already measured on this machine. A memory limit removes the candidates whose pessimistic
predicted peak (two member spreads above the prediction) passes it. The rest are ordered by
predicted samples/s; each round measures the top ones, adds them to the history and refits, as
the paper's loop does with its job history. The answer is the best *measured* setting, never a
predicted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rankmixer.core.hardware import hardware_features, hardware_fingerprint
from rankmixer.system.measure import MeasureOptions, measure_many
from rankmixer.system.predictor import SpeedPredictor, fastest, usable
from rankmixer.system.space import Setting, SystemSpace, setting_key

__all__ = ["Candidate", "SearchResult", "rank_candidates", "search"]


@dataclass(frozen=True)
class Candidate:
    setting: Setting
    predicted_samples_per_s: float
    log_sps_std: float
    predicted_peak_mb: float
    peak_mb_upper: float


@dataclass
class SearchResult:
    best: dict | None  # the best successful measured record of the search (None: all failed)
    measured: list[dict] = field(default_factory=list)  # every record the search made, in order
    ranked: list[Candidate] = field(default_factory=list)  # the first round's top candidates
    excluded_by_memory: int = 0
    candidates: int = 0
    history_rows_here: int = 0


def rank_candidates(space: SystemSpace, predictor: SpeedPredictor, fixed: Setting, tried: set[str],
                    memory_limit_mb: float | None = None, hardware: dict | None = None) -> tuple[list[Candidate], int]:
    """Untried settings (``fixed`` knobs pinned) under the memory limit, fastest predicted
    first, and how many the limit removed."""
    hardware = hardware or hardware_features()
    pool = [s for s in space.grid(fixed) if setting_key(s) not in tried]
    if not pool:
        return [], 0
    pred = predictor.predict(pool, hardware)
    upper = pred.memory_upper()
    keep = np.ones(len(pool), bool) if memory_limit_mb is None else upper <= memory_limit_mb
    order = [i for i in np.argsort(-pred.samples_per_s, kind="stable") if keep[i]]
    ranked = [Candidate(pool[i], float(pred.samples_per_s[i]), float(pred.log_sps_std[i]), float(pred.peak_mb[i]),
                        float(upper[i])) for i in order]
    return ranked, int((~keep).sum())


def search(space: SystemSpace, history: list[dict], fixed: Setting, budget: int, rounds: int = 1,
           memory_limit_mb: float | None = None, options: MeasureOptions | None = None, seed: int = 0,
           on_record: Callable[[dict], None] | None = None, log: Callable[[str], None] = print,
           measure: Callable[..., list[dict]] = measure_many, members: int = 16,
           iterations: int = 150) -> SearchResult:
    """Spend ``budget`` real runs over ``rounds`` predict-measure-refit rounds. ``measure`` runs
    settings (:func:`~rankmixer.system.measure.measure_many`; a planted machine in tests)."""
    if budget < 1 or rounds < 1 or rounds > budget:
        raise ValueError(f"budget ({budget}) and rounds ({rounds}) must satisfy 1 <= rounds <= budget")
    fingerprint = hardware_fingerprint()
    options = options or MeasureOptions(memory_limit_mb=memory_limit_mb)
    history = list(history)
    result = SearchResult(best=None)
    result.history_rows_here = sum(1 for r in usable(history) if r["fingerprint"] == fingerprint)
    if result.history_rows_here == 0:
        log("warning: the history has no measurement from this machine (hardware fingerprint "
            f"{fingerprint}); the predictor extrapolates from other hardware, so its ranking is a guess")
    left = budget
    for r in range(rounds):
        take = left // (rounds - r)
        predictor = SpeedPredictor(space, members, seed + r, iterations).fit(history)
        tried = {h["key"] for h in history if h["fingerprint"] == fingerprint}
        ranked, excluded = rank_candidates(space, predictor, fixed, tried, memory_limit_mb)
        if r == 0:
            result.ranked, result.excluded_by_memory, result.candidates = ranked[:max(take, 10)], excluded, len(ranked) + excluded
        if not ranked:
            log("no untried setting is left under the constraints")
            break
        log(f"round {r + 1}/{rounds}: {len(ranked)} candidates ({excluded} over the memory limit); measuring the top {take}")
        recs = measure(space, [c.setting for c in ranked[:take]], options, origin="search", on_record=on_record, log=log)
        history += recs
        result.measured += recs
        left -= take
    result.best = fastest(result.measured)
    return result
