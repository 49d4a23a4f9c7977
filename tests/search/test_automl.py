"""The AutoML searcher: learning-curve extrapolation against a least-squares fit in float64, the
pairwise loss against a loop over pairs, the predictor on planted labels it must rank, the
policy's draws replayed by Optuna to the same architectures, a planted preference the policy
must find, the FLOPs budget obeyed, and a search end to end whose proposed trials are the ones
its sampler queued."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rankmixer.core.rank_correlation import kendall_tau
from rankmixer.search.curve import extrapolate, read_curve
from rankmixer.search.predictor import Encoder, Predictor, cross_validate, pairwise_loss
from rankmixer.search.space import load_architecture_space, parse_architecture_space
from tests.factories import TINY_SEARCH_SPACE, tiny_config_file

optuna = pytest.importorskip("optuna", reason="the automl strategy needs the 'tune' extra (optuna)")

from rankmixer.search.automl import AutoMLOptions, propose  # noqa: E402
from rankmixer.search.policy import PolicyTrial, decisions  # noqa: E402
from rankmixer.search.controller import Controller  # noqa: E402
from rankmixer.search.run import run_search  # noqa: E402

SPACE = TINY_SEARCH_SPACE


def test_extrapolation_is_the_log_fit_of_the_later_half():
    steps = [10, 20, 30, 40, 50, 60]
    rng = np.random.default_rng(0)
    values = [0.6 + 0.02 * math.log(s) + rng.normal(0, 0.002) for s in steps]
    # reference: ordinary least squares in float64 on the last three points, by the normal equations
    x = np.log(np.array(steps[3:], dtype=np.float64))
    a_mat = np.stack([np.ones_like(x), x], axis=1)
    coef = np.linalg.solve(a_mat.T @ a_mat, a_mat.T @ np.array(values[3:]))
    assert extrapolate(steps, values, 400) == pytest.approx(coef[0] + coef[1] * math.log(400), abs=1e-12)
    exact = [0.5 + 0.03 * math.log(s) for s in steps]
    assert extrapolate(steps, exact, 1000) == pytest.approx(0.5 + 0.03 * math.log(1000), abs=1e-12)
    assert extrapolate([5], [0.7], 100) == 0.7  # one point: nothing to extrapolate
    assert extrapolate(steps, values, 60) == values[-1]  # the horizon is already reached
    assert extrapolate([10, 20], [0.6, 0.62], 40) == pytest.approx(0.64)  # two points: their line in ln t
    with pytest.raises(ValueError, match="increasing"):
        extrapolate([10, 10], [0.6, 0.6], 40)


def test_read_curve_keeps_a_resumed_step_once_and_names_a_bad_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    recs = [{"split": "train", "step": 5, "loss": 0.5}, {"split": "valid", "step": 10, "auc": 0.6},
            {"split": "valid", "step": 20, "auc": 0.61}, {"split": "valid", "step": 20, "auc": 0.62},
            {"split": "valid", "step": 30, "logloss": 0.4}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert read_curve(tmp_path, "auc") == ([10, 20], [0.6, 0.62])
    log.write_text(log.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 6"):
        read_curve(tmp_path, "auc")


def test_pairwise_loss_matches_a_loop_over_pairs():
    s = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    terms = [math.log1p(math.exp(-(s[i].item() - s[j].item())))
             for i in range(4) for j in range(4) if y[i] > y[j]]
    assert pairwise_loss(s, y).item() == pytest.approx(sum(terms) / len(terms), abs=1e-12)
    assert pairwise_loss(s, torch.zeros(4, dtype=torch.float64)).item() == 0.0  # no ordered pair


def planted(n: int, seed: int):
    """Random vectors; the label is a planted linear score plus noise, FLOPs its own planted law."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype(np.float32)
    labels = x @ np.array([2.0, -1.0, 0.5, 0.0, 0.0, 1.5]) + rng.normal(0, 0.1, n)
    flops = np.exp(3.0 * x[:, 3] + 10.0)
    return x, labels, flops


