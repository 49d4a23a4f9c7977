"""RankMixer: token mixing, per-token FFN, tokenizer, sequence attention, analytic counts,
ablation switches, variants, the describe CLI, and that the model learns a token interaction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.factories import make_feature_map, random_batch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.base import ModelOutput
from rankmixer.models.rankmixer import (
    RankMixer,
    RankMixerBackbone,
    RankMixerBlock,
    RankMixerConfig,
    describe,
    rankmixer_flops_per_sample,
    rankmixer_param_count,
)
from rankmixer.nn.embedding import EmbeddedFeatures, FeatureEmbedding
from rankmixer.nn.per_token_ffn import AUTO_IMPL, PerTokenFFN, SharedFFN, resolve_impl
from rankmixer.nn.token_mixing import TokenMixing, inverse_token_mixing, token_mixing
from rankmixer.nn.tokenizer import SequencePooling, Tokenizer, plan_semantic_sources

pytestmark = pytest.mark.usefixtures("single_thread")


def _fm(groups: dict[str, list[str]] | None = None, **kw) -> FeatureMap:
    fm = make_feature_map(**kw)
    fm.feature_groups = dict(groups or {})
    return fm


# ------------------------------------------------------------------------------------------
# token mixing
# ------------------------------------------------------------------------------------------
def _mixing_reference(x: torch.Tensor) -> torch.Tensor:
    """New token h = concat over t of head h of token t, with explicit loops."""
    B, T, D = x.shape
    dh = D // T
    out = torch.empty_like(x)
    for b in range(B):
        for h in range(T):
            for t in range(T):
                out[b, h, t * dh : (t + 1) * dh] = x[b, t, h * dh : (h + 1) * dh]
    return out


@pytest.mark.parametrize("T,D", [(2, 4), (4, 8), (3, 12), (8, 64)])
def test_token_mixing_matches_loop_reference_and_is_not_identity(T, D):
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(T))
    y = token_mixing(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _mixing_reference(x), rtol=0, atol=0)
    assert not torch.equal(y, x)


@pytest.mark.parametrize("T,D", [(2, 4), (4, 8), (5, 20), (16, 768)])
def test_token_mixing_is_a_permutation_and_its_own_inverse(T, D):
    B = 2
    x = torch.arange(B * T * D, dtype=torch.float64).view(B, T, D)
    y = token_mixing(x)
    # every element exactly once, and only within its own sample
    for b in range(B):
        assert torch.equal(y[b].flatten().sort().values, x[b].flatten())
    assert torch.equal(token_mixing(y), x)
    assert torch.equal(inverse_token_mixing(y), x)
    m = TokenMixing(T, D)
    assert torch.equal(m.inverse(m(x)), x)
    assert not list(m.parameters())


def test_token_mixing_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        token_mixing(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="divisible"):
        TokenMixing(3, 8)


# ------------------------------------------------------------------------------------------
# per-token FFN
# ------------------------------------------------------------------------------------------
def _reference_ffns(ffn: PerTokenFFN) -> list[nn.Sequential]:
    """T separate nn.Linear FFNs carrying ffn's weights."""
    w1, b1, w2, b2 = (p.detach() for p in ffn.stacked_weights())
    refs = []
    for t in range(ffn.num_tokens):
        l1, l2 = nn.Linear(ffn.dim, ffn.hidden), nn.Linear(ffn.hidden, ffn.dim)
        with torch.no_grad():
            l1.weight.copy_(w1[t].T)
            l1.bias.copy_(b1[t])
            l2.weight.copy_(w2[t].T)
            l2.bias.copy_(b2[t])
        refs.append(nn.Sequential(l1, nn.GELU(), l2))
    return refs


