"""DLRM's initialisation options (``embedding_init_std``, ``dense_init``) against their
formulas, and our DLRM against FuxiCTR's composition (``fuxictr-dlrm``) with copied weights:
the same function, so what separates the two in training is the initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from tests.factories import NEEDS_FUXICTR, make_feature_map, random_batch, small_model
from torch import nn

from rankmixer.models.fuxictr import batch_to_inputs
from rankmixer.nn.embedding import PAD_ROW

pytestmark = pytest.mark.usefixtures("single_thread")

# Tables of a few thousand rows, so a sample std is within a few percent of the true one.
BIG_VOCAB = [3000, 2000, 1000]
WIDE = {"embedding_dim": 16, "bottom_mlp": [64], "top_mlp": [128, 64]}


def _embedding_rows(model) -> torch.Tensor:
    w = model.embedding.weight.detach()
    return torch.cat([w[:PAD_ROW], w[PAD_ROW + 1:]])


def _linears(model) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_defaults_are_unchanged():
    """Default: rows normal(0, 1e-2), linear layers as PyTorch leaves them (uniform biases)."""
    model = small_model("dlrm", make_feature_map(sparse_vocab=BIG_VOCAB), **WIDE)
    assert model.cfg.embedding_init_std == 1e-2 and model.cfg.dense_init == "torch"
    assert _embedding_rows(model).std().item() == pytest.approx(1e-2, rel=0.05)
    for lin in _linears(model):
        bound = 1 / math.sqrt(lin.in_features)  # nn.Linear's default: U(-1/sqrt(fan_in), +)
        assert lin.bias.abs().max() <= bound and lin.bias.abs().max() > 0
        assert lin.weight.abs().max() <= bound


@pytest.mark.parametrize("std", [1e-4, 0.3])
def test_embedding_init_std(std):
    model = small_model("dlrm", make_feature_map(sparse_vocab=BIG_VOCAB), **WIDE, embedding_init_std=std)
    rows = _embedding_rows(model)
    assert rows.mean().abs().item() < 0.05 * std
    assert rows.std().item() == pytest.approx(std, rel=0.05)
    assert model.embedding.weight[PAD_ROW].abs().max() == 0


def test_dense_init_xavier_is_fuxictrs():
    """xavier-normal: std sqrt(2 / (fan_in + fan_out)) per layer, zero biases; tables untouched."""
    model = small_model("dlrm", make_feature_map(sparse_vocab=BIG_VOCAB), **WIDE, dense_init="xavier")
    linears = _linears(model)
    # bottom 2 -> 64 -> 16, top (1 + 7 fields: 28 pairs + 16) -> 128 -> 64, heads 64 -> 2
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 64), (64, 16), (44, 128), (128, 64), (64, 2)]
    for lin in linears:
        expected = math.sqrt(2.0 / (lin.in_features + lin.out_features))
        n = lin.weight.numel()
        # sample std of n normal draws: relative error about 1 / sqrt(2 n); allow 5 of those
        assert lin.weight.std().item() == pytest.approx(expected, rel=5 / math.sqrt(2 * n))
        assert torch.count_nonzero(lin.bias) == 0
    assert _embedding_rows(model).std().item() == pytest.approx(1e-2, rel=0.05)


def _pair_order(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


@NEEDS_FUXICTR
def test_same_function_as_fuxictr_composition_with_copied_weights(generator):
    """Our DLRM's weights copied into FuxiCTR's composition give the same logits. Ours orders
    the fields [bottom, f_1 .. f_n] and the top input [bottom || pairs]; theirs [f_1 .. f_n,
    bottom] and [pairs || bottom]: the top layer's columns are permuted to match."""
    fm = make_feature_map(num_tasks=2)
    sizes = {"embedding_dim": 8, "bottom_mlp": [16], "top_mlp": [32, 16]}
    ours = small_model("dlrm", fm, **sizes).eval()
    theirs = small_model("fuxictr-dlrm", fm, **sizes).eval()
    d = sizes["embedding_dim"]
    tables = theirs.embedding_layer.embedding_layer.embedding_layers
    ours_lin, their_lin = _linears(ours), _linears(theirs)
    assert len(ours_lin) == len(their_lin) == 5  # bottom 2, top 2, output 1
    n = len(ours.embedding.field_names)  # sparse + bags + sequences; + 1 with the bottom output
    # Position of each of our top-input columns in theirs: field k of ours is k - 1 of theirs
    # (k >= 1); ours 0 (the bottom output) is their last, n.
    theirs_pairs = {p: i for i, p in enumerate(_pair_order(n + 1))}
    to_theirs = lambda k: n if k == 0 else k - 1  # noqa: E731
    perm = list(range(len(theirs_pairs), len(theirs_pairs) + d))  # our bottom columns go last
    for i, j in _pair_order(n + 1):
        a, b = sorted((to_theirs(i), to_theirs(j)))
        perm.append(theirs_pairs[(a, b)])
    with torch.no_grad():
        for f in fm.sparse + fm.bags + fm.sequences:
            if f.share_with is None:
                tables[f.name].weight.copy_(ours.embedding.table_weight(f.name))
        for k, (o, t) in enumerate(zip(ours_lin, their_lin)):
            t.bias.copy_(o.bias)
            if k == 2:  # the top MLP's first layer reads the interactions
                t.weight.zero_()
                t.weight[:, perm] = o.weight
            else:
                t.weight.copy_(o.weight)
    batch = random_batch(fm, 32, generator)
    torch.testing.assert_close(theirs.logits(batch_to_inputs(fm, batch)), ours(batch).logits)
