"""Rankitect's sampling-based search: the replayed controller against a REINFORCE step computed
by hand in numpy, the reward's FLOPs penalty by hand, a planted preference the controller must
find on an Optuna study with a known objective (and random search must not), a resumed study
that draws what an uninterrupted one draws, and a search end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from rankmixer.search.space import parse_architecture_space
from tests.factories import TINY_SEARCH_SPACE, tiny_config_file

optuna = pytest.importorskip("optuna", reason="the rankitect-sampling strategy needs the 'tune' extra (optuna)")

from rankmixer.search.policy import decisions, taken_options  # noqa: E402
from rankmixer.search.run import run_search  # noqa: E402
from rankmixer.search.sampling import SamplingOptions, SamplingSampler, batch_rewards, replay  # noqa: E402

SPACE = parse_architecture_space(TINY_SEARCH_SPACE, "space", None)


def planted_value(params: dict, rng: np.random.Generator) -> float:
    """A known objective: a first block of type fm scores 1, anything else 0, plus noise."""
    return float(params.get("b0.type") == "fm") + rng.normal(0, 0.1)


def run_study(sampler, trials: int, storage=None, name: str = "s", seed: int = 0):
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=name,
                                load_if_exists=True)
    rng = np.random.default_rng(seed + len(study.trials))

    def objective(trial):
        SPACE.suggest(trial)
        return planted_value(trial.params, rng)

    study.optimize(objective, n_trials=trials)
    return study


def test_taken_options_read_back_the_policys_draws():
    table = decisions(SPACE)
    study = run_study(SamplingSampler(SamplingOptions(SPACE, "out", seed=3)), 6)
    for t in study.trials:
        taken = taken_options(table, t.params)
        assert taken is not None
        for d, k in zip(table, taken):
            assert (k is None) == (d.name not in t.params)
            assert k is None or d.options[k] == t.params[d.name]
    off_grid = dict(study.trials[0].params, **{"b0.type": "no-such-block"})
    assert taken_options(table, off_grid) is None


def test_replay_is_reinforce_on_standardized_rewards_in_trial_order():
    """Two updates of batch 4 from nine trials, recomputed with numpy from the uniform start; a
    failed trial and one with a NaN value are left out, and the order is the trials' numbers."""
    options = SamplingOptions(SPACE, "out", seed=0, batch=4, controller_lr=0.3)
    table = decisions(SPACE)
    drawn = run_study(optuna.samplers.RandomSampler(seed=5), 0)  # an empty study to add trials to
    params = [t.params for t in run_study(SamplingSampler(SamplingOptions(SPACE, "out", seed=9)), 9).trials]
    values = [0.70, 0.72, float("nan"), 0.65, 0.71, 0.69, 0.74, 0.60, 0.66]
    for p, v in zip(params, values):
        dists = {k: optuna.distributions.CategoricalDistribution(table[[d.name for d in table].index(k)].options)
                 for k in p}
        drawn.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=None if math.isnan(v) else v,
                                                  state=optuna.trial.TrialState.FAIL if math.isnan(v)
                                                  else optuna.trial.TrialState.COMPLETE))
    controller, updates = replay(options, drawn)

    widest = max(len(d.options) for d in table)
    theta = np.zeros((len(table), widest))
    kept = [(n, p, v) for n, (p, v) in enumerate(zip(params, values)) if not math.isnan(v)]
    assert [u["trials"] for u in updates] == [[n for n, *_ in kept[:4]], [n for n, *_ in kept[4:]]]
    for batch in (kept[:4], kept[4:]):
        r = np.array([v for *_, v in batch])
        z = (r - r.mean()) / r.std()
        grad = np.zeros_like(theta)
        for (_, p, _), zj in zip(batch, z):
            for i, d in enumerate(table):
                if d.name not in p:
                    continue
                logits = np.full(widest, -np.inf)
                logits[:len(d.options)] = theta[i, :len(d.options)]
                probs = np.exp(logits - logits.max())
                probs /= probs.sum()
                grad[i] -= zj * probs
                grad[i, d.options.index(p[d.name])] += zj
        theta += 0.3 * grad
    for i, d in enumerate(table):
        np.testing.assert_allclose(controller.theta[i, :len(d.options)].numpy(), theta[i, :len(d.options)],
                                   rtol=0, atol=1e-12)
    assert updates[0]["rewards"] == pytest.approx([v for *_, v in kept[:4]])