@pytest.mark.parametrize("impl", ["bmm", "fused", "split"])
def test_per_token_ffn_equals_separate_linear_ffns(impl):
    torch.manual_seed(0)
    T, D = 5, 12
    ffn = PerTokenFFN(T, D, expansion=2, impl=impl)
    assert ffn.impl == ("split" if impl == "split" else "bmm")  # storage layout
    x = torch.randn(7, T, D, requires_grad=True)
    assert ffn.forward_impl(x) == impl
    y = ffn(x)
    refs = _reference_ffns(ffn)
    expected = torch.stack([refs[t](x[:, t]) for t in range(T)], dim=1)
    torch.testing.assert_close(y, expected)
    # gradients as well: input, and every token's weights against its nn.Linear pair
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g, retain_graph=True)
    (gx_ref,) = torch.autograd.grad(expected, x, g, retain_graph=True)
    torch.testing.assert_close(gx, gx_ref)
    y.backward(g)
    expected.backward(g)
    def grad(p, t):  # stacked parameter, or one per token (split)
        return p.grad[t] if isinstance(p, torch.Tensor) else p[t].grad

    for t in (0, T - 1):
        torch.testing.assert_close(grad(ffn.w1, t), refs[t][0].weight.grad.T)
        torch.testing.assert_close(grad(ffn.b1, t), refs[t][0].bias.grad)
        torch.testing.assert_close(grad(ffn.w2, t), refs[t][2].weight.grad.T)
        torch.testing.assert_close(grad(ffn.b2, t), refs[t][2].bias.grad)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_fused_per_token_ffn_gradcheck_float64(activation):
    """The hand-written backward of the fused path against finite differences, in float64."""
    from rankmixer.nn.per_token_ffn import _FusedPerTokenFFN

    torch.manual_seed(0)
    T, D, H, B = 3, 4, 6, 5
    args = [torch.randn(B, T, D), torch.randn(T, D, H), torch.randn(T, H), torch.randn(T, H, D), torch.randn(T, D)]
    args = [a.double().requires_grad_() for a in args]
    f64 = torch.float64
    assert torch.autograd.gradcheck(lambda *a: _FusedPerTokenFFN.apply(*a, activation, f64), args)
    # a strided input (a token-axis view, as the block passes it) gives the same result
    x = args[0].detach().transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(_FusedPerTokenFFN.apply(x, *args[1:], activation, f64),
                               _FusedPerTokenFFN.apply(args[0], *args[1:], activation, f64))


def test_fused_bf16_casts_per_token_like_autocast():
    """Under bf16 autocast the fused path (per-token casts inside) gives the values and the
    fp32 gradients of bmm under autocast (which casts the stacked weights), to bf16 rounding."""
    torch.manual_seed(0)
    fused, bmm = PerTokenFFN(4, 16, impl="fused"), PerTokenFFN(4, 16, impl="bmm")
    bmm.load_state_dict(fused.state_dict())
    x = torch.randn(8, 4, 16)
    outs = []
    for ffn in (fused, bmm):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ffn(xi)
        assert y.dtype == torch.bfloat16
        (y.float() ** 2).sum().backward()
        assert ffn.w1.grad.dtype == torch.float32 and xi.grad.dtype == torch.float32
        outs.append((y.float(), xi.grad, ffn.w1.grad, ffn.b1.grad, ffn.w2.grad, ffn.b2.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.02)


def test_fused_falls_back_to_bmm_where_it_cannot_run():
    x = torch.randn(2, 3, 8)
    assert PerTokenFFN(3, 8, impl="fused", activation="silu").forward_impl(x) == "bmm"  # no fused silu
    drop = PerTokenFFN(3, 8, impl="fused", dropout=0.2)
    assert drop.forward_impl(x) == "bmm"  # hidden dropout in training
    assert drop.eval().forward_impl(x) == "fused"


def test_bmm_and_split_compute_the_same_function():
    torch.manual_seed(0)
    a = PerTokenFFN(4, 8, expansion=3, impl="bmm")
    b = PerTokenFFN(4, 8, expansion=3, impl="split")
    b.load_stacked(*a.stacked_weights())
    x = torch.randn(6, 4, 8)
    torch.testing.assert_close(a(x), b(x))
    (a(x) ** 2).sum().backward()
    (b(x) ** 2).sum().backward()
    torch.testing.assert_close(a.w1.grad[2], b.w1[2].grad)
    torch.testing.assert_close(a.b2.grad[1], b.b2[1].grad)
    assert len(list(b.parameters())) == 4 * 4  # T separate parameters per tensor


@pytest.mark.parametrize("impl", ["bmm", "fused", "split"])
@pytest.mark.parametrize("which", ["w1", "b1", "w2", "b2"])
def test_changing_one_tokens_weights_changes_only_that_token(impl, which):
    torch.manual_seed(1)
    T, D = 4, 8
    ffn = PerTokenFFN(T, D, expansion=2, impl=impl)
    x = torch.randn(5, T, D)
    before = ffn(x).detach()
    t = 2
    with torch.no_grad():
        getattr(ffn, which)[t].add_(0.5)
    after = ffn(x).detach()
    changed = (after - before).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [i == t for i in range(T)]


def test_per_token_ffn_auto_and_bf16():
    assert resolve_impl("auto", torch.float32) == AUTO_IMPL[(True, torch.float32)]
    assert resolve_impl("auto", torch.bfloat16, grad=False) == AUTO_IMPL[(False, torch.bfloat16)]
    ffn = PerTokenFFN(2, 4, impl="auto")
    assert ffn.forward_impl(torch.zeros(1, 2, 4)) == AUTO_IMPL[(True, torch.float32)]  # weights need grad
    with torch.no_grad():
        assert ffn.forward_impl(torch.zeros(1, 2, 4)) == AUTO_IMPL[(False, torch.float32)]
    with pytest.raises(ValueError, match="impl"):
        PerTokenFFN(2, 4, impl="loop")
    torch.manual_seed(0)
    for impl in ("bmm", "fused", "split"):
        ffn = PerTokenFFN(3, 16, impl=impl)
        x = torch.randn(4, 3, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ffn(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), ffn(x), rtol=0.05, atol=0.05)


def test_shared_ffn_is_one_function_for_all_tokens():
    torch.manual_seed(0)
    ffn = SharedFFN(8, expansion=2)
    x = torch.randn(3, 4, 8)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm])
    per_token = PerTokenFFN(4, 8, expansion=2)
    assert sum(p.numel() for p in per_token.parameters()) == 4 * sum(p.numel() for p in ffn.parameters())