# the paper's pairwise loss in the default suite; the regression ablation (the same checks, ~5 s) is slow
@pytest.mark.parametrize("loss", ["pairwise", pytest.param("mse", marks=pytest.mark.slow)])
def test_the_predictor_ranks_held_out_trials_of_a_planted_law(loss):
    x, labels, flops = planted(80, 0)
    cv = cross_validate(x, labels, flops, folds=4, loss=loss, members=3, epochs=200)
    # the planted score's own Kendall tau against the noisy labels bounds what a predictor reaches
    bound = kendall_tau(x @ np.array([2.0, -1.0, 0.5, 0.0, 0.0, 1.5]), labels)
    assert cv["kendall"] > 0.75 * bound and cv["flops_kendall"] > 0.8
    shuffled = cross_validate(x, np.random.default_rng(1).permutation(labels), None, folds=4, members=3, epochs=200)
    assert abs(shuffled["kendall"]) < 0.25 and "flops_kendall" not in shuffled


def test_the_ensemble_spread_is_the_members_disagreement():
    x, labels, flops = planted(30, 2)
    p = Predictor(members=4, epochs=50, seed=3).fit(x, labels, flops)
    out = p.predict(x[:5])
    each = torch.stack([net(torch.as_tensor(x[:5]))[0] for net in p.nets]).double()
    assert np.allclose(out["score"], each.mean(0).detach().numpy(), atol=1e-6)
    assert np.allclose(out["spread"], each.std(0, unbiased=False).detach().numpy(), atol=1e-6)


def test_policy_draws_are_architectures_optuna_replays():
    space = load_architecture_space("default")
    table = decisions(space)
    index = {d.name: i for i, d in enumerate(table)}
    controller = Controller([list(range(len(d.options))) for d in table], max(len(d.options) for d in table), 0.1,
                            torch.Generator().manual_seed(0))
    kinds = set()
    for _ in range(200):
        trial = PolicyTrial(controller, index, table)
        drawn = space.suggest(trial)
        assert space.values(trial.params) == drawn  # Optuna's FixedTrial replays the same model
        assert all(k is None or trial.params[table[i].name] == table[i].options[k] for i, k in enumerate(trial.taken))
        kinds |= {b["type"] for b in drawn["model"]["blocks"]}
    assert kinds == set(space.types)


def space_object(tmp_path: Path, **changes):
    return parse_architecture_space({**SPACE, **changes}, "space", None)


def random_architectures(space, n: int, seed: int):
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        out.append(trial.params)
        study.tell(trial, 0.0)
    return out


def test_the_policy_finds_what_the_predictor_prefers_within_the_budget(tmp_path):
    space = space_object(tmp_path)
    table = decisions(space)
    encoder = Encoder(table)
    params = random_architectures(space, 60, 0)
    x = encoder.encode_all(params)
    # planted: a first block of type fm scores high; each block costs 10x FLOPs if it is an mlp
    labels = np.array([1.0 if p.get("b0.type") == "fm" else 0.0 for p in params]) + np.random.default_rng(0).normal(
        0, 0.05, len(params))
    flops = np.array([1e4 * 10 ** sum(p.get(f"b{i}.type") == "mlp" for i in range(2)) for p in params])
    predictor = Predictor(members=3, epochs=200).fit(x, labels, flops)
    found = propose(space, table, predictor, x, count=5, seen=set(), steps=40, samples=16)
    assert len(found) == 5 and all(c["params"]["b0.type"] == "fm" for c in found)
    seen = {json.dumps(c["params"], sort_keys=True, default=str) for c in found}
    again = propose(space, table, predictor, x, count=5, seen=seen, steps=40, samples=16)
    assert not {json.dumps(c["params"], sort_keys=True, default=str) for c in again} & seen
    cheap = propose(space, table, predictor, x, count=5, seen=set(), steps=40, samples=16, flops_target=2e4,
                    flops_penalty=5.0)
    assert all("mlp" not in {c["params"].get("b0.type"), c["params"].get("b1.type")} for c in cheap)


class PlantedPredictor:
    """Scores 1 where the first block is an fm (else 0), an ensemble spread of 2 where it is a
    cross (else 0), the same FLOPs everywhere."""

    def __init__(self, encoder: Encoder, table) -> None:
        b0 = [d.name for d in table].index("b0.type")
        options = table[b0].options
        self.fm = encoder.offsets[b0] + options.index("fm")
        self.cross = encoder.offsets[b0] + options.index("cross")

    def predict(self, x):
        return {"score": x[:, self.fm].astype(float), "spread": 2.0 * x[:, self.cross],
                "flops": np.full(len(x), 1e4)}


