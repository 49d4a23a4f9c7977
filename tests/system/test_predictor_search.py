"""The predictor and the searcher on a planted machine (a speed surface with a known optimum)."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest

from rankmixer.core.hardware import hardware_features
from rankmixer.core.rank_correlation import spearman
from rankmixer.system.measure import MeasureOptions
from rankmixer.system.planted import PlantedMachine
from rankmixer.system.predictor import SpeedPredictor, cross_validated_spearman, usable
from rankmixer.system.searcher import rank_candidates, search
from rankmixer.system.space import load_system_space, setting_key

pytest.importorskip("sklearn")
QUIET = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def planted():
    sp = load_system_space("cpu")
    machine = PlantedMachine(sp, seed=0, noise=0.03)
    history = machine.measure(sp, sp.draw(120, seed=0), origin="random", log=QUIET)
    return sp, machine, history


def test_predictor_ranks_held_out_settings_like_the_truth(planted):
    sp, machine, history = planted
    p = SpeedPredictor(sp, members=4, seed=0, iterations=80).fit(history)
    unseen = [s for s in sp.draw(200, seed=99) if setting_key(s) not in {r["key"] for r in history}]
    pred = p.predict(unseen, hardware_features())
    rho = spearman(pred.samples_per_s, [machine.true_speed(s) for s in unseen])
    rho_mem = spearman(pred.peak_mb, [machine.true_memory(s) for s in unseen])
    assert rho > 0.8 and rho_mem > 0.9
    # held-out cross-validation measures the same thing from the history alone
    cv = cross_validated_spearman(sp, history, folds=4, seed=0, members=2, iterations=50)
    assert cv["n"] == len(history) and cv["spearman_speed"] > 0.8


def test_failed_measurements_do_not_enter_the_fit(planted):
    sp, _, history = planted
    failed = [{**r, "status": "failed", "reason": "memory", "samples_per_s": 1e9} for r in history[:30]]
    assert len(usable(history + failed)) == len(history)
    a = SpeedPredictor(sp, members=3, seed=1, iterations=50).fit(history)
    b = SpeedPredictor(sp, members=3, seed=1, iterations=50).fit(history + failed)
    probe = sp.draw(20, seed=5)
    np.testing.assert_array_equal(a.predict(probe, hardware_features()).samples_per_s,
                                  b.predict(probe, hardware_features()).samples_per_s)


def test_uncertainty_is_larger_on_hardware_the_history_never_saw(planted):
    sp, _, history = planted
    p = SpeedPredictor(sp, members=5, seed=0, iterations=60).fit(history)
    probe = sp.draw(40, seed=7)
    here = hardware_features()
    other = {**here, "cpus": here["cpus"] * 32, **{k: 1 - v for k, v in here.items() if k.startswith("flag_")}}
    # trees cannot extrapolate: the point is that a different machine is not silently "known";
    # its predictions are not more certain than those for this machine
    assert p.predict(probe, other).log_sps_std.mean() >= 0.5 * p.predict(probe, here).log_sps_std.mean()
    assert p.fingerprints and sum(p.fingerprints.values()) == len(history)


def test_predictor_needs_enough_successes(planted):
    sp, _, history = planted
    with pytest.raises(ValueError, match="at least 8 successful"):
        SpeedPredictor(sp, members=2).fit(history[:5])
    with pytest.raises(ValueError, match="at least 2 members"):
        SpeedPredictor(sp, members=1)


def test_search_beats_random_at_equal_budget_and_nears_the_optimum(planted):
    sp, machine, history = planted
    fixed = {"model_size": "large"}
    _, best_speed = machine.best(fixed)
    grid = [machine.true_speed(s) for s in sp.grid(fixed)]
    picked, randoms = [], []
    for seed in range(3):
        found = search(sp, history, fixed, budget=5, rounds=1, seed=seed, log=QUIET, measure=machine.measure, members=3,
                       iterations=80)
        assert found.best is not None and found.best["setting"]["model_size"] == "large"
        assert all(m["key"] not in {r["key"] for r in history} for m in found.measured)  # untried only
        picked.append(machine.true_speed(found.best["setting"]))
        rng = random.Random(seed)
        randoms.append(max(machine.true_speed(s) for s in rng.sample(list(sp.grid(fixed)), 5)))
    # the pick is in the top 5% of the space and better than random search on average
    assert min(picked) >= np.quantile(grid, 0.95)
    assert statistics.fmean(picked) > statistics.fmean(randoms)
    assert max(picked) >= 0.85 * best_speed


def test_memory_limit_removes_candidates_and_runs(planted):
    sp, machine, history = planted
    fixed = {"model_size": "large"}
    limit = 2_000.0  # large (1,200 MB) + 0.25 MB per fp32 row: batches of 4,096 in fp32 do not fit
    p = SpeedPredictor(sp, members=3, seed=0, iterations=80).fit(history)
    ranked, excluded = rank_candidates(sp, p, fixed, {r["key"] for r in history}, limit)
    assert excluded > 0 and ranked
    over = [c for c in ranked[:20] if machine.true_memory(c.setting) > limit]
    assert len(over) <= 2  # the pessimistic bound keeps the top clear of the limit
    found = search(sp, history, fixed, budget=4, memory_limit_mb=limit, log=QUIET, measure=machine.measure,
                   members=3, iterations=80, options=MeasureOptions(memory_limit_mb=limit))
    assert found.excluded_by_memory == excluded
    assert found.best is not None and machine.true_memory(found.best["setting"]) <= limit
    assert all(m["status"] == "ok" or m["reason"].startswith("memory") for m in found.measured)


def test_search_arguments_are_checked(planted):
    sp, machine, history = planted
    with pytest.raises(ValueError, match="rounds"):
        search(sp, history, {"model_size": "large"}, budget=2, rounds=3, log=QUIET, measure=machine.measure)


def test_search_in_rounds_refits_on_what_it_measured(planted):
    sp, machine, history = planted
    found = search(sp, history, {"model_size": "medium"}, budget=6, rounds=3, log=QUIET, measure=machine.measure,
                   members=2, iterations=40)
    assert len(found.measured) == 6 and len({m["key"] for m in found.measured}) == 6