# ------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------
def _fields_leaf(fm: FeatureMap, B: int, d: int, seed: int = 0) -> tuple[EmbeddedFeatures, FeatureEmbedding]:
    emb = FeatureEmbedding(fm, d)
    out = emb(random_batch(fm, B, torch.Generator().manual_seed(seed)))
    out.fields = out.fields.detach().requires_grad_(True)
    return out, emb


GROUPINGS = {
    "none": {},
    "one": {"user": ["s0", "d0"]},
    "three": {"user": ["s0", "d0", "hist"], "item": ["s1", "s2", "tags"], "ctx": ["d1"]},
    "many": {f"g{i}": [n] for i, n in enumerate(["s0", "s1", "s2", "d0", "d1", "tags", "s0_bag", "hist", "clicks"])},
}


@pytest.mark.parametrize("groups", list(GROUPINGS), ids=list(GROUPINGS))
@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13])
def test_semantic_tokenizer_exactly_T_tokens_every_field_once(groups, T):
    fm = _fm(GROUPINGS[groups])
    d, D = 4, 6
    torch.manual_seed(T)
    ef, emb = _fields_leaf(fm, 3, d)
    tok = Tokenizer(fm, emb.field_names, d, T, D, "semantic")
    x = tok(ef)
    assert x.shape == (3, T, D)
    # each element of each field feeds exactly one token (gradients of the tokens one by one)
    owners = torch.zeros(ef.fields.shape[1:], dtype=torch.long)
    for t in range(T):
        (g,) = torch.autograd.grad(x[:, t].sum(), ef.fields, retain_graph=True)
        used = (g != 0).any(dim=0)
        owners += used.long()
    assert torch.equal(owners, torch.ones_like(owners))
    # and by construction: contiguous, disjoint slices covering e, fields a permutation
    order, sources = plan_semantic_sources(emb.field_names, fm.feature_groups, d, T)
    assert sorted(order) == sorted(emb.field_names)
    assert sources[0].start == 0 and sources[-1].end == len(order) * d
    assert all(a.end == b.start and a.width > 0 for a, b in zip(sources, sources[1:]))


