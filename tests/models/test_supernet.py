"""The supernet of the one-shot searches: candidate FLOPs against hand counts, the cost-aware loss
and its gradient against the closed form in float64, the mixing against a loop over the
candidates, and the derivation of a searched model from architecture weights."""

from __future__ import annotations

import pytest
import torch

from rankmixer.models import registry
from rankmixer.models.supernet import SupernetConfig, derive_blocks, selection
from tests.factories import random_batch

CANDIDATES = [{"type": "mlp", "width": 8}, {"type": "cross", "rank": 2}, {"type": "dot"}, {"type": "zero"}]


def build(fm, **changes):
    torch.manual_seed(0)
    cfg = {"embedding_dim": 4, "choice_blocks": 2, "set_size": 3, "candidates": CANDIDATES, **changes}
    return registry.build_model("supernet", fm, cfg)


def test_candidate_flops_are_the_hand_counts(tiny_feature_map):
    model = build(tiny_feature_map)
    f, d, n = len(model.embedding.field_names), 4, 3
    # block 0 reads emb [f, d]; block 1 reads emb and block 0's set [n, d]
    for i, entities in enumerate((f, f + n)):
        width = entities * d
        mlp = 2 * width * 8
        cross = 2 * (width * 2 + 2 * width)  # one low-rank cross layer: U [width, 2], V [2, width]
        dot = 2 * d * entities * entities  # the Gram matrix of the entities
        assert model.op_flops[i, :3].tolist() == pytest.approx([mlp, cross, dot])
        assert model.op_flops[i, 3] == 0
    assert model.max_flops == pytest.approx(float(model.op_flops.max(dim=1).values.sum()))


def test_zero_is_unavailable_in_the_last_block(tiny_feature_map):
    w = build(tiny_feature_map).architecture_weights()
    assert w[0].tolist() == pytest.approx([0.25] * 4) and w[1, 3] == 0 and w[1, :3].tolist() == pytest.approx([1 / 3] * 3)


def test_cost_loss_and_its_gradient_are_the_closed_form(tiny_feature_map, generator):
    lam = 0.7
    model = build(tiny_feature_map, cost_weight=lam, temperature=2.0, arch_lr_multiplier=3.0).double()
    with torch.no_grad():
        model.alpha_stored.copy_(torch.randn(model.alpha_stored.shape, dtype=torch.float64))
    out = model(random_batch(tiny_feature_map, 4, generator))
    alpha = (3.0 * model.alpha_stored).detach()
    flops = model.op_flops
    expected_total, grad = 0.0, torch.zeros_like(alpha)
    for i in range(2):
        ks = [0, 1, 2, 3] if i == 0 else [0, 1, 2]
        e = torch.exp(alpha[i, ks] / 2.0)
        w = e / e.sum()
        mean = float((w * flops[i, ks]).sum())
        expected_total += mean
        # d(sum_k w_k F_k)/d alpha_k = w_k (F_k - mean) / T; alpha = 3 * stored
        grad[i, ks] = 3.0 * w * (flops[i, ks] - mean) / 2.0
    assert float(out.aux_loss.detach()) == pytest.approx(lam * expected_total / model.max_flops, rel=1e-12)
    assert out.metrics["expected_flops"] == pytest.approx(expected_total)
    (g,) = torch.autograd.grad(out.aux_loss, model.alpha_stored)
    assert torch.allclose(g, lam * grad / model.max_flops, rtol=1e-10, atol=1e-14)


def test_no_cost_term_without_cost_weight(tiny_feature_map, generator):
    assert build(tiny_feature_map)(random_batch(tiny_feature_map, 4, generator)).aux_loss is None


def test_mixing_is_the_weighted_sum_of_the_projected_candidates(tiny_feature_map, generator):
    model = build(tiny_feature_map).double().eval()
    with torch.no_grad():
        model.alpha_stored.copy_(torch.randn(model.alpha_stored.shape, dtype=torch.float64))
    batch = random_batch(tiny_feature_map, 5, generator)
    w = model.architecture_weights()
    values = [model.embedding(batch).fields]
    for i in range(2):  # a loop over the candidates, zero left out by hand
        total = torch.zeros(5, 3, 4, dtype=torch.float64)
        for k in range(3):
            total = total + w[i, k] * model.projections[i][k](model.ops[i][k](values))
        values.append(total)
    want = model.heads(values[-1].flatten(1))
    assert torch.allclose(model(batch).logits, want, atol=1e-12)


