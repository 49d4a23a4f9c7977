"""InterFormer (models/interformer.py): every interaction with one and two behaviours, pad
invariance, empty histories, no behaviour at all, FLOPs of the attention counted by the one
counter against a hand count, and ONNX export scoring raw histories like PyTorch."""

from __future__ import annotations


import pytest
import torch
from tests.factories import check_output_and_gradients, make_feature_map, random_batch, small_model

from rankmixer.data.feature_map import BehaviourFieldInfo, FeatureInfo
from rankmixer.models import registry
from rankmixer.models.flops import count_flops
from rankmixer.models.interformer import InteractionArch, InterFormer

pytestmark = pytest.mark.usefixtures("single_thread")

LENGTHS = [0, 1, 3, 6, 2, 5]  # per row; row 0 has an empty history


def behaviour_map(num_behaviours: int = 1):
    """make_feature_map() plus behaviours: ``hist`` (item shares ``s1``; own ``type``; max_len 6)
    and, second, ``buys`` (cat shares ``s2``; max_len 4)."""
    fm = make_feature_map()
    fm.features.append(FeatureInfo("hist", "behaviour", max_len=6, fields=[
        BehaviourFieldInfo("item", "s1", 7, share_with="s1"), BehaviourFieldInfo("type", "hist__type", 5)]))
    if num_behaviours > 1:
        fm.features.append(FeatureInfo("buys", "behaviour", max_len=4, fields=[
            BehaviourFieldInfo("cat", "s2", 5, share_with="s2")]))
    return fm


def behaviour_batch(fm, lengths=LENGTHS, seed=0):
    """A random batch of ``fm`` with behaviours of the given lengths (``buys``: at most 4),
    padded with 0 at the end."""
    g = torch.Generator().manual_seed(seed)
    batch = random_batch(fm, len(lengths), g)
    for f in fm.behaviours:
        cols = [torch.randint(1, b.vocab_size, (len(lengths), f.max_len), generator=g) for b in f.fields]
        n = torch.tensor(lengths).clamp_max(f.max_len)
        batch.behaviours[f.name] = torch.stack(cols, dim=-1) * (torch.arange(f.max_len)[None] < n[:, None])[..., None]
    return batch


@pytest.mark.parametrize("num_behaviours", [1, 2])
@pytest.mark.parametrize("interaction", ["dot", "dcnv2", "dhen"])
def test_every_interaction_trains_with_behaviours(interaction, num_behaviours):
    fm = behaviour_map(num_behaviours)
    model = small_model("interformer", fm, interaction=interaction).train()
    assert (model.merge is not None) == (num_behaviours > 1)
    check_output_and_gradients("interformer", model, behaviour_batch(fm), fm.num_tasks)


@pytest.mark.parametrize("kind", ["dot", "dcnv2"])
def test_interaction_arch_matches_its_formula(kind):
    """``X' = LN(X + MLP(Interaction([X || S_sum W])))`` written out per row in float64."""
    torch.manual_seed(0)
    n, m, d, ds = 3, 2, 4, 6
    cfg = registry.parse_config("interformer", {"embedding_dim": d, "seq_dim": ds, "interaction": kind,
                                                "interaction_hidden": [5]})
    arch = InteractionArch(n, m, d, cfg).double()
    x, s_sum = torch.randn(2, n, d, dtype=torch.float64), torch.randn(2, m, ds, dtype=torch.float64)
    got = arch(x, s_sum)
    lin1, lin2 = arch.mlp.layers[0], arch.mlp.layers[2]
    for b in range(2):
        tokens = [x[b, i] for i in range(n)] + [arch.project.weight @ s_sum[b, j] + arch.project.bias for j in range(m)]
        flat = torch.cat(tokens)
        if kind == "dot":
            pairs = [tokens[i] @ tokens[j] for i in range(n + m) for j in range(i + 1, n + m)]
            y = torch.cat([flat, torch.stack(pairs)])
        else:
            y = flat * (arch.op.w.weight @ flat + arch.op.w.bias) + flat
        out = lin2.weight @ torch.relu(lin1.weight @ y + lin1.bias) + lin2.bias
        for i in range(n):
            z = x[b, i] + out[i * d : (i + 1) * d]
            expected = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + 1e-5)
            torch.testing.assert_close(got[b, i], expected)


