"""train.regularization: each penalty against a hand computation (float64), the looked-up
penalty's gradient only on looked-up rows, the table and dense penalties against FuxiCTR's own
``regularization_loss``, and one trainer step against a hand-built objective."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rankmixer import experiment
from rankmixer.config import ConfigError, load_config
from rankmixer.models import registry
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.train.config import RegularizationConfig
from rankmixer.train.regularization import Regularizer
from rankmixer.train.trainer import Trainer, seed_everything, task_loss
from tests.factories import make_feature_map, random_batch, tiny_config


class TinyNet(nn.Module):
    """One table (row 0 = padding) and one linear layer, with explicit weights."""

    def __init__(self, sparse: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 2, padding_idx=0, sparse=sparse)
        self.out = nn.Linear(2, 1)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]))
            self.out.weight.copy_(torch.tensor([[2.0, -3.0]]))
            self.out.bias.copy_(torch.tensor([0.5]))
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).sum(1))


# Batch of B = 2 rows: row 1 looked up twice, row 2 once, the pad row once (not counted), row 3 never.
IDS = torch.tensor([[1, 2], [1, 0]])


def _penalty(net: nn.Module, cfg: RegularizationConfig, ids: torch.Tensor = IDS) -> torch.Tensor:
    reg = Regularizer(net, cfg)
    with reg.recording():
        net(ids)
    return reg.penalty(len(ids))


@pytest.mark.parametrize("sparse", [False, True])
def test_looked_up_l2_by_hand(sparse):
    net = TinyNet(sparse)
    p = _penalty(net, RegularizationConfig(embedding_l2=0.1))
    # 0.1 / 2 * (2 * ||(1, 2)||^2 + ||(3, -1)||^2) / 2 = 0.05 * (10 + 10) / 2
    assert p.item() == pytest.approx(0.5, abs=1e-15)
    p.backward()
    grad = net.emb.weight.grad
    assert grad.is_sparse == sparse
    if sparse:  # the penalty reaches the looked-up rows only, as a sparse gradient
        grad = grad.coalesce()
        assert set(grad.indices()[0].tolist()) <= {1, 2}
        grad = grad.to_dense()
    # row r: 0.1 * (occurrences / B) * W[r]; the pad row and the unused row 3 get exactly 0
    expected = torch.tensor([[0.0, 0.0], [0.1, 0.2], [0.15, -0.05], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)
    assert net.out.weight.grad is None  # no dense_l2: nothing reaches the linear layer


def test_padding_never_counts():
    net = TinyNet()
    with torch.no_grad():
        net.emb.weight[0] = 7.0  # a pad row that is not zero still is not a looked-up vector
    assert _penalty(net, RegularizationConfig(embedding_l2=0.1)).item() == pytest.approx(0.5, abs=1e-15)


def test_table_and_dense_l2_by_hand():
    net = TinyNet()
    p = _penalty(net, RegularizationConfig(embedding_l2=0.1, embedding_scope="table", dense_l2=0.2))
    # table: 0.05 * (0 + 5 + 10 + 0.5); dense: 0.1 * (4 + 9 + 0.25), the bias included
    assert p.item() == pytest.approx(0.775 + 1.325, abs=1e-14)
    p.backward()
    torch.testing.assert_close(net.emb.weight.grad, 0.1 * net.emb.weight.detach(), rtol=0, atol=1e-15)
    torch.testing.assert_close(net.out.weight.grad, 0.2 * net.out.weight.detach(), rtol=0, atol=1e-15)
    torch.testing.assert_close(net.out.bias.grad, torch.tensor([0.1], dtype=torch.float64), rtol=0, atol=1e-15)


def test_only_recorded_lookups_count():
    net = TinyNet()
    reg = Regularizer(net, RegularizationConfig(embedding_l2=0.1))
    net(torch.tensor([[3, 3]]))  # outside recording (an evaluation): not counted
    with reg.recording():
        net(IDS)
    assert reg.penalty(2).item() == pytest.approx(0.5, abs=1e-15)
    with reg.recording():  # a new step starts from zero: only row 3, twice, in one row
        net(torch.tensor([[3, 3]]))
    assert reg.penalty(1).item() == pytest.approx(0.05 * 2 * 0.5, abs=1e-15)
    reg.remove()
    with reg.recording():
        net(IDS)
    assert reg.penalty(2) is None


def _static_penalty(net: nn.Module, cfg: RegularizationConfig) -> torch.Tensor:
    """The table and dense penalties, which need no forward pass."""
    return Regularizer(net, cfg).penalty(1)


def test_off_is_none():
    assert _penalty(TinyNet(), RegularizationConfig()) is None


def _slow_looked_up(emb: FeatureEmbedding, batch, lam: float) -> torch.Tensor:
    """lam / 2 * (sum of squared norms of every looked-up vector) / B, by loops over the batch,
    reading each table through ``table_weight`` with the features' own (local) ids."""
    B = batch.sparse.shape[0]
    total = torch.zeros((), dtype=emb.weight.dtype)
    for i, name in enumerate(emb.sparse_names):
        W = emb.table_weight(emb.feature_table[name])
        for b in range(B):
            i_ = int(batch.sparse[b, i])
            if i_:
                total = total + W[i_].pow(2).sum()
    for j in range(len(emb.dense_names)):  # a numerical field's vector is read by every row
        total = total + B * emb.numeric_weight()[j].pow(2).sum()
    for name, ids in list(batch.bags.items()) + list(batch.sequences.items()):
        W = emb.table_weight(emb.feature_table[name])
        for i_ in ids.flatten().tolist():
            if i_:
                total = total + W[i_].pow(2).sum()
    return lam / 2 * total / B