def test_semantic_plan_split_and_merge_rules():
    names = ["a1", "a2", "a3", "b1", "c1", "c2"]
    groups = {"A": ["a1", "a2", "a3"], "B": ["b1"], "C": ["c1", "c2"]}
    d = 4
    order, s = plan_semantic_sources(names, groups, d, 3)
    assert order == names and [(x.start, x.end) for x in s] == [(0, 12), (12, 16), (16, 24)]
    # merge: widths 12, 4, 8 -> the adjacent pair with the smallest sum is B+C (12 < 16)
    _, s = plan_semantic_sources(names, groups, d, 2)
    assert [(x.name, x.start, x.end) for x in s] == [("A", 0, 12), ("B+C", 12, 24)]
    # split: the widest (A, 3 fields) at the field boundary nearest its middle (tie -> lower)
    _, s = plan_semantic_sources(names, groups, d, 4)
    assert [(x.start, x.end) for x in s] == [(0, 4), (4, 12), (12, 16), (16, 24)]
    # a single-field source is cut inside the field
    _, s = plan_semantic_sources(["x"], {}, 6, 3)
    assert [(x.start, x.end) for x in s] == [(0, 1), (1, 3), (3, 6)]
    # fields outside every group go to "other", after the groups, in field order
    order, s = plan_semantic_sources(["x", "y", "z"], {"G": ["z"]}, 2, 2)
    assert order == ["z", "x", "y"] and [x.name for x in s] == ["G", "other"]
    # deterministic
    assert plan_semantic_sources(names, groups, d, 7) == plan_semantic_sources(names, groups, d, 7)
    with pytest.raises(ValueError, match="two feature groups"):
        plan_semantic_sources(names, {"A": ["a1"], "B": ["a1"]}, d, 2)
    with pytest.raises(ValueError, match="not a field"):
        plan_semantic_sources(names, {"A": ["nope"]}, d, 2)
    with pytest.raises(ValueError, match="cannot make"):
        plan_semantic_sources(["x"], {}, 2, 3)


def test_semantic_tokenizer_projects_each_source_with_its_own_linear():
    fm = _fm(GROUPINGS["three"])
    d, T, D = 4, 3, 5
    torch.manual_seed(0)
    ef, emb = _fields_leaf(fm, 4, d)
    tok = Tokenizer(fm, emb.field_names, d, T, D, "semantic")
    # widths 12, 12, 4 (ctx) and 8 (other: s0_bag, clicks): ctx and other merge
    assert [s.name for s in tok.sources] == ["user", "item", "ctx+other"]
    idx = {n: i for i, n in enumerate(emb.field_names)}
    expected = [["s0", "d0", "hist"], ["s1", "s2", "tags"], ["d1", "s0_bag", "clicks"]]
    for t, names in enumerate(expected):
        e = torch.cat([ef.fields[:, idx[n]] for n in names], dim=1)
        torch.testing.assert_close(tok(ef)[:, t], tok.proj[t](e))


@pytest.mark.parametrize("T", [1, 4, 7])
def test_auto_tokenizer_concat_pad_chunk(T):
    fm = _fm()
    d, D = 4, 6
    torch.manual_seed(0)
    ef, emb = _fields_leaf(fm, 3, d)
    tok = Tokenizer(fm, emb.field_names, d, T, D, "auto")
    F_ = len(emb.field_names)
    c = -(-F_ * d // T)
    assert tok.chunk == c and tok.pad == T * c - F_ * d
    e = F.pad(ef.fields.flatten(1), (0, tok.pad))
    expected = torch.stack([e[:, t * c : (t + 1) * c] @ tok.weight[t] + tok.bias[t] for t in range(T)], dim=1)
    torch.testing.assert_close(tok(ef), expected)


# ------------------------------------------------------------------------------------------
# sequence pooling
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("softmax", [True, False])
def test_target_attention_equals_slow_loop(softmax):
    fm = _fm()
    d = 4
    torch.manual_seed(0)
    emb = FeatureEmbedding(fm, d, init_std=0.5)
    batch = random_batch(fm, 6, torch.Generator().manual_seed(3))
    batch.sequences["hist"][0] = 0  # an all-pad history
    ef = emb(batch)
    pool = SequencePooling(fm, emb.field_names, d, "target_attention", {"clicks": "s2"}, [8], softmax=softmax)
    assert pool.targets == {"hist": "s1", "clicks": "s2"}  # share_with by default, explicit otherwise
    out = pool(ef)
    idx = {n: i for i, n in enumerate(emb.field_names)}
    expected = ef.fields.clone()
    for seq, target in pool.targets.items():
        hist, mask = ef.sequences[seq]
        unit = pool.units[seq]
        for b in range(hist.shape[0]):
            q = ef.fields[b, idx[target]]
            real = [l for l in range(hist.shape[1]) if mask[b, l]]
            scores = [unit(torch.cat([hist[b, l], q, hist[b, l] - q, hist[b, l] * q]))[0] for l in real]
            if not real:
                pooled = torch.zeros(d)
            else:
                s = torch.stack(scores)
                w = torch.softmax(s, 0) if softmax else s
                pooled = sum(w[i] * hist[b, l] for i, l in enumerate(real))
            expected[b, idx[seq]] = pooled
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[0, idx["hist"]], torch.zeros(d))
    hist, mask = ef.sequences["hist"]
    w = pool.attention_weights("hist", hist, mask, ef.fields[:, idx["s1"]])
    assert torch.all(w[~mask] == 0)
    if softmax:
        has = mask.any(dim=1)
        torch.testing.assert_close(w.sum(dim=1)[has], torch.ones(int(has.sum())))
    # the other fields are untouched, and the order is kept
    others = [i for n, i in idx.items() if n not in pool.targets]
    assert torch.equal(out[:, others], ef.fields[:, others])
    assert not torch.allclose(out[:, idx["clicks"]], ef.fields[:, idx["clicks"]])