def test_exploration_goes_where_the_members_disagree(tmp_path):
    space = space_object(tmp_path)
    table = decisions(space)
    encoder = Encoder(table)
    x = encoder.encode_all(random_architectures(space, 60, 0))
    predictor = PlantedPredictor(encoder, table)
    # by the mean alone the fm blocks win; with explore 1 a cross block's bound (a score of 0 plus
    # a spread of 2) beats an fm's (1 plus 0)
    mean = propose(space, table, predictor, x, count=5, seen=set(), steps=40, samples=16)
    bound = propose(space, table, predictor, x, count=5, seen=set(), steps=40, samples=16, explore=1.0)
    assert all(c["params"]["b0.type"] == "fm" for c in mean)
    assert all(c["params"]["b0.type"] == "cross" for c in bound)
    ref = x[:, predictor.fm]
    for c in bound:  # reward = (score + spread - mean(ref)) / sd(ref), no penalty without a target
        assert c["reward"] == pytest.approx((0.0 + 2.0 - ref.mean()) / ref.std())


def test_options_are_checked():
    space = space_object(None)
    with pytest.raises(ValueError, match="startup_trials"):
        AutoMLOptions(space, "out", startup_trials=1)
    with pytest.raises(ValueError, match="flops_target"):
        AutoMLOptions(space, "out", flops_target=0.0)
    with pytest.raises(ValueError, match="explore"):
        AutoMLOptions(space, "out", explore=-1.0)
    with pytest.raises(ValueError, match="labels must be one of extrapolated, value"):
        AutoMLOptions(space, "out", labels="curve")
    with pytest.raises(ValueError, match="horizon_steps \\(500\\).*with labels 'value' it would be unused"):
        AutoMLOptions(space, "out", labels="value", horizon_steps=500)
    AutoMLOptions(space, "out", labels="extrapolated", horizon_steps=500)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_config_file(tmp_path_factory.mktemp("automl"))


def test_an_automl_search_runs_its_queued_proposals(tiny, tmp_path, monkeypatch):
    from rankmixer.search import automl

    queued = []
    real = automl.propose

    def spy(*args, **kwargs):
        got = real(*args, **kwargs)
        queued.extend(c["params"] for c in got)
        return got

    monkeypatch.setattr(automl, "propose", spy)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "out"
    report = run_search(tiny, space, "automl", 7, out, seed=1, log=lambda *_: None,
                        options={"startup_trials": 4, "round_size": 2, "labels": "extrapolated"})
    assert report["strategy"] == "automl" and report["states"]["COMPLETE"] == 7  # the budget counts complete trials
    study = optuna.load_study(study_name="automl", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    # Every proposal builds (the space never draws a dot block over one entity): no failed trial.
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    keys = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(keys)) == len(keys)  # no architecture twice
    # After the start-up (4 complete random trials), every trial is a proposal.
    done = [i for i, t in enumerate(trials) if t.state == optuna.trial.TrialState.COMPLETE]
    later = [t.params for t in trials[done[3] + 1:]]
    assert later and all(p in queued for p in later)
    labels = report["automl"]["trials"]
    assert len(labels) == 7 and report["automl"]["options"]["horizon_steps"] > 0
    for entry in labels:  # each label: the trial's curve extrapolated to the horizon
        run = out / next(t for t in report["trials"] if t["number"] == entry["number"])["run_dirs"][0]
        steps, values = read_curve(run, "auc")
        assert entry["label"] == pytest.approx(extrapolate(steps, values, report["automl"]["options"]["horizon_steps"]))
    assert report["automl"]["predictor"] is None  # 7 trials: too few for 5-fold cross-validation


def test_value_labels_are_the_trials_values_and_need_no_horizon(tiny, tmp_path):
    """By default (``labels: value``) the predictor learns what the study maximizes: each label
    is the trial's value, and no full-run horizon is computed."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    report = run_search(tiny, space, "automl", 5, tmp_path / "out", seed=2, log=lambda *_: None,
                        options={"startup_trials": 3, "round_size": 1})
    assert report["automl"]["options"]["labels"] == "value" and report["automl"]["options"]["horizon_steps"] is None
    values = {t["number"]: t["value"] for t in report["trials"] if t["state"] == "COMPLETE"}
    assert len(report["automl"]["trials"]) == 5
    for entry in report["automl"]["trials"]:
        assert entry["label"] == values[entry["number"]]
