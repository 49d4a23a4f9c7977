"""FuxiCTR's recipe in our trainer: reduce-LR-on-plateau (composition with the schedule, the
drop after each non-improving validation, exact resume), weighted monitors, one Adam for
embeddings and dense weights, and the packaged ``train/fuxictr`` part. Runs are a DCNv2 on the
tiny synthetic set, a validation after every step."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rankmixer import experiment
from rankmixer.config import ConfigError, load_config
from rankmixer.models import registry
from rankmixer.train.config import EarlyStopping, LRPlateau
from rankmixer.train.optim import apply_scheduled_lr, make_schedulers, plateau_lr
from rankmixer.train.trainer import Trainer, seed_everything, task_loss
from tests.factories import tiny_config

EVERY_STEP = ["train.eval_every_steps=1", "train.log_every_steps=1", "train.epochs=2", "train.max_steps=12"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipe")  # one prepared tiny set for the module's runs


def _run(root: Path, name: str, *overrides: str) -> tuple[dict, list[dict]]:
    cfg = tiny_config(root, name, *EVERY_STEP, *overrides)
    result = experiment.train(cfg, log=lambda m: None)
    records = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    return result, records


def _trainer(root: Path, name: str, *overrides: str) -> Trainer:
    """The trainer ``experiment.train`` would build, kept so its optimizers can be inspected."""
    cfg = tiny_config(root, name, *overrides)
    fm = experiment.prepare_data(cfg.data, log=lambda m: None)
    seed_everything(cfg.seed)
    model = registry.build_model(cfg.model_name, fm, cfg.model_params)
    return Trainer(model, fm, cfg.train, root / name, seed=cfg.seed, log=lambda m: None)


def _improvements(values: list[float], min_delta: float) -> list[bool]:
    """Which evaluations improve on the best so far by more than min_delta (higher is better)."""
    best, out = None, []
    for v in values:
        out.append(best is None or v - best > min_delta)
        if out[-1]:
            best = v
    return out


# ---- reduce-LR-on-plateau -------------------------------------------------------------------------


def test_plateau_lr_is_fuxictrs_lr_decay():
    pytest.importorskip("fuxictr", reason="FuxiCTR extra not installed (pip install '.[fuxictr]')")
    from fuxictr.pytorch.models import BaseModel

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    model = SimpleNamespace(optimizer=opt)
    for k in range(1, 8):
        BaseModel.lr_decay(model)  # its defaults: factor 0.1, min_lr 1e-6
        assert plateau_lr(0.05, k, LRPlateau()) == opt.param_groups[0]["lr"]


def test_plateau_composes_with_the_schedule():
    """lr = plateau_lr(base, k) * schedule(step), for each optimizer, applied at once."""
    opts = {"dense": torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3),
            "sparse": torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)}
    k = [0]
    scheds = make_schedulers(opts, lambda step: 1 / (1 + step), LRPlateau(factor=0.1, min_lr=1e-6), lambda: k[0])

    def lrs():
        return opts["dense"].param_groups[0]["lr"], opts["sparse"].param_groups[0]["lr"]

    def step():
        for name, s in scheds.items():
            opts[name].step()  # no gradients: changes nothing, keeps torch's call order
            s.step()

    assert lrs() == pytest.approx((1e-3, 0.05), rel=1e-12)
    step()
    assert lrs() == pytest.approx((1e-3 / 2, 0.05 / 2), rel=1e-12)
    k[0] = 1  # a plateau: applied now, not at the next step
    for s in scheds.values():
        apply_scheduled_lr(s)
    assert lrs() == pytest.approx((1e-4 / 2, 5e-3 / 2), rel=1e-12)
    step()
    assert lrs() == pytest.approx((1e-4 / 3, 5e-3 / 3), rel=1e-12)
    k[0] = 4  # dense: 1e-3 -> 1e-4 -> 1e-5 -> 1e-6 -> floor 1e-6; sparse: 0.05 -> ... -> 5e-6
    for s in scheds.values():
        apply_scheduled_lr(s)
    assert lrs() == pytest.approx((1e-6 / 3, 5e-6 / 3), rel=1e-12)
    k[0] = 5
    step()
    assert lrs() == pytest.approx((1e-6 / 4, 1e-6 / 4), rel=1e-12)


def test_one_pass_validations_choose_weights_but_cut_no_learning_rate(root):
    """A one-pass run's automatic in-pass validations (no eval_every_steps): with a min_delta no
    validation after the first can beat, early stopping counts them and stops the run, and the
    learning rate of every logged step stays the configured one."""
    trainer = _trainer(root, "one_pass", "train.epochs=1", "train.one_pass_evals=6", "train.log_every_steps=1",
                       "train.lr_plateau={factor: 0.5, min_lr: 1.0e-4}",
                       "train.early_stopping={metric: auc, patience: 3, min_delta: 1.0}")
    assert trainer.eval_points  # the automatic in-pass validations
    trainer.fit()
    records = [json.loads(line) for line in (root / "one_pass" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid" and "auc" in r]
    assert len(valid) == 4 and trainer.state["stopped_early"]  # the first, then 3 without improvement
    assert {r["lr"] for r in records if r["split"] == "train"} == {1e-3}
    assert trainer.state["lr_reductions"] == 0
    assert trainer.optimizers["dense"].param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-12)


def test_lr_drops_by_the_factor_after_each_non_improving_validation(root):
    """The logged lr of each step against the rule applied to the logged validations, and the
    lr of both optimizers right after the last (non-improving) validation."""
    min_delta, factor, floor = 0.002, 0.5, 1e-4
    trainer = _trainer(root, "plateau", *EVERY_STEP, f"train.lr_plateau={{factor: {factor}, min_lr: {floor}}}",
                       f"train.early_stopping={{metric: auc, patience: 100, min_delta: {min_delta}}}")
    trainer.fit()
    records = [json.loads(line) for line in (root / "plateau" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if r["split"] == "train"}
    valid = [r for r in records if r["split"] == "valid"]
    improved = _improvements([r["auc"] for r in valid], min_delta)
    assert 3 <= improved.count(False) and improved.count(True) >= 2  # both kinds happened
    expected = 1e-3  # the lr the train record of the next step shows
    for rec, better in zip(valid, improved):
        if not better:
            expected = max(expected * factor, floor)
        if rec["step"] + 1 in lr:
            assert lr[rec["step"] + 1] == pytest.approx(expected, rel=1e-12), rec["step"]
    assert expected == floor  # the floor was reached
    assert lr[1] == 1e-3
    # The reduction takes effect at once: the step after a validation already uses it.
    assert not improved[-1]
    assert trainer.optimizers["dense"].param_groups[0]["lr"] == pytest.approx(floor, rel=1e-12)
    sparse = 0.05
    for _ in range(improved.count(False)):
        sparse = max(sparse * factor, floor)
    assert trainer.optimizers["sparse"].param_groups[0]["lr"] == pytest.approx(sparse, rel=1e-12)


def test_no_plateau_option_keeps_the_lr(root):
    _, records = _run(root, "flat", "train.early_stopping={metric: auc, patience: 100, min_delta: 0.002}")
    assert {r["lr"] for r in records if r["split"] == "train"} == {1e-3}


def test_resume_with_plateau_and_penalties_equals_the_uninterrupted_run(root):
    """Train 12 steps (checkpoints every 2), then remove what came after step 6, as if killed
    there, and resume: the learning rates after step 6 and the final metrics are the
    uninterrupted run's. Reductions happen both before and after the cut, so the plateau count
    must come back from the checkpoint."""
    opts = ["train.lr_plateau={factor: 0.5, min_lr: 1.0e-5}", "train.keep_checkpoints=10",
            "train.early_stopping={metric: {auc: 1, logloss: -1}, patience: 100, min_delta: 0.01}",
            "train.regularization={embedding_l2: 0.01, dense_l2: 0.001}"]
    reference, ref_records = _run(root, "resume", *opts)
    ref_lr = {r["step"]: r["lr"] for r in ref_records if r["split"] == "train"}
    assert ref_lr[6] < 1e-3 and ref_lr[12] < ref_lr[7]  # reductions before and after step 6

    run = root / "resume"
    (run / "metrics.json").unlink()
    for ckpt in (run / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > 6:
            shutil.rmtree(ckpt)
    said: list[str] = []
    resumed = experiment.train(tiny_config(root, "resume", *EVERY_STEP, *opts), resume=True, log=said.append)
    assert any("resumed from" in m and "step_00000006" in m for m in said)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    after = [r for r in records if r["split"] == "train"][-6:]  # the resumed steps 7..12
    assert [r["step"] for r in after] == list(range(7, 13))
    assert {r["step"]: r["lr"] for r in after} == {s: ref_lr[s] for s in range(7, 13)}
    assert resumed["best_step"] == reference["best_step"] and resumed["steps"] == reference["steps"] == 12
    for split in ("valid", "test"):
        for key in ("auc", "logloss"):
            assert resumed[split][key] == pytest.approx(reference[split][key], abs=1e-12), (split, key)


# ---- monitors -------------------------------------------------------------------------------------


def test_weighted_monitor_by_hand():
    m = {"auc": 0.8, "logloss": 0.4, "gauc": 0.7}
    assert EarlyStopping(metric={"auc": 1, "logloss": -1}).monitored(m) == (pytest.approx(0.4, abs=1e-15), True)
    assert EarlyStopping(metric={"auc": 0.5, "gauc": 2}).monitored(m) == (pytest.approx(1.8, abs=1e-15), True)
    assert EarlyStopping(metric="logloss").monitored(m) == (0.4, False)
    with pytest.raises(KeyError, match="'ne'"):
        EarlyStopping(metric={"auc": 1, "ne": -1}).monitored(m)
    with pytest.raises(ConfigError, match="at least one"):
        load_config(None, ["train.early_stopping.metric={}"])
    cfg = load_config(None, ["train.early_stopping.metric={auc: 1, logloss: -1}"])
    assert cfg.train.early_stopping.metric == {"auc": 1.0, "logloss": -1.0}


def test_weighted_monitor_picks_the_best_step(root):
    """The monitor of FuxiCTR's tuner example, AUC + gAUC, over 6 validations."""
    result, records = _run(root, "monitor", "train.max_steps=6",
                           "train.early_stopping={metric: {auc: 1, gauc: 1}, patience: 100}")
    valid = [r for r in records if r["split"] == "valid"]
    values = [r["auc"] + r["gauc"] for r in valid]
    best = max(range(len(values)), key=lambda i: (values[i], -i))  # the first of the highest
    assert result["best_step"] == valid[best]["step"]
    assert result["valid"]["auc"] + result["valid"]["gauc"] == pytest.approx(values[best], abs=1e-9)
    # the plain AUC chooses another step on this run, so the weighted sum was what decided
    auc_best = max(range(len(valid)), key=lambda i: (valid[i]["auc"], -i))
    assert valid[auc_best]["step"] != result["best_step"]


