"""Building blocks in rankmixer.nn, each against a slow reference."""

from __future__ import annotations

import itertools

import pytest
import torch
from tests.factories import make_feature_map, random_batch
from torch import nn

from rankmixer.nn.cross import CrossLayerV2, CrossNetV2
from rankmixer.nn.embedding import EmbeddedFeatures, FeatureEmbedding, split_parameters
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import (
    DotInteraction,
    FMInteraction,
    dot_interaction,
    fm_second_order,
    num_dot_pairs,
)
from rankmixer.nn.mlp import MLP

pytestmark = pytest.mark.usefixtures("single_thread")

# ---- FeatureEmbedding ------------------------------------------------------------------------


def _randomise(emb: FeatureEmbedding, seed: int = 1) -> None:
    """Large random weights (pad row kept zero) so comparisons are not trivially ~0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(emb.weight.shape, generator=g))
        emb.weight[0].zero_()


def test_field_layout(tiny_feature_map, generator):
    fm = tiny_feature_map
    emb = FeatureEmbedding(fm, 8)
    batch = random_batch(fm, 16, generator)
    out = emb(batch)
    assert isinstance(out, EmbeddedFeatures)
    assert out.field_names == ["s0", "s1", "s2", "d0", "d1", "tags", "s0_bag", "hist", "clicks"]
    assert out.fields.shape == (16, 9, 8)
    assert out.flat().shape == (16, 72)
    assert torch.equal(out.dense, batch.dense)
    assert set(out.sequences) == {"hist", "clicks"}
    e, m = out.sequences["clicks"]
    assert e.shape == (16, 6, 8) and m.shape == (16, 6) and m.dtype == torch.bool
    assert torch.equal(m, batch.sequences["clicks"] != 0)
    # numeric_as_field=False drops the numerical fields (and their rows)
    emb2 = FeatureEmbedding(fm, 8, numeric_as_field=False)
    assert emb2(batch).field_names == ["s0", "s1", "s2", "tags", "s0_bag", "hist", "clicks"]
    assert emb2.num_rows == emb.num_rows - 2
    # one fused weight: tables s0, s1, s2, tags, clicks share one pad row; + 2 numeric rows
    assert emb.num_rows == 1 + (9 + 6 + 4 + 11 + 8) + 2
    assert list(emb.parameters()) == [emb.weight] == emb.embedding_parameters()


def test_fused_lookup_equals_per_table_lookups(tiny_feature_map, generator):
    fm = tiny_feature_map
    emb = FeatureEmbedding(fm, 4)
    _randomise(emb)
    # Separate nn.Embedding tables holding the same weights (pad row 0 of each is zero).
    tables = {name: nn.Embedding.from_pretrained(emb.table_weight(name).detach(), padding_idx=0) for name in fm.tables()}
    for name, rows in fm.tables().items():
        assert tables[name].weight.shape == (rows, 4)
        assert torch.all(tables[name].weight[0] == 0)
    batch = random_batch(fm, 64, generator)
    assert (batch.sparse == 0).any()  # pad ids present among sparse fields
    out = emb(batch)
    idx = {n: i for i, n in enumerate(out.field_names)}
    for i, f in enumerate(fm.sparse):
        torch.testing.assert_close(out.fields[:, idx[f.name]], tables[f.table](batch.sparse[:, i]))
    for f in fm.sequences:
        ref = tables[f.table](batch.sequences[f.name])
        torch.testing.assert_close(out.sequences[f.name][0], ref)
    # numeric fields: learned vector times value
    for j, f in enumerate(fm.dense):
        ref = emb.numeric_weight()[j] * batch.dense[:, j : j + 1]
        torch.testing.assert_close(out.fields[:, idx[f.name]], ref)
    # shared features read their owner's rows
    ids = torch.arange(1, fm.feature("s0").vocab_size)
    assert torch.equal(emb.global_ids("s0_bag", ids), emb.global_ids("s0", ids))
    assert torch.equal(emb.global_ids("hist", ids[:5]), emb.global_ids("s1", ids[:5]))
    assert not torch.equal(emb.global_ids("tags", ids), emb.global_ids("s0", ids))


def test_tables_occupy_disjoint_rows(tiny_feature_map):
    emb = FeatureEmbedding(tiny_feature_map, 2)
    seen: set[int] = set()
    for name, rows in tiny_feature_map.tables().items():
        g = emb.global_ids(name, torch.arange(rows)).tolist()
        assert g[0] == 0  # pad -> the shared pad row
        assert not seen & set(g[1:])
        seen |= set(g[1:])
    numeric = set(emb.numeric_rows.tolist())
    assert not seen & numeric and 0 not in seen | numeric
    assert seen | numeric | {0} == set(range(emb.num_rows))


def test_masked_mean_pooling_equals_loop(tiny_feature_map, generator):
    fm = tiny_feature_map
    emb = FeatureEmbedding(fm, 3)
    _randomise(emb)
    batch = random_batch(fm, 32, generator)
    # make sure all-pad rows are present
    batch.bags["tags"][0] = 0
    batch.sequences["clicks"][1] = 0
    out = emb(batch)
    idx = {n: i for i, n in enumerate(out.field_names)}
    for f, ids_all in [(f, batch.bags[f.name]) for f in fm.bags] + [(f, batch.sequences[f.name]) for f in fm.sequences]:
        table = emb.table_weight(f.table)
        for b in range(32):
            real = [int(i) for i in ids_all[b] if i != 0]
            ref = torch.stack([table[i] for i in real]).mean(0) if real else torch.zeros(3)
            torch.testing.assert_close(out.fields[b, idx[f.name]], ref)
    assert torch.all(out.fields[0, idx["tags"]] == 0)
    assert torch.all(out.fields[1, idx["clicks"]] == 0)


def test_pad_row_zero_and_gets_no_gradient(tiny_feature_map, generator):
    emb = FeatureEmbedding(tiny_feature_map, 4)
    assert torch.all(emb.weight[0] == 0)
    assert emb.weight[1:].std().item() == pytest.approx(1e-2, rel=0.2)
    batch = random_batch(tiny_feature_map, 64, generator)
    out = emb(batch)
    loss = (out.fields * torch.randn_like(out.fields)).sum()
    loss = loss + sum((e * torch.randn_like(e)).sum() for e, _ in out.sequences.values())
    loss.backward()
    assert torch.all(emb.weight.grad[0] == 0)
    assert emb.weight.grad[1:].abs().sum() > 0
    # pad slots of unpooled sequences are zero
    for e, m in out.sequences.values():
        assert torch.all(e[~m] == 0)


def test_sparse_gradients(tiny_feature_map, generator):
    batch = random_batch(tiny_feature_map, 32, generator)
    grads = {}
    for sparse in (False, True):
        torch.manual_seed(0)
        emb = FeatureEmbedding(tiny_feature_map, 4, sparse=sparse)
        out = emb(batch)
        w = torch.linspace(-1, 1, out.fields.numel()).view_as(out.fields)
        loss = (out.fields * w).sum() + sum(e.pow(2).sum() for e, _ in out.sequences.values())
        loss.backward()
        grads[sparse] = emb.weight.grad
    assert not grads[False].is_sparse
    assert grads[True].is_sparse
    dense_of_sparse = grads[True].coalesce().to_dense()
    torch.testing.assert_close(dense_of_sparse, grads[False])
    assert torch.all(dense_of_sparse[0] == 0)
    # a sparse optimizer accepts it
    emb = FeatureEmbedding(tiny_feature_map, 4, sparse=True)
    opt = torch.optim.SparseAdam(emb.embedding_parameters(), lr=0.1)
    emb(batch).fields.sum().backward()
    opt.step()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_dense=0),
        dict(bags=False, sequences=False),
        dict(n_sparse=0),
        dict(n_sparse=0, n_dense=0, sequences=False),
        dict(n_sparse=1, n_dense=0, bags=False, sequences=False),
    ],
)
def test_feature_maps_missing_kinds(kwargs, generator):
    fm = make_feature_map(**kwargs)
    emb = FeatureEmbedding(fm, 5)
    batch = random_batch(fm, 8, generator)
    out = emb(batch)
    n_fields = len(fm.sparse) + len(fm.dense) + len(fm.bags) + len(fm.sequences)
    assert out.fields.shape == (8, n_fields, 5)
    assert len(out.field_names) == n_fields
    assert out.dense.shape == (8, len(fm.dense))


def test_check_ids(tiny_feature_map, generator):
    emb = FeatureEmbedding(tiny_feature_map, 2)
    batch = random_batch(tiny_feature_map, 8, generator)
    emb.check_ids(batch)
    batch.bags["s0_bag"][0, 0] = 10  # s0 has 10 rows: ids 0..9
    with pytest.raises(ValueError, match="s0_bag"):
        emb.check_ids(batch)


def test_split_parameters(tiny_feature_map):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = FeatureEmbedding(tiny_feature_map, 4)
            self.b = FeatureEmbedding(tiny_feature_map, 1)
            self.mlp = MLP(4, [3], 1)

    m = Two()
    emb, rest = split_parameters(m)
    assert [id(p) for p in emb] == [id(m.a.weight), id(m.b.weight)]
    assert {id(p) for p in rest} == {id(p) for p in m.mlp.parameters()}


def test_rejects_bad_feature_map():
    fm = make_feature_map()
    fm.features[0].vocab_size = 1
    with pytest.raises(ValueError, match="s0"):
        FeatureEmbedding(fm, 4)


# ---- MLP, heads -------------------------------------------------------------------------------


def test_mlp():
    x = torch.randn(7, 5)
    m = MLP(5, [8, 6], 3, activation="gelu", dropout=0.1, batch_norm=True)
    assert m(x).shape == (7, 3) and m.out_features == 3
    assert isinstance(m.layers[-1], nn.Linear)  # bare output layer
    assert sum(isinstance(layer, nn.BatchNorm1d) for layer in m.layers) == 2
    m2 = MLP(5, [8])
    assert m2.out_features == 8 and torch.all(m2(x) >= 0)  # ends in the activation
    ident = MLP(5, [])
    assert torch.equal(ident(x), x) and ident.out_features == 5
    assert MLP(5, [4], 2)(torch.randn(2, 3, 5)).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="activation"):
        MLP(5, [4], activation="nope")


def test_task_heads():
    x = torch.randn(9, 6)
    for hidden in ([], [4]):
        for t in (1, 3):
            h = TaskHeads(6, t, hidden)
            assert h(x).shape == (9, t)
    # linear heads: task t's logit is its own linear map of x
    h = TaskHeads(6, 2)
    torch.testing.assert_close(h(x)[:, 1], x @ h.linear.weight[1] + h.linear.bias[1])
    # towers are independent: a task's gradient does not reach another task's tower
    h = TaskHeads(6, 2, [4])
    h(x)[:, 0].sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in h.towers[1].parameters())
    assert all(p.grad.any() for p in h.towers[0].parameters())


# ---- interactions -----------------------------------------------------------------------------


def test_dot_interaction_equals_pair_loop():
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    ref = torch.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in itertools.combinations(range(6), 2)], dim=1)
    torch.testing.assert_close(dot_interaction(x), ref)
    mod = DotInteraction(6)
    assert mod.out_features == 15 == num_dot_pairs(6)
    torch.testing.assert_close(mod(x), ref)
    ref_self = torch.stack(
        [(x[:, i] * x[:, j]).sum(-1) for i, j in itertools.combinations_with_replacement(range(6), 2)], dim=1
    )
    torch.testing.assert_close(dot_interaction(x, self_interaction=True), ref_self)
    torch.testing.assert_close(DotInteraction(6, self_interaction=True)(x), ref_self)
    assert num_dot_pairs(6, True) == 21
    assert DotInteraction(1)(torch.randn(2, 1, 3)).shape == (2, 0)


def test_fm_equals_pair_sum():
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    ref = sum((x[:, i] * x[:, j]).sum(-1) for i, j in itertools.combinations(range(7), 2)).unsqueeze(1)
    torch.testing.assert_close(fm_second_order(x), ref)
    torch.testing.assert_close(FMInteraction()(x), ref)
    per_dim = fm_second_order(x, reduce=False)
    assert per_dim.shape == (5, 4)
    torch.testing.assert_close(per_dim.sum(1, keepdim=True), ref)


# ---- cross network ----------------------------------------------------------------------------


def test_cross_layer_matches_formula_float64():
    torch.manual_seed(0)
    D = 6
    layer = CrossLayerV2(D).double()
    x0 = torch.randn(3, D, dtype=torch.float64)
    xl = torch.randn(3, D, dtype=torch.float64)
    W, b = layer.w.weight.detach(), layer.w.bias.detach()
    ref = torch.empty(3, D, dtype=torch.float64)
    for n in range(3):
        for i in range(D):
            wx = sum(W[i, j] * xl[n, j] for j in range(D)) + b[i]
            ref[n, i] = x0[n, i] * wx + xl[n, i]
    torch.testing.assert_close(layer(x0, xl), ref)
    # the stack feeds x0 to every layer
    net = CrossNetV2(D, 2).double()
    x1 = net.layers[0](x0, x0)
    torch.testing.assert_close(net(x0), net.layers[1](x0, x1))
    assert CrossNetV2(D, 0)(x0) is x0


def test_low_rank_equals_full_rank_with_w_uvt():
    torch.manual_seed(0)
    D, r = 8, 3
    low = CrossNetV2(D, 2, low_rank=r).double()
    full = CrossNetV2(D, 2).double()
    with torch.no_grad():
        for lo, fu in zip(low.layers, full.layers):
            U, Vt = lo.u.weight, lo.v.weight  # [D, r], [r, D]
            fu.w.weight.copy_(U @ Vt)
            fu.w.bias.copy_(lo.u.bias)
    x0 = torch.randn(5, D, dtype=torch.float64)
    torch.testing.assert_close(low(x0), full(x0))
    assert sum(p.numel() for p in low.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError):
        CrossLayerV2(D, rank=0)


def test_embedding_grad_flows_through_fused_weight_only_for_used_rows(tiny_feature_map):
    fm = tiny_feature_map
    emb = FeatureEmbedding(fm, 2, numeric_as_field=False)
    g = torch.Generator().manual_seed(3)
    batch = random_batch(fm, 4, g)
    emb(batch).fields.sum().backward()
    used = set()
    for i, f in enumerate(fm.sparse):
        used |= set(emb.global_ids(f.name, batch.sparse[:, i]).tolist())
    for f in fm.bags:
        used |= set(emb.global_ids(f.name, batch.bags[f.name]).flatten().tolist())
    for f in fm.sequences:
        used |= set(emb.global_ids(f.name, batch.sequences[f.name]).flatten().tolist())
    used.discard(0)
    nonzero = set(torch.nonzero(emb.weight.grad.abs().sum(1)).flatten().tolist())
    assert nonzero == used