def test_the_reward_is_the_metric_less_the_flops_penalty():
    metrics = np.array([0.70, 0.70, 0.72, 0.66])
    over = np.array([2.0, 0.0, 0.0, 1.0])  # doublings above the target: log2(4), under it, under it, log2(2)
    assert batch_rewards(metrics, over, 1.0, "metric") == pytest.approx([0.70 - 2.0, 0.70, 0.72, 0.66 - 1.0])
    assert batch_rewards(metrics, over, 0.5, "metric") == pytest.approx([0.70 - 1.0, 0.70, 0.72, 0.66 - 0.5])
    # in the metric's spread: mean 0.695, population sd 0.0217945 (by hand)
    z = [0.005 / 0.0217945, 0.005 / 0.0217945, 0.025 / 0.0217945, -0.035 / 0.0217945]
    assert batch_rewards(metrics, over, 1.0, "spread") == pytest.approx(np.subtract(z, over), abs=1e-5)
    assert batch_rewards(np.full(3, 0.7), np.zeros(3), 1.0, "spread") == pytest.approx([0.0, 0.0, 0.0])  # no spread


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("unit", ["metric", "spread"])
def test_replay_takes_the_penalty_in_its_unit(tmp_path, unit, direction):
    """One update of four trials under a FLOPs target of 1e6, FLOPs read from each trial's run;
    the rewards recomputed by hand (a metric to minimize is negated)."""
    table = decisions(SPACE)
    params = [t.params for t in run_study(SamplingSampler(SamplingOptions(SPACE, "out", seed=2)), 4).trials]
    values, flops = [0.70, 0.71, 0.69, 0.72], [5e5, 2e6, 1e6, 8e6]
    study = optuna.create_study(direction=direction)
    for n, (p, v, f) in enumerate(zip(params, values, flops)):
        (tmp_path / f"t{n}").mkdir()
        (tmp_path / f"t{n}" / "metrics.json").write_text(json.dumps({"flops_per_sample": f}))
        dists = {k: optuna.distributions.CategoricalDistribution(table[[d.name for d in table].index(k)].options)
                 for k in p}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=v,
                                                  user_attrs={"run_dirs": [f"t{n}"]}))
    options = SamplingOptions(SPACE, str(tmp_path), seed=0, batch=4, flops_target=1e6, penalty_unit=unit)
    _, (update,) = replay(options, study)
    over = [0.0, 1.0, 0.0, 3.0]  # log2(FLOPs / 1e6), floored at 0
    metric = np.array(values) if direction == "maximize" else -np.array(values)
    if unit == "spread":
        metric = (metric - metric.mean()) / math.sqrt((0.005**2 + 0.005**2 + 0.015**2 + 0.015**2) / 4)
    assert update["rewards"] == pytest.approx(list(metric - over))


def test_a_penalty_in_the_metric_unit_swamps_auc_and_one_in_its_spread_does_not():
    """A batch whose most accurate trials are over the FLOPs target: with the penalty in AUC units
    their advantage is the cost alone, in units of the spread the accuracy still counts."""
    metrics = np.array([0.690, 0.692, 0.700, 0.702])
    over = np.array([0.0, 0.0, 0.3, 0.3])
    raw = batch_rewards(metrics, over, 1.0, "metric")
    spread = batch_rewards(metrics, over, 1.0, "spread")
    assert raw.argmax() in (0, 1)  # 0.3 doublings (23% over) outweigh +0.01 AUC
    assert spread.argmax() == 3


def fm_share(study, first: int, last: int) -> float:
    trials = sorted(study.trials, key=lambda t: t.number)[first:last]
    return sum(t.params.get("b0.type") == "fm" for t in trials) / len(trials)


