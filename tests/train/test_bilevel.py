"""WC-MHGD's pieces against references (scipy's solver for the simplex problems, the plain BCE for
weighted losses), its config errors, and a learned-weights run end to end with exact resume."""

import json
import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.optimize import minimize

from rankmixer.config import load_config
from rankmixer.experiment import train
from rankmixer.models.base import ModelOutput
from rankmixer.train.bilevel import chebyshev_multipliers, project_simplex, weights_of
from rankmixer.train.config import BilevelConfig, TrainConfig
from rankmixer.train.trainer import task_loss


def _slsqp_on_simplex(objective, n):
    cons = ({"type": "eq", "fun": lambda x: x.sum() - 1},)
    best = None
    for start in np.eye(n).tolist() + [[1 / n] * n]:
        r = minimize(objective, np.array(start), bounds=[(0, 1)] * n, constraints=cons, method="SLSQP",
                     options={"ftol": 1e-14, "maxiter": 500})
        best = r if best is None or r.fun < best.fun else best
    return best.x


@pytest.mark.parametrize("seed", range(5))
def test_simplex_projection_is_the_nearest_point(seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=4) * 2
    p = project_simplex(v)
    assert p.min() >= 0 and p.sum() == pytest.approx(1)
    np.testing.assert_allclose(p, _slsqp_on_simplex(lambda x: ((x - v) ** 2).sum(), 4), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_chebyshev_multipliers_solve_the_dual(seed):
    rng = np.random.default_rng(seed)
    S, n = 3, 5
    gaps, grads = rng.normal(size=S) * 0.1, rng.normal(size=(S, n))
    pref = rng.dirichlet(np.ones(S))
    lr = 0.5
    lam = chebyshev_multipliers(gaps, grads, pref, lr, iterations=5000)

    def neg_dual(x):
        b = (x * pref) @ grads
        return -(x @ (pref * gaps) - lr / 2 * b @ b)

    ref = _slsqp_on_simplex(neg_dual, S)
    assert -neg_dual(lam) == pytest.approx(-neg_dual(ref), abs=1e-9)


def test_chebyshev_multipliers_without_curvature_pick_the_worst_weighted_gap():
    lam = chebyshev_multipliers(np.array([0.3, 0.1]), np.zeros((2, 3)), np.array([0.2, 0.8]), lr=1.0)
    np.testing.assert_array_equal(lam, [0.0, 1.0])  # 0.2 * 0.3 < 0.8 * 0.1


def test_weights_are_positive_and_sum_to_the_task_count():
    w = weights_of(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    assert (w > 0).all() and float(w.sum()) == pytest.approx(3)
    assert torch.allclose(weights_of(torch.zeros(2, dtype=torch.float64)), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("pref, needle", [([0.5, 0.6], "sums to 1.1"), ([1.2, -0.2], "-0.2"), ([float("nan"), 1.0], "nan")])
def test_bad_preferences_are_errors_naming_the_value(pref, needle):
    with pytest.raises(ValidationError, match="preference") as e:
        BilevelConfig(preference=pref)
    assert needle in str(e.value)


def test_bad_task_weights_are_errors():
    with pytest.raises(ValidationError, match="-1.0 is not a non-negative number"):
        TrainConfig(task_weights=[1.0, -1.0])
    with pytest.raises(ValidationError, match="at least one weight must be positive"):
        TrainConfig(task_weights=[0.0, 0.0])


def test_weighted_task_loss_against_per_task_bce():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 3, generator=g), (torch.rand(64, 3, generator=g) < 0.3).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    out = ModelOutput(logits=logits)
    w = torch.tensor([0.5, 2.0, 0.5])
    expected = sum(w[t] * bce(logits[:, t], labels[:, t]) for t in range(3)) / 3
    torch.testing.assert_close(task_loss(out, labels, w), expected)
    torch.testing.assert_close(task_loss(out, labels, torch.ones(3)), task_loss(out, labels))


TINY_MT = {"rows_train": 3000, "rows_valid": 1000, "rows_test": 1000, "n_fields": 3, "vocab": 30}


def _mt_config(root, run, *extra):
    return load_config(None, [
        "data.dataset=multitask", f"data.preset_options={TINY_MT}", f"data.prepared_dir={root / 'prep'}",
        f"run_dir={root / run}", "model.name=concat-mlp", "model.embedding_dim=2", "model.dnn_hidden=[8]",
        "train.max_steps=12", "train.batch_size=256", "train.checkpoint_every_steps=6", "train.keep_checkpoints=3",
        "train.tensorboard=false", "train.progress=false", "train.early_stopping=null", "train.threads=1",
        "train.sparse_optimizer=null", *extra,
    ])


BILEVEL = "train.bilevel={preference: [0.8, 0.2], every_steps: 2, iterations: 3, lr: 0.5}"


def test_task_weights_of_the_wrong_length_name_the_tasks(tmp_path):
    with pytest.raises(ValueError, match=r"task_weights has 3 values for the 2 tasks \['t0', 't1'\]"):
        train(_mt_config(tmp_path, "run", "train.task_weights=[1, 1, 1]"), log=lambda *_: None)
    with pytest.raises(ValueError, match="preference has 3 values for the 2 tasks"):
        train(_mt_config(tmp_path, "run2", "train.bilevel={preference: [0.2, 0.2, 0.6]}"), log=lambda *_: None,
              overwrite=True)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "bilevel"]


def test_learned_weights_move_toward_the_preferred_task_and_resume_exactly(tmp_path):
    ref = train(_mt_config(tmp_path, "ref", BILEVEL), log=lambda *_: None)
    recs = _records(tmp_path / "ref")
    assert [r["step"] for r in recs] == [2, 4, 6, 8, 10, 12]
    # Early in training the worst weighted gap is the preferred task's: its weight rises.
    assert recs[0]["weights"][0] > 1.0 and recs[0]["multipliers"][0] > 0.5
    assert all(sum(r["weights"]) == pytest.approx(2) for r in recs)

    # The same run cut back to its step-6 checkpoint, then resumed: the same weights and metrics.
    cut = tmp_path / "cut"
    train(_mt_config(tmp_path, "cut", BILEVEL), log=lambda *_: None)
    shutil.rmtree(cut / "checkpoints" / "step_00000012")
    (cut / "metrics.json").unlink()
    resumed = train(_mt_config(tmp_path, "cut", BILEVEL), resume=True, log=lambda *_: None)
    again = _records(cut)[6:]  # the resumed run appends steps 8, 10, 12 again
    assert [r["step"] for r in again] == [8, 10, 12]
    assert [r["weights"] for r in again] == [r["weights"] for r in recs[3:]]
    assert resumed["test"]["t1/logloss"] == ref["test"]["t1/logloss"]