def cfg_of(n_blocks=3, **extra):
    return SupernetConfig(choice_blocks=n_blocks, candidates=CANDIDATES, **extra)


def test_selection_keeps_the_heaviest_and_drops_blocks_where_zero_wins():
    cfg = cfg_of()
    w = [[0.1, 0.2, 0.3, 0.4],   # zero heaviest: dropped
         [0.5, 0.1, 0.3, 0.1],   # mlp, then dot
         [0.1, 0.1, 0.1, 0.7]]   # last block: zero never chosen; ties by candidate order
    assert selection(cfg, w, keep=1) == [[], [0], [0]]
    assert selection(cfg, w, keep=2) == [[], [0, 2], [0, 1]]
    blocks = derive_blocks(cfg, w, keep=2)
    assert [(b["name"], b["type"], b["inputs"]) for b in blocks] == [
        ("c1_mlp0", "mlp", ["emb"]), ("c1_dot2", "dot", ["emb"]),
        ("c2_mlp0", "mlp", ["emb", "c1_mlp0", "c1_dot2"]), ("c2_cross1", "cross", ["emb", "c1_mlp0", "c1_dot2"])]
    assert blocks[0]["width"] == 8 and blocks[3]["rank"] == 2


def test_derived_blocks_build_a_searched_model(tiny_feature_map, generator):
    blocks = derive_blocks(cfg_of(), [[0.4, 0.3, 0.2, 0.1]] * 3, keep=2)
    model = registry.build_model("searched", tiny_feature_map, {"embedding_dim": 4, "blocks": blocks})
    assert model(random_batch(tiny_feature_map, 3, generator)).logits.shape == (3, 2)


@pytest.mark.parametrize("weights, message", [([[1.0, 0, 0, 0]], "shape"), ([[0.25] * 4] * 3, "keep")])
def test_bad_weights_or_keep_are_named(weights, message):
    with pytest.raises(ValueError, match=message):
        selection(cfg_of(), weights, keep=0 if message == "keep" else 1)


@pytest.mark.parametrize("candidates, message", [
    ([{"type": "zero"}], "other than zero"),
    ([{"type": "mlp"}], "needs width"),
    ([{"type": "dot", "width": 3}], "takes no width"),
    ([{"type": "dot"}, {"type": "dot"}], "listed twice"),
    ([{"type": "mlp", "width": 4, "inputs": ["emb"]}], "set by the supernet"),
    ([{"type": "zero", "width": 2}], "takes no sizes"),
])
def test_bad_candidates_are_named(candidates, message):
    with pytest.raises(ValueError, match=message):
        SupernetConfig(candidates=candidates)


def test_a_path_runs_one_candidate_per_block(tiny_feature_map, generator):
    model = build(tiny_feature_map).double()
    batch = random_batch(tiny_feature_map, 5, generator)
    model.set_path([3, 1])  # zero in block 0, the low-rank cross in block 1
    out = model(batch)
    emb = model.embedding(batch).fields
    values = [emb, torch.zeros(5, 3, 4, dtype=torch.float64)]
    want = model.heads(model.projections[1][1](model.ops[1][1](values)).flatten(1))
    assert torch.allclose(out.logits, want, atol=1e-12) and out.aux_loss is None
    out.logits.sum().backward()
    used = {name for name, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("ops.1.1.") for n in used)
    assert not any(n.startswith(("ops.0.", "ops.1.0.", "ops.1.2.", "alpha")) for n in used)
    model.set_path(None)
    assert model(batch).aux_loss is None and model.path is None  # the mixture again (cost_weight 0)


@pytest.mark.parametrize("path", [[0], [0, 3], [4, 0]])
def test_a_path_outside_the_supernet_is_refused(tiny_feature_map, path):
    with pytest.raises(ValueError, match="one candidate per choice block"):
        build(tiny_feature_map).set_path(path)


def test_sampled_path_training_draws_allowed_paths(tiny_feature_map, generator, monkeypatch):
    model = build(tiny_feature_map, training="sampled_path").train()
    batches = [random_batch(tiny_feature_map, 4, generator) for _ in range(2)]
    drawn = []
    real = torch.randint

    def spy(high, size, **kw):
        drawn.append(high)
        return real(high, size, **kw)

    monkeypatch.setattr(torch, "randint", spy)
    out = model(batches[0])
    assert drawn == [4, 3] and out.aux_loss is None  # 4 candidates in block 0, zero left out of the last
    drawn.clear()
    model.eval()(batches[1])
    assert drawn == []  # evaluation runs the mixture
