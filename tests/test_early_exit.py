"""Multi-head early exit for RankMixer: joint training, exit inference against a slow per-row
reference, skipped compute, threshold calibration (checked with scikit-learn), the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.factories import make_feature_map, random_batch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from rankmixer.data.batch import Batch
from rankmixer.early_exit import calibrate, flops_per_exit, load_thresholds, simulate_exits
from rankmixer.models import registry
from rankmixer.models.base import ModelOutput
from rankmixer.models.rankmixer import RankMixerConfig, rankmixer_exit_flops, rankmixer_flops_per_sample
from rankmixer.train.trainer import task_loss

pytestmark = pytest.mark.usefixtures("single_thread")

CASES = {
    "plain": {},
    "towers": {"head_hidden": [16], "early_exit": {"head_hidden": [8], "loss_weights": "uniform"}},
    "moe": {"moe": {"num_experts": 4, "routing": "relu_dtsi", "target_active_ratio": 0.5}},
    # pre-norm's final norm, inter-layer residuals and the first-order term are in every exit
    "pre_norm_rmsnorm": {"norm_placement": "pre", "norm": "rmsnorm"},
    "inter_residual": {"inter_residual": 2, "block": "mix_revert", "norm_placement": "pre"},
    "first_order": {"first_order": True},
}


def _model(num_layers: int = 4, seed: int = 0, num_tasks: int = 2, **overrides):
    torch.manual_seed(seed)
    fm = make_feature_map(num_tasks=num_tasks)
    early = {"loss_weights": "linear", **overrides.pop("early_exit", {})}
    cfg = {"embedding_dim": 8, "num_tokens": 4, "hidden_dim": 16, "num_layers": num_layers,
           "expansion": 2, "early_exit": early, **overrides}
    return fm, registry.build_model("rankmixer", fm, cfg)


def _row(batch: Batch, r: int) -> Batch:
    return batch._map(lambda t: t[r : r + 1])


def _separated_thresholds(exit_logits: list[torch.Tensor], task: int, q: float) -> list[float]:
    """Per intermediate exit, a threshold near quantile ``q`` of its confidences, placed in the
    middle of a gap so no row sits within float noise of it."""
    out = []
    for z in exit_logits[:-1]:
        c = np.sort(z[:, task].abs().double().numpy())
        k = int(np.clip(round(q * (len(c) - 1)), 1, len(c) - 1))
        lo = max(1, k - len(c) // 8)
        j = lo + int(np.argmax(np.diff(c[lo - 1 : k + len(c) // 8])))
        out.append(float((c[j - 1] + c[j]) / 2) if j < len(c) else float(c[-1] + 1))
    return out


# ------------------------------------------------------------------------------------------
# training: the joint loss
# ------------------------------------------------------------------------------------------
def test_joint_loss_is_the_weighted_exit_bce_and_every_exit_head_gets_gradient():
    fm, model = _model(num_layers=3)
    batch = random_batch(fm, 32)
    model.train()
    out = model(batch)
    assert len(out.exit_logits) == 3 and out.exit_logits[-1] is out.logits
    assert out.exit_loss_weights == pytest.approx([1 / 6, 2 / 6, 3 / 6])  # linear, normalised
    reference = sum(w * F.binary_cross_entropy(torch.sigmoid(z.double()), batch.labels.double())
                    for w, z in zip([1 / 6, 2 / 6, 3 / 6], out.exit_logits))
    loss = task_loss(out, batch.labels)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    for i, head in enumerate(model.exit_heads):
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), f"exit head {i} got no gradient"
    # A zero weight cuts its head off from the loss: the weights really are applied.
    fm, model = _model(num_layers=3, early_exit={"loss_weights": [0.0, 1.0, 1.0]})
    model.train()
    task_loss(model(batch), batch.labels).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.exit_heads[0].parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.exit_heads[1].parameters())


def test_models_without_exits_are_unchanged():
    fm = make_feature_map()
    torch.manual_seed(0)
    plain = registry.build_model("rankmixer", fm, {"num_layers": 2})
    assert plain.exit_heads is None and plain.num_exits == 1
    assert RankMixerConfig().early_exit is None
    out = plain(random_batch(fm, 16))
    assert out.exit_logits is None and out.exit_loss_weights is None
    labels = random_batch(fm, 16).labels
    assert torch.equal(task_loss(out, labels), F.binary_cross_entropy_with_logits(out.logits, labels))
    # Same seed, same parameters: exit heads are added after the existing modules.
    torch.manual_seed(0)
    with_exits = registry.build_model("rankmixer", fm, {"num_layers": 2, "early_exit": {}})
    shared = {k: v for k, v in with_exits.state_dict().items() if not k.startswith("exit_heads.")}
    assert shared.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())


def test_config_validation_and_counts():
    with pytest.raises(ValueError, match="one non-negative weight per exit"):
        RankMixerConfig(num_layers=3, early_exit={"loss_weights": [1.0, 1.0]})
    with pytest.raises(ValueError, match="extra"):
        RankMixerConfig(early_exit={"weights": "linear"})
    with pytest.raises(ValueError, match="confidence_task"):
        _model(num_tasks=1, early_exit={"confidence_task": 1})
    for case in CASES.values():
        fm, model = _model(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in case.items()})
        from rankmixer.models.rankmixer import rankmixer_param_count

        assert rankmixer_param_count(model.cfg, fm)["total"] == sum(p.numel() for p in model.parameters())
        f = rankmixer_exit_flops(model.cfg, fm)
        full = rankmixer_flops_per_sample(model.cfg, fm)
        # Leaving at the final head with every exit head evaluated = the training forward
        # (dense model; MoE counts the sparse inference blocks instead).
        if model.cfg.moe is None:
            assert f["per_exit"][-1] == full["forward"]
        assert f["no_exit"] == f["per_exit"][-1] - (model.cfg.num_layers - 1) * f["exit_head"]
        assert f["per_exit"] == sorted(f["per_exit"])


# ------------------------------------------------------------------------------------------
# inference with exits
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_no_trigger_equals_full_model(case):
    fm, model = _model(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in CASES[case].items()})
    model.eval()
    batch = random_batch(fm, 48)
    with torch.no_grad():
        full = model(batch).logits
    for thr in ([None] * 3, [math.inf] * 3, [1e9] * 3):
        out = model.forward_early_exit(batch, thr)
        assert torch.equal(out.logits, full)
        assert out.exit_index.tolist() == [3] * 48 and out.rows_per_block == [48] * 4


@pytest.mark.parametrize("case", CASES)
def test_early_exit_equals_slow_per_row_reference(case):
    fm, model = _model(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in CASES[case].items()})
    model.eval()
    task = model.cfg.early_exit.confidence_task
    batch = random_batch(fm, 96, torch.Generator().manual_seed(3))
    with torch.no_grad():
        exits = model(batch).exit_logits
    thr = _separated_thresholds(exits, task, 0.6)
    out = model.forward_early_exit(batch, thr)
    # Reference: each row alone through the full model, then the first exit that passes.
    expected_logits, expected_exit = [], []
    for r in range(len(batch)):
        with torch.no_grad():
            zs = model(_row(batch, r)).exit_logits
        k = next((i for i in range(3) if abs(zs[i][0, task].item()) >= thr[i]), 3)
        expected_exit.append(k)
        expected_logits.append(zs[k][0])
    assert out.exit_index.tolist() == expected_exit
    assert len(set(expected_exit)) == 4, "the thresholds should spread rows over every exit"
    torch.testing.assert_close(out.logits, torch.stack(expected_logits), atol=1e-5, rtol=1e-5)
    # The offline simulation used by calibration makes the same choices.
    sim_logits, sim_exit = simulate_exits(torch.stack(exits).double().numpy(), thr, task)
    assert sim_exit.tolist() == expected_exit
    np.testing.assert_allclose(sim_logits, torch.stack(expected_logits).numpy(), atol=1e-5)


def test_exited_rows_skip_later_blocks_and_unused_heads():
    fm, model = _model()
    model.eval()
    batch = random_batch(fm, 80, torch.Generator().manual_seed(5))
    with torch.no_grad():
        exits = model(batch).exit_logits
    seen: dict[str, list[int]] = {}

    def count(name):
        return lambda mod, args, res: seen.setdefault(name, []).append(args[0].shape[0])

    hooks = [b.register_forward_hook(count(f"block{i}")) for i, b in enumerate(model.backbone.blocks)]
    hooks += [h.register_forward_hook(count(f"exit{i}")) for i, h in enumerate(model.exit_heads)]
    hooks.append(model.heads.register_forward_hook(count("final")))
    thr = _separated_thresholds(exits, 0, 0.5)
    thr[1] = None  # no head evaluated after block 2
    out = model.forward_early_exit(batch, thr)
    for h in hooks:
        h.remove()
    idx = out.exit_index.numpy()
    # Rows entering block i+1 are exactly those that did not leave at exits 0..i.
    expected = [80] + [int((idx > i).sum()) for i in range(3)]
    assert expected[1] < 80 and expected[3] < expected[1]
    assert [seen[f"block{i}"] for i in range(4)] == [[n] for n in expected]
    assert out.rows_per_block == expected
    assert "exit1" not in seen and seen["exit0"] == [80] and seen["exit2"] == [expected[2]]
    assert seen["final"] == [int((idx == 3).sum())]
    # Everyone leaves at the first exit: no later block runs at all.
    seen.clear()
    hooks = [b.register_forward_hook(count(f"block{i}")) for i, b in enumerate(model.backbone.blocks)]
    out = model.forward_early_exit(batch, [0.0, None, None])
    for h in hooks:
        h.remove()
    assert list(seen) == ["block0"] and out.rows_per_block == [80, 0, 0, 0]
    torch.testing.assert_close(out.logits, exits[0])


def test_wrong_threshold_count_and_model_without_exits():
    fm, model = _model(num_layers=3)
    with pytest.raises(ValueError, match="need 2 thresholds"):
        model.forward_early_exit(random_batch(fm, 4), [1.0])
    plain = registry.build_model("rankmixer", fm, {"num_layers": 2})
    with pytest.raises(ValueError, match="no exit heads"):
        plain.forward_early_exit(random_batch(fm, 4), [1.0])


# ------------------------------------------------------------------------------------------
# calibration
# ------------------------------------------------------------------------------------------
def _planted_exit_logits(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three exits that see a latent score with decreasing noise; the label follows the score."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-s))).astype(np.float32)
    exits = np.stack([(s + rng.normal(0, sd, n))[:, None] for sd in (1.0, 0.5, 0.0)])
    return exits, y[:, None]


def _flops() -> dict:
    return {"pre": 100, "block": 1000, "exit_head": 10, "final_head": 10}


@pytest.mark.parametrize("target", [0.0005, 0.002, 0.01])
def test_calibration_meets_auc_target_checked_with_sklearn(target):
    exits, y = _planted_exit_logits()
    res = calibrate(exits, y, target, _flops(), task=0, points=25)
    auc_full = roc_auc_score(y[:, 0], exits[-1, :, 0])
    assert res["auc_full"] == pytest.approx(auc_full, abs=1e-12)

    def reference(thr):
        """Per-row loop: first exit whose |logit| passes; sklearn AUC; FLOPs by hand."""
        chosen, cost = [], []
        for r in range(exits.shape[1]):
            k = next((i for i, t in enumerate(thr) if t is not None and abs(exits[i, r, 0]) >= t), 2)
            chosen.append(exits[k, r, 0])
            evaluated = sum(1 for t in thr[: k + 1] if t is not None)
            cost.append(100 + (k + 1) * 1000 + evaluated * 10 + (10 if k == 2 else 0))
        return roc_auc_score(y[:, 0], chosen), float(np.mean(cost))

    ch = res["chosen"]
    auc, cost = reference(ch["thresholds"])
    assert auc_full - auc <= target + 1e-12
    assert ch["auc"] == pytest.approx(auc, abs=1e-12) and ch["flops_per_sample"] == pytest.approx(cost)
    if target >= 0.002:
        assert ch["thresholds"][0] is not None and ch["exit_share"][0] > 0.05, "early exit should pay here"
    # No cheaper grid point meets the target (checked independently).
    for p in res["curve"]:
        a, c = reference(p["thresholds"])
        if c < cost - 1e-9:
            assert auc_full - a > target
    # A looser target never buys less.
    looser = calibrate(exits, y, 2 * target, _flops(), task=0, points=25)["chosen"]
    assert looser["flops_per_sample"] <= ch["flops_per_sample"]


def test_calibration_with_zero_budget_can_fall_back_to_the_full_model():
    exits, y = _planted_exit_logits(n=3000, seed=1)
    exits[0] = -exits[0]  # a useless (inverted) first exit: any exit there costs AUC
    exits[1] = -exits[1]
    res = calibrate(exits, y, 0.0, _flops(), task=0, points=15)
    assert res["chosen"]["auc_loss"] <= 0.0
    assert res["curve"][0]["thresholds"] == [None, None] and res["curve"][0]["auc_loss"] == 0.0
    assert flops_per_exit(_flops(), [None, None]) == [1100, 2100, 3110]


def test_calibrate_exit_cli_end_to_end(tmp_path):
    """Train a tiny early-exit RankMixer on a small synthetic set, calibrate from the CLI, then
    check the written thresholds with real early-exit inference on the same split."""
    import yaml

    from rankmixer import experiment
    from rankmixer.cli import app
    from rankmixer.config import load_config
    from rankmixer.data.loader import ParquetBatches, make_loader
    from rankmixer.runs import load_run

    small = {"rows_train": 4000, "rows_valid": 2000, "rows_test": 1000, "n_users": 200, "n_items": 300,
             "vocab_max": 300, "n_tags": 30, "seq_len": 6}
    cfg = {
        "seed": 3, "run_dir": str(tmp_path / "run"),
        "data": {"dataset": "synthetic", "preset_options": small, "prepared_dir": str(tmp_path / "data")},
        "model": {"name": "rankmixer", "embedding_dim": 8, "num_tokens": 4, "hidden_dim": 16, "num_layers": 3,
                  "early_exit": {}},
        "train": {"epochs": 1, "batch_size": 256, "eval_batch_size": 2048, "threads": 1, "progress": False,
                  "tensorboard": False, "log_every_steps": 10},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    experiment.train(load_config(tmp_path / "cfg.yaml"), log=lambda m: None)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["calibrate-exit", "--run", str(run), "--max-auc-loss", "0.005", "--points", "8",
                                   "--batch-size", "512", "--latency-batches", "2", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    assert "AUC loss" in res.output and "chosen" in res.output
    saved = json.loads((run / "early_exit.json").read_text())
    curve = json.loads((run / "early_exit_curve.json").read_text())
    thr = load_thresholds(run)
    assert thr == saved["thresholds"] and len(thr) == 2 and saved["confidence_task"] == "click"
    assert curve["rows"] == 2000 and curve["curve"][0]["threshold"] is None
    timed = curve["curve"][curve["chosen_index"]]
    assert timed["rows_per_block"][0] == 2 * 512 and timed["ms_per_batch_min"] > 0
    assert curve["check_split"] == "test" and curve["check_rows"] == 1000 and "check" in timed
    # Real early-exit inference with the saved thresholds reproduces the reported AUC and shares.
    loaded = load_run(run)
    fm, model = loaded.feature_map, loaded.model
    probs, labels, idx = [], [], []
    for batch in make_loader(ParquetBatches(fm, "valid", 512, shuffle=False)):
        out = model.forward_early_exit(batch, thr)
        probs.append(torch.sigmoid(out.logits[:, 0]).numpy())
        labels.append(batch.labels[:, 0].numpy())
        idx.append(out.exit_index.numpy())
    p, y, idx = np.concatenate(probs), np.concatenate(labels), np.concatenate(idx)
    auc = roc_auc_score(y, p)
    assert auc == pytest.approx(saved["auc"], abs=1e-4)
    assert saved["auc_full"] - auc <= 0.005 + 1e-4
    np.testing.assert_allclose(np.bincount(idx, minlength=3) / len(idx), saved["exit_share"], atol=2e-3)
    # A run without exit heads is refused with a clear message.
    (run / "early_exit.json").unlink()
    with pytest.raises(FileNotFoundError, match="calibrate-exit"):
        load_thresholds(run)


def test_calibrate_exit_refuses_models_without_exits(tmp_path):
    from rankmixer.early_exit import collect_exit_logits

    fm = make_feature_map()
    plain = registry.build_model("rankmixer", fm, {"num_layers": 2})
    with pytest.raises(ValueError, match="no exit heads"):
        collect_exit_logits(plain, [random_batch(fm, 8)])
    assert isinstance(ModelOutput(logits=torch.zeros(1, 1)).exit_logits, type(None))