def double_model(fm, **overrides):
    model = small_model("interformer", fm, **overrides).double().eval()
    with torch.no_grad():  # embeddings large enough that positions differ
        model.embedding.weight.normal_(0.0, 0.5)
        model.embedding.weight[0].zero_()
    return model


@pytest.mark.parametrize("num_behaviours", [1, 2])
def test_appended_pad_positions_leave_the_output_unchanged(num_behaviours):
    fm = behaviour_map(num_behaviours)
    model = double_model(fm)
    batch = behaviour_batch(fm)
    with torch.no_grad():
        ref = model(batch).logits
        for name, ids in batch.behaviours.items():
            batch.behaviours[name] = torch.cat([ids, torch.zeros(ids.shape[0], 3, ids.shape[2], dtype=ids.dtype)], 1)
        torch.testing.assert_close(model(batch).logits, ref, rtol=0, atol=1e-12)


def test_output_depends_on_the_history_and_its_order():
    fm = behaviour_map()
    model = double_model(fm)
    batch = behaviour_batch(fm)
    with torch.no_grad():
        ref = model(batch).logits
        ids = batch.behaviours["hist"].clone()
        ids[:, [0, 1]] = ids[:, [1, 0]]  # the two oldest swapped (rows 0 and 1 have fewer: no change)
        ids[1] = batch.behaviours["hist"][1]
        batch.behaviours["hist"] = ids
        changed = (model(batch).logits - ref).abs().sum(dim=1)
    # the same set of behaviours in another order scores differently (RoPE positions)
    assert (changed[2:] > 1e-9).all() and (changed[:2] < 1e-12).all()


def test_empty_histories_give_finite_outputs_and_gradients():
    fm = behaviour_map(2)
    model = small_model("interformer", fm).train()
    batch = behaviour_batch(fm, lengths=[0, 0, 0, 0])
    out = model(batch).logits
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_without_behaviours_it_is_the_interaction_arch_alone():
    fm = make_feature_map()
    model = small_model("interformer", fm)
    assert not model.has_sequence and not hasattr(model, "sequence")
    assert model.mlp.in_features == 4 * 8  # X_sum only: num_summary (4) tokens of width 8
    assert model(random_batch(fm, 3)).logits.shape == (3, 2)


def test_attention_flops_are_counted_on_the_padded_length():
    """Appending ``extra`` pad positions costs, by hand: the projection of each position, per
    layer the personalised FFN, qkv and output maps of each token and the attention
    ``4 T^2 d_s`` (``T = num_cls + L``), per cross arch the PMA's keys/values and scores."""
    fm = behaviour_map()
    cfg = dict(seq_dim=8, num_layers=2, num_cls=4, num_pma=2)
    model = small_model("interformer", fm, **cfg).eval()
    ds, d, F, layers, n_cls, n_pma = 8, 8, 2, 2, 4, 2

    def by_hand(L):
        T = n_cls + L
        return (2 * F * d * ds * L + layers * (10 * ds * ds * T + 4 * T * T * ds)
                + (layers + 1) * (4 * ds * ds * L + 4 * n_pma * L * ds))

    batch = behaviour_batch(fm)
    rows, L = batch.behaviours["hist"].shape[:2]
    with torch.no_grad():
        before = count_flops(lambda: model(batch))
        extra = 5
        ids = batch.behaviours["hist"]
        batch.behaviours["hist"] = torch.cat([ids, torch.zeros(rows, extra, 2, dtype=ids.dtype)], dim=1)
        after = count_flops(lambda: model(batch))
    assert after - before == rows * (by_hand(L + extra) - by_hand(L))


def test_typed_config_and_errors():
    fm = behaviour_map()
    with pytest.raises(ValueError, match="even width"):
        small_model("interformer", fm, seq_dim=6, num_heads=2)
    with pytest.raises(ValueError, match="at least 1"):
        small_model("interformer", fm, num_cls=0, num_pma=0, num_recent=0)
    assert isinstance(small_model("interformer", fm), InterFormer)
