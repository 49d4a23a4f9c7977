"""RankMixer's tokenizer and sequence pooling (``nn/tokenizer.py``): exactly T tokens using
every field element once, the semantic plan's split and merge rules, the auto tokenizer's
chunks, and DIN-style target attention against a slow loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.factories import THREE_GROUPS, make_feature_map, random_batch

from rankmixer.data.feature_map import FeatureMap
from rankmixer.nn.embedding import EmbeddedFeatures, FeatureEmbedding
from rankmixer.nn.tokenizer import SequencePooling, Tokenizer, plan_semantic_sources

pytestmark = pytest.mark.usefixtures("single_thread")


def _fields_leaf(fm: FeatureMap, B: int, d: int, seed: int = 0) -> tuple[EmbeddedFeatures, FeatureEmbedding]:
    emb = FeatureEmbedding(fm, d)
    out = emb(random_batch(fm, B, torch.Generator().manual_seed(seed)))
    out.fields = out.fields.detach().requires_grad_(True)
    return out, emb


GROUPINGS = {
    "none": {},
    "one": {"user": ["s0", "d0"]},
    "three": THREE_GROUPS,
    "many": {f"g{i}": [n] for i, n in enumerate(["s0", "s1", "s2", "d0", "d1", "tags", "s0_bag", "hist", "clicks"])},
}


@pytest.mark.parametrize("groups", list(GROUPINGS), ids=list(GROUPINGS))
@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13])
def test_semantic_tokenizer_exactly_T_tokens_every_field_once(groups, T):
    fm = make_feature_map(feature_groups=GROUPINGS[groups])
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
    fm = make_feature_map(feature_groups=THREE_GROUPS)
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
    fm = make_feature_map()
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


# ---- sequence pooling ------------------------------------------------------------------------


@pytest.mark.parametrize("softmax", [True, False])
def test_target_attention_equals_slow_loop(softmax):
    fm = make_feature_map()
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
    fm = make_feature_map()
    emb = FeatureEmbedding(fm, 4)
    pool = SequencePooling(fm, emb.field_names, 4, "target_attention")
    assert pool.targets == {"hist": "s1"} and pool.mean_sequences == ["clicks"]
    with pytest.raises(ValueError, match="not a sequence"):
        SequencePooling(fm, emb.field_names, 4, "target_attention", {"s0": "s1"})
    with pytest.raises(ValueError, match="not a field"):
        SequencePooling(fm, emb.field_names, 4, "target_attention", {"clicks": "nope"})
