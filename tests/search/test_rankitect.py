"""Rankitect's one-shot search: the controller's REINFORCE step against finite differences of
the expected advantage-weighted log-likelihood, its masks, and a tiny search end to end (the
baseline co-trained, rewards recorded, the chosen path a trainable searched model)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from rankmixer import experiment
from rankmixer.config import ConfigError, load_config
from rankmixer.search.controller import Controller
from rankmixer.search.rankitect import probabilities_table, run_rankitect, searches_table
from rankmixer.tune.space import format_override
from tests.factories import tiny_config_file

SPACE = {
    "model": {"embedding_dim": 4},
    "blocks": {"int": [1, 2]},
    "types": {"mlp": {"width": {"int": [4, 16]}}, "cross": {"depth": {"int": [1, 2]}}, "dot": {}},
    "supernet": {"choice_blocks": 2, "set_size": 3},
}


def test_the_reinforce_step_is_the_gradient_of_the_weighted_log_likelihood():
    allowed = [[0, 1, 2, 3], [0, 1, 2]]
    c = Controller(allowed, 4, lr=0.1, generator=torch.Generator().manual_seed(0))
    c.theta = torch.tensor([[0.3, -0.2, 0.5, 0.1], [0.0, 0.4, -0.3, 0.0]], dtype=torch.float64)
    paths, rewards = [[0, 1], [2, 1], [3, 0]], [0.5, -0.1, 0.2]
    adv = [r - sum(rewards) / 3 for r in rewards]

    def objective(theta):
        logp = torch.log_softmax(theta.masked_fill(c.mask, float("-inf")), dim=1)
        return sum(a * sum(logp[i, k] for i, k in enumerate(p)) for a, p in zip(adv, paths))

    before = c.theta.clone()
    eps, grad = 1e-6, torch.zeros_like(before)
    for i, ks in enumerate(allowed):
        for k in ks:
            up, down = before.clone(), before.clone()
            up[i, k] += eps
            down[i, k] -= eps
            grad[i, k] = (objective(up) - objective(down)) / (2 * eps)
    c.step(paths, rewards)
    assert torch.allclose(c.theta, before + 0.1 * grad, atol=1e-8)
    assert c.probs()[1, 3] == 0 and c.theta[1, 3] == 0  # zero is masked in the last block
    assert all(p[1] != 3 for p in c.sample(200))


def test_a_tiny_search_end_to_end(tmp_path):
    config = tiny_config_file(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    report = run_rankitect(config, space, tmp_path / "out", ["train.max_steps=null"], epochs=2, samples=3,
                           update_every=1, warmup_steps=1, cost_weight=0.1, log=lambda *_: None)
    assert report["context"]["steps"] == 14  # 2 passes over 400 rows in batches of 64
    assert len(report["history"]) >= 10 and report["context"]["baseline"]["name"] == "dcnv2"
    assert all(abs(sum(p) - 1) < 1e-9 for p in report["probabilities"])
    assert report["valid_ne"]["path"] > 0 and report["valid_ne"]["baseline"] > 0
    assert json.loads((tmp_path / "out" / "rankitect.json").read_text())["best"] == report["best"]
    assert probabilities_table(report).count(" *") == 2  # the chosen candidate of each choice block
    assert f"`{report['best']['architecture']}`" in searches_table([report])
    cfg = load_config(config, [format_override("model", report["best"]["model"]), f"run_dir={tmp_path / 're'}"])
    assert experiment.train(cfg, log=lambda *_: None)["test"]["auc"] > 0
    with pytest.raises(ConfigError, match="baseline"):
        run_rankitect(config, space, tmp_path / "x", ["model.embedding_dim=8"], log=lambda *_: None)