def test_target_attention_without_target_keeps_mean_and_rejects_unknown_names():
    fm = _fm()
    emb = FeatureEmbedding(fm, 4)
    pool = SequencePooling(fm, emb.field_names, 4, "target_attention")
    assert pool.targets == {"hist": "s1"} and pool.mean_sequences == ["clicks"]
    with pytest.raises(ValueError, match="not a sequence"):
        SequencePooling(fm, emb.field_names, 4, "target_attention", {"s0": "s1"})
    with pytest.raises(ValueError, match="not a field"):
        SequencePooling(fm, emb.field_names, 4, "target_attention", {"clicks": "nope"})


# ------------------------------------------------------------------------------------------
# analytic counts
# ------------------------------------------------------------------------------------------
def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["rankmixer-100m", "rankmixer-1b", "rankmixer-100m-moe", "rankmixer-1b-moe"])
def test_param_count_of_big_variants_on_meta(name):
    fm = _fm(GROUPINGS["three"])
    cfg = registry.parse_config(name, {})
    with torch.device("meta"):
        model = registry.build_model(name, fm, cfg)
        backbone = RankMixerBackbone(cfg)
    assert all(p.device.type == "meta" for p in model.parameters())
    counts = rankmixer_param_count(cfg, fm)
    assert _n_params(model) == counts["total"]
    assert _n_params(backbone) == counts["blocks"]
    assert _n_params(model.embedding) == counts["embedding"]
    assert _n_params(model.tokenizer) == counts["tokenizer"] + counts["sequence_pooling"]
    T, D, L, k = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.expansion
    if cfg.moe is None:  # the paper's leading term 2kLTD^2 (biases and LayerNorms on top)
        assert counts["paper_estimate"] == 2 * k * L * T * D * D
        assert 0 < counts["blocks"] - counts["paper_estimate"] < 0.002 * counts["blocks"]
    else:
        assert counts["blocks"] > cfg.moe.num_experts * 0.99 * counts["paper_estimate"]


def test_param_count_from_token_widths_and_sizes():
    cfg = registry.parse_config("rankmixer-100m", {})
    assert (cfg.num_tokens, cfg.hidden_dim, cfg.num_layers) == (16, 768, 2)
    cfg1b = registry.parse_config("rankmixer-1b", {})
    assert (cfg1b.num_tokens, cfg1b.hidden_dim, cfg1b.num_layers) == (32, 1536, 2)
    widths = [40] * 16
    c = rankmixer_param_count(cfg, widths, num_tasks=3)
    assert c["tokenizer"] == 16 * (40 * 768 + 768) and c["heads"] == 768 * 3 + 3
    assert 100e6 < c["blocks"] < 130e6 and 0.85e9 < rankmixer_param_count(cfg1b)["blocks"] < 1.2e9
    with pytest.raises(ValueError, match="widths"):
        rankmixer_param_count(cfg, [40] * 3)


FLOP_CASES = {
    "default": {},
    "auto_tokenizer": {"tokenizer": "auto"},
    "target_attention": {"sequence_pooling": "target_attention", "sequence_targets": {"clicks": "s2"}},
    "head_towers": {"head_hidden": [16, 8]},
    "shared_ffn": {"ffn": "shared"},
    "no_mixing_no_ln": {"token_mixing": "none", "layer_norm": False},
    "self_attention": {"token_mixing": "self_attention"},
    "moe": {"moe": {"num_experts": 3}},
}