def test_the_controller_finds_a_planted_preference_random_search_does_not():
    trials = 64
    options = SamplingOptions(SPACE, "out", seed=1, batch=8, controller_lr=0.5)
    searched = run_study(SamplingSampler(options), trials)
    random = run_study(optuna.samplers.RandomSampler(seed=1), trials)
    # one block type of four: a quarter of uniform draws; the controller must move far above it
    assert fm_share(searched, 40, 64) >= 0.6 and fm_share(random, 40, 64) <= 0.45
    controller, updates = replay(options, searched)
    assert len(updates) == trials // 8
    b0 = [d.name for d in decisions(SPACE)].index("b0.type")
    fm = decisions(SPACE)[b0].options.index("fm")
    assert float(controller.probs()[b0, fm]) > 0.6
    assert updates[-1]["entropy"] < updates[0]["entropy"]


def test_a_resumed_study_draws_what_an_uninterrupted_one_draws(tmp_path):
    options = SamplingOptions(SPACE, "out", seed=4, batch=4)
    whole = run_study(SamplingSampler(options), 12, storage=f"sqlite:///{tmp_path / 'a.db'}")
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    run_study(SamplingSampler(options), 7, storage=storage)
    resumed = run_study(SamplingSampler(options), 5, storage=storage)  # a new sampler: nothing kept in memory
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert len({str(sorted(t.params.items())) for t in whole.trials}) == 12  # no architecture twice


def test_options_are_checked():
    with pytest.raises(ValueError, match="batch"):
        SamplingOptions(SPACE, "out", batch=1)
    with pytest.raises(ValueError, match="controller_lr"):
        SamplingOptions(SPACE, "out", controller_lr=0.0)
    with pytest.raises(ValueError, match="flops_target"):
        SamplingOptions(SPACE, "out", flops_target=-1.0)


def test_a_sampling_search_end_to_end(tmp_path):
    tiny = tiny_config_file(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SEARCH_SPACE))
    out = tmp_path / "out"
    report = run_search(tiny, space, "rankitect-sampling", 5, out, seed=2, log=lambda *_: None,
                        options={"batch": 2, "flops_target": 1e3})
    assert report["strategy"] == "rankitect-sampling" and report["states"]["COMPLETE"] == 5
    sampling = report["sampling"]
    assert sampling["options"]["batch"] == 2 and sampling["options"]["flops_target"] == 1e3
    complete = sorted(t["number"] for t in report["trials"] if t["state"] == "COMPLETE")
    # every complete trial measured its FLOPs, so each pair of them made one update, in order
    assert [u["trials"] for u in sampling["updates"]] == [complete[0:2], complete[2:4]]
    by_number = {t["number"]: t for t in report["trials"]}
    for u in sampling["updates"]:
        for n, r in zip(u["trials"], u["rewards"]):
            t = by_number[n]
            assert r == pytest.approx(t["value"] - max(0.0, math.log2(t["flops_per_sample"] / 1e3)))
    assert set(sampling["mode"]) == {d.name for d in decisions(SPACE)}
    with pytest.raises(ValueError, match="strategy options"):
        run_search(tiny, space, "random", 1, tmp_path / "r", options={"batch": 2}, log=lambda *_: None)


def test_the_search_budget_report_carries_the_controller(tmp_path):
    """bench search-budget reads a sampling search's updates: mean reward and entropy per update."""
    from rankmixer.bench.search_budget import run_search_budget

    tiny = tiny_config_file(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SEARCH_SPACE))
    out = tmp_path / "searches" / "rankitect-sampling-s1"
    report = run_search(tiny, space, "rankitect-sampling", 4, out, seed=1, log=lambda *_: None, options={"batch": 2})
    got = run_search_budget(tmp_path / "searches", tmp_path / "report", checkpoints=(2, 4), folds=3,
                            log=lambda *_: None)
    (row,) = got["searches"]
    updates = report["sampling"]["updates"]
    assert len(row["controller"]) == len(updates) == 2
    for c, u in zip(row["controller"], updates):
        assert c["mean_reward"] == pytest.approx(sum(u["rewards"]) / len(u["rewards"]))
        assert c["entropy"] == u["entropy"]