@pytest.mark.parametrize("sparse", [False, True])
def test_looked_up_l2_of_our_feature_embedding(sparse):
    fm = make_feature_map(num_tasks=1)
    torch.manual_seed(0)
    emb = FeatureEmbedding(fm, 3, sparse=sparse).double()
    with torch.no_grad():
        emb.weight[1:].normal_()
    batch = random_batch(fm, 6)
    p = _penalty(emb, RegularizationConfig(embedding_l2=0.3), batch)
    ref = _slow_looked_up(emb, batch, 0.3)
    assert p.item() == pytest.approx(ref.item(), rel=1e-12)
    p.backward()
    (ref_grad,) = torch.autograd.grad(ref, emb.weight)
    grad = emb.weight.grad
    if sparse:
        grad = grad.coalesce()
        used = set(grad.indices()[0].tolist())
        assert used == set(ref_grad.abs().sum(1).nonzero().flatten().tolist())
        grad = grad.to_dense()
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
    assert (ref_grad.abs().sum(1) == 0).sum() > 0  # some rows were not looked up and got nothing


# ---- FuxiCTR's own regularization_loss ------------------------------------------------------------


def _fuxictr_net(numeric: bool, lam_emb: float, lam_net: float):
    fuxictr = pytest.importorskip("fuxictr", reason="FuxiCTR extra not installed (pip install '.[fuxictr]')")
    from fuxictr.pytorch import layers

    from rankmixer.models.fuxictr.common import fuxictr_feature_map

    fm = make_feature_map(num_tasks=1, n_dense=2 if numeric else 0)
    fmap = fuxictr_feature_map(fm, 3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding_layer = layers.FeatureEmbedding(fmap, 3)
            width = 3 * fmap.num_fields
            self.mlp = nn.Sequential(nn.Linear(width, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
            # what BaseModel.regularization_loss reads
            self._embedding_regularizer, self._net_regularizer = lam_emb, lam_net

    torch.manual_seed(1)
    net = Net().double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net, fuxictr.pytorch.models.BaseModel.regularization_loss


def test_table_and_dense_equal_fuxictr_regularization_loss():
    net, fuxictr_loss = _fuxictr_net(numeric=False, lam_emb=0.05, lam_net=0.01)
    ours = _static_penalty(net, RegularizationConfig(embedding_l2=0.05, embedding_scope="table", dense_l2=0.01))
    theirs = fuxictr_loss(net)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    # each half on its own too
    emb_only = _static_penalty(net, RegularizationConfig(embedding_l2=0.05, embedding_scope="table"))
    net._net_regularizer = None
    assert emb_only.item() == pytest.approx(fuxictr_loss(net).item(), rel=1e-12)


def test_numeric_feature_vectors_are_dense_for_fuxictr_layers():
    """The documented difference: FuxiCTR's numerical features are ``nn.Linear(1, d)`` inside its
    embedding module, so FuxiCTR gives them the embedding lambda; our trainer sees plain linear
    layers and gives them dense_l2."""
    net, fuxictr_loss = _fuxictr_net(numeric=True, lam_emb=0.05, lam_net=0.01)
    numeric = [m.weight for m in net.embedding_layer.modules() if isinstance(m, nn.Linear)]
    assert len(numeric) == 2
    sq = sum(w.pow(2).sum() for w in numeric).item()
    ours = _static_penalty(net, RegularizationConfig(embedding_l2=0.05, embedding_scope="table", dense_l2=0.01))
    assert ours.item() == pytest.approx(fuxictr_loss(net).item() + (0.01 - 0.05) / 2 * sq, rel=1e-12)


# ---- config and trainer -------------------------------------------------------------------------


def test_table_scope_refuses_sparse_gradients():
    with pytest.raises(ConfigError, match="sparse_gradients"):
        load_config(None, ["train.sparse_gradients=true", "train.regularization.embedding_l2=0.1",
                           "train.regularization.embedding_scope=table"])
    load_config(None, ["train.sparse_gradients=true", "train.regularization.embedding_l2=0.1"])  # looked_up: fine


def test_trainer_step_minimises_loss_plus_penalty(tmp_path):
    """One SGD step of lr 1 through the trainer equals ``params - grad(task loss + hand
    penalty)`` on a copy of the model; the penalty moves the weights measurably."""
    lam_e, lam_d = 0.5, 0.1
    cfg = tiny_config(tmp_path, "run", "model.dropout=0.0", "train.sparse_optimizer=null",
                      "train.dense_optimizer={name: sgd, lr: 1.0}",
                      f"train.regularization={{embedding_l2: {lam_e}, dense_l2: {lam_d}}}")
    fm = experiment.prepare_data(cfg.data, log=lambda m: None)
    seed_everything(cfg.seed)
    model = registry.build_model(cfg.model_name, fm, cfg.model_params)
    trainer = Trainer(model, fm, cfg.train, tmp_path / "run", seed=cfg.seed, log=lambda m: None)
    batch = next(iter(trainer.train_data))
    ref = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}

    trainer.train_step(batch)

    task = task_loss(ref(batch), batch.labels)
    emb = ref.embedding
    penalty = _slow_looked_up(emb, batch, lam_e) + lam_d / 2 * sum(
        p.pow(2).sum() for n, p in ref.named_parameters() if not n.startswith("embedding."))
    names = [n for n, _ in ref.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(task + penalty, list(ref.parameters()))))
    plain = dict(zip(names, torch.autograd.grad(task_loss(ref(batch), batch.labels), list(ref.parameters()))))
    moved = 0.0
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - grads[n], rtol=0, atol=1e-6, msg=n)
        moved = max(moved, (grads[n] - plain[n]).abs().max().item())
    assert moved > 1e-3