@pytest.mark.parametrize("case", list(FLOP_CASES), ids=list(FLOP_CASES))
def test_flops_match_flop_counter(case):
    fm = _fm(GROUPINGS["three"])
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, FLOP_CASES[case])
    cfg = model.cfg
    B = 16
    batch = random_batch(fm, B)
    with FlopCounterMode(display=False) as fc:
        model(batch)
    counted = fc.get_total_flops() / B
    flops = rankmixer_flops_per_sample(cfg, fm)
    expected = flops["forward"]
    if case == "self_attention":
        # FlopCounterMode does not see the CPU flash-attention kernel: Q K^T and A V
        expected -= cfg.num_layers * 4 * cfg.num_tokens**2 * cfg.hidden_dim
    assert counted == expected
    assert _n_params(model) == rankmixer_param_count(cfg, fm)["total"]
    T, D, L, k = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.expansion
    if case == "default":  # the block FLOPs are exactly the paper's 4kLTD^2
        assert flops["blocks"] == flops["paper_estimate"] == 4 * k * L * T * D * D
        assert flops["train"] == 3 * flops["forward"]


# ------------------------------------------------------------------------------------------
# the model, ablations, variants
# ------------------------------------------------------------------------------------------
def _block_reference(block: RankMixerBlock, cfg: RankMixerConfig, x: torch.Tensor) -> torch.Tensor:
    """The block written out from the paper's equations and the switches."""
    ln1 = (lambda z: F.layer_norm(z, z.shape[-1:], block.norm1.weight, block.norm1.bias)) if cfg.layer_norm else (lambda z: z)
    ln2 = (lambda z: F.layer_norm(z, z.shape[-1:], block.norm2.weight, block.norm2.bias)) if cfg.layer_norm else (lambda z: z)
    if cfg.token_mixing == "none":
        s = ln1(x)
    else:
        m = _mixing_reference(x) if cfg.token_mixing == "mixing" else block.mixer(x)
        s = ln1(m + x if cfg.residual else m)
    if cfg.ffn == "per_token":
        refs = _reference_ffns(block.ffn)
        v = torch.stack([refs[t](s[:, t]) for t in range(cfg.num_tokens)], dim=1)
    else:
        v = torch.stack([block.ffn(s[:, t]) for t in range(cfg.num_tokens)], dim=1)
    return ln2(v + s if cfg.residual else v)


ABLATIONS = {
    "default": {},
    "no_mixing": {"token_mixing": "none"},
    "self_attention": {"token_mixing": "self_attention"},
    "shared_ffn": {"ffn": "shared"},
    "no_residual": {"residual": False},
    "no_layer_norm": {"layer_norm": False},
    "split_ffn": {"ffn_impl": "split"},
}


@pytest.mark.parametrize("case", list(ABLATIONS), ids=list(ABLATIONS))
def test_block_follows_equations_under_every_switch(case):
    cfg = RankMixerConfig(num_tokens=4, hidden_dim=16, expansion=2, **ABLATIONS[case])
    torch.manual_seed(0)
    block = RankMixerBlock(cfg)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for m in block.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    x = torch.randn(5, 4, 16)
    y, aux, metrics = block(x)
    assert aux is None and metrics == {}
    torch.testing.assert_close(y, _block_reference(block, cfg, x))


@pytest.mark.parametrize("case", [c for c in ABLATIONS if c != "default"])
def test_every_ablation_builds_runs_and_changes_the_output(case):
    fm = _fm(GROUPINGS["three"])
    torch.manual_seed(0)
    base = registry.build_model("rankmixer-tiny", fm)
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, ABLATIONS[case])
    assert getattr(model.cfg, next(iter(ABLATIONS[case]))) == next(iter(ABLATIONS[case].values()))
    # the same weights wherever the two models share a parameter
    own = model.state_dict()
    if case == "split_ffn":
        for i, blk in enumerate(base.backbone.blocks):
            model.backbone.blocks[i].ffn.load_stacked(*blk.ffn.stacked_weights())
        own = model.state_dict()
    shared = {k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    batch = random_batch(fm, 16)
    out = model(batch)
    assert out.logits.shape == (16, 2)
    F.binary_cross_entropy_with_logits(out.logits, batch.labels).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "embedding" not in n)
    with torch.no_grad():
        ref = base(batch).logits
        mine = model(batch).logits
    if case == "split_ffn":  # an implementation, not an ablation: same function
        torch.testing.assert_close(mine, ref)
    else:
        assert not torch.allclose(mine, ref, atol=1e-5)