# ---- one Adam, FuxiCTR's optimizer -----------------------------------------------------------------


def test_one_adam_for_embeddings_and_dense_weights(root):
    """sparse_optimizer null + dense adam + dense gradients: a single torch Adam over every
    parameter; its step equals torch.optim.Adam(model.parameters(), lr) (FuxiCTR's
    get_optimizer) on a copy of the model."""
    trainer = _trainer(root, "adam", "model.dropout=0.0", "train.sparse_optimizer=null",
                       "train.sparse_gradients=false", "train.dense_optimizer={name: adam, lr: 0.001}")
    model = trainer.model
    assert list(trainer.optimizers) == ["dense"]
    opt = trainer.optimizers["dense"]
    assert type(opt) is torch.optim.Adam
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert not model.embedding.sparse

    ref = copy.deepcopy(model)
    emb_before = model.embedding.weight.detach().clone()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    batches = iter(trainer.train_data)
    for _ in range(3):
        batch = next(batches)
        trainer.train_step(batch)
        ref_opt.zero_grad()
        task_loss(ref(batch), batch.labels).backward()
        ref_opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)
    assert not torch.equal(model.embedding.weight, emb_before)  # the tables were trained by the same Adam


def test_packaged_fuxictr_train_part():
    t = load_config(None, ["train=fuxictr"]).train
    assert t.sparse_optimizer is None and not t.sparse_gradients
    assert (t.dense_optimizer.name, t.dense_optimizer.lr) == ("adam", 1e-3)
    assert t.lr_plateau == LRPlateau(factor=0.1, min_lr=1e-6) and t.grad_clip == 10.0
    assert (t.early_stopping.metric, t.early_stopping.patience, t.batch_size, t.epochs) == ("auc", 2, 4096, 100)
    assert t.regularization.embedding_scope == "table"


@pytest.mark.parametrize("overrides, steps", [
    (["train.epochs=1"], [1, 2, 3, 4, 5, 6, 7]),                 # 400 rows / 64: 7 steps, 10 asked
    (["train.epochs=1", "train.one_pass_evals=3"], [3, 5, 7]),   # ceil(7 * i / 3)
    (["train.epochs=3", "train.max_steps=5", "train.one_pass_evals=2"], [3, 5]),  # budget within one epoch
    (["train.epochs=2", "train.one_pass_evals=3"], [7, 14]),     # two passes: once per epoch
    (["train.epochs=1", "train.eval_every_steps=4"], [4]),       # an explicit interval wins
])
def test_one_pass_runs_validate_inside_the_pass(root, overrides, steps):
    name = "pass-" + "-".join(o.split(".")[-1] for o in overrides)
    trainer = _trainer(root, name, "train.max_steps=null", *overrides)
    trainer.fit()
    records = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == steps