def test_without_token_mixing_tokens_stay_separate():
    """Mixing routes token u's information into every token; without it the blocks keep
    token t's output a function of token t's input only."""
    for mixing, expect_cross in (("mixing", True), ("none", False), ("self_attention", True)):
        cfg = RankMixerConfig(num_tokens=4, hidden_dim=16, expansion=2, token_mixing=mixing)
        torch.manual_seed(0)
        bb = RankMixerBackbone(cfg)
        x = torch.randn(3, 4, 16, requires_grad=True)
        y, _, _ = bb(x)
        # a random direction: the plain sum of a LayerNorm output is constant
        r = torch.randn(3, 16)
        (g,) = torch.autograd.grad((y[:, 0] * r).sum(), x)
        assert g[:, 0].abs().sum() > 0
        cross = g[:, 1:].abs().amax() > 1e-6
        assert bool(cross) == expect_cross, mixing


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        registry.parse_config("rankmixer", {"num_tokens": 3, "hidden_dim": 16})
    registry.parse_config("rankmixer", {"num_tokens": 3, "hidden_dim": 16, "token_mixing": "none"})
    with pytest.raises(ValueError, match="per_token"):
        registry.parse_config("rankmixer", {"ffn": "shared", "moe": {"num_experts": 2}})
    with pytest.raises(ValueError, match="token_mixng"):
        registry.parse_config("rankmixer-tiny", {"token_mixng": "none"})


def test_variants_in_registry():
    models = registry.available()
    for size in ("tiny", "100m", "1b"):
        for suffix in ("", "-moe"):
            name = f"rankmixer-{size}{suffix}"
            assert name in models and models[name].base == "rankmixer" and models[name].summary
    assert "concat-mlp" in models and "concat-mlp-100m" in models
    assert models["rankmixer"].summary.startswith("RankMixer") and "(" in models["rankmixer"].summary
    cfg = registry.parse_config("rankmixer-100m", {"dropout": 0.1, "hidden_dim": 512})
    assert (cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.dropout) == (16, 512, 2, 0.1)
    assert cfg.moe is None
    # nested mappings merge key by key; None switches MoE off
    moe = registry.parse_config("rankmixer-100m-moe", {"moe": {"num_experts": 16}}).moe
    assert moe.num_experts == 16 and moe.target_active_ratio == 0.125
    assert registry.parse_config("rankmixer-100m-moe", {"moe": None}).moe is None
    # the base model's defaults are untouched by the variants
    assert registry.parse_config("rankmixer", {}) == RankMixerConfig()
    fm = _fm()
    model = registry.build_model("rankmixer-tiny", fm, {"num_layers": 1})
    assert isinstance(model, RankMixer) and len(model.backbone.blocks) == 1
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_variant("rankmixer-tiny", "rankmixer", {"num_layers": 5}, "other")


def test_tiny_model_output_and_bf16():
    fm = _fm(GROUPINGS["three"])
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, {"sequence_pooling": "target_attention"})
    batch = random_batch(fm, 8)
    out = model(batch)
    assert isinstance(out, ModelOutput) and out.logits.shape == (8, 2)
    assert out.aux_loss is None and out.metrics == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(batch)
    torch.testing.assert_close(out16.logits.float(), out.logits, rtol=0.1, atol=0.1)


def test_concat_mlp():
    fm = _fm()
    torch.manual_seed(0)
    model = registry.build_model("concat-mlp", fm, {"embedding_dim": 4, "dnn_hidden": [16, 8]})
    batch = random_batch(fm, 8)
    out = model(batch)
    assert out.logits.shape == (8, 2)
    n_in = len(model.embedding.field_names) * 4
    assert _n_params(model.dnn) == n_in * 16 + 16 + 16 * 8 + 8
    cfg = registry.parse_config("concat-mlp-100m", {})
    dense = sum(a * b + b for a, b in zip([600] + cfg.dnn_hidden[:-1], cfg.dnn_hidden))
    assert 90e6 < dense < 130e6  # similar size to rankmixer-100m's backbone


def test_moe_variant_runs_with_aux_loss_and_metrics():
    pytest.importorskip("rankmixer.nn.moe")
    fm = _fm(GROUPINGS["three"])
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny-moe", fm)
    assert model.cfg.moe.num_experts == 4
    batch = random_batch(fm, 16)
    model.train()
    out = model(batch)
    assert out.logits.shape == (16, 2)
    assert out.aux_loss is not None and out.aux_loss.dim() == 0 and out.aux_loss.requires_grad
    assert 0.0 <= out.metrics["moe/active_ratio"] <= 1.0
    assert "moe/l0/active_ratio" in out.metrics and "moe/l1/active_ratio" in out.metrics
    ratios = [out.metrics["moe/l0/active_ratio"], out.metrics["moe/l1/active_ratio"]]
    assert out.metrics["moe/active_ratio"] == pytest.approx(sum(ratios) / 2)
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels) + out.aux_loss
    loss.backward()
    model.eval()
    with torch.no_grad():
        ev = model(batch)
    assert ev.logits.shape == (16, 2) and torch.isfinite(ev.logits).all()


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def test_cli_models_describe(tmp_path):
    from typer.testing import CliRunner

    from rankmixer.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["models"], terminal_width=300)
    assert res.exit_code == 0 and "rankmixer-1b-moe" in res.output
    res = runner.invoke(app, ["models", "--describe", "rankmixer-1b"], terminal_width=300)
    assert res.exit_code == 0, res.output
    blocks = rankmixer_param_count(registry.parse_config("rankmixer-1b", {}))["blocks"]
    flops = rankmixer_flops_per_sample(registry.parse_config("rankmixer-1b", {}))["blocks"]
    assert f"{blocks:,}" in res.output and f"{flops:,}" in res.output and "hidden_dim" in res.output
    fm = _fm(GROUPINGS["three"])
    fm.save(tmp_path / "feature_map.json")
    res = runner.invoke(app, ["models", "--describe", "rankmixer-100m", "--feature-map", str(tmp_path), "-o", "num_layers=3"],
                        terminal_width=300)
    assert res.exit_code == 0, res.output
    total = describe("rankmixer-100m", {"num_layers": 3}, fm)["params"]["total"]
    assert f"{total:,}" in res.output
    res = runner.invoke(app, ["models", "--describe", "nope"], terminal_width=300)
    assert res.exit_code == 2 and "unknown model" in res.output


# ------------------------------------------------------------------------------------------
# learning
# ------------------------------------------------------------------------------------------
def _xor_data(n: int, seed: int) -> tuple[FeatureMap, Batch]:
    """4 sparse features, each its own feature group (so its own token); the label is the XOR
    of the parities of s0 and s1 (a pure interaction of two tokens); s2, s3 are noise."""
    fm = make_feature_map(num_tasks=1, n_sparse=4, n_dense=0, bags=False, sequences=False, sparse_vocab=[12] * 4)
    fm.feature_groups = {f"g{i}": [f"s{i}"] for i in range(4)}
    g = torch.Generator().manual_seed(seed)
    sparse = torch.randint(2, 12, (n, 4), generator=g)
    y = ((sparse[:, 0] % 2) ^ (sparse[:, 1] % 2)).float().unsqueeze(1)
    return fm, Batch(dense=torch.zeros(n, 0), sparse=sparse, labels=y)


def _fit_auc(fm: FeatureMap, batch: Batch, overrides: dict, steps: int = 150) -> float:
    torch.manual_seed(0)
    model = registry.build_model(
        "rankmixer-tiny", fm, {"num_tokens": 4, "hidden_dim": 32, "embedding_dim": 8, **overrides}
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch).logits, batch.labels).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        p = model(batch).logits.squeeze(1)
    return roc_auc_score(batch.labels.squeeze(1).numpy(), p.numpy())


def test_learns_planted_token_interaction():
    fm, batch = _xor_data(1024, seed=0)
    with_mixing = _fit_auc(fm, batch, {})
    # without mixing the tokens never meet: the logit is a sum of per-token terms, which cannot
    # express an XOR of two tokens
    without = _fit_auc(fm, batch, {"token_mixing": "none"})
    assert with_mixing > 0.98, with_mixing
    assert without < 0.75, without
