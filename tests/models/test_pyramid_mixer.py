"""Pyramid Mixer as a model on a feature map with a behaviour: it reads the behaviour through
its pyramid (the candidate's item and category as the query), pad positions change nothing,
empty histories are finite, and FLOPs per sample grow linearly in ``max_len``."""

from __future__ import annotations

import pytest
import torch

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import BehaviourFieldInfo, FeatureInfo, FeatureMap
from rankmixer.models import registry
from rankmixer.models.flops import forward_flops_per_sample

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = {"embedding_dim": 4, "pyramid": {"levels": 3, "window": 4, "attention_hidden": [8]}, "dnn_hidden": [8]}


def behaviour_map(max_len: int) -> FeatureMap:
    hist = FeatureInfo("hist", "behaviour", max_len=max_len, fields=[
        BehaviourFieldInfo("item", table="item", vocab_size=20, share_with="item"),
        BehaviourFieldInfo("cat", table="cat", vocab_size=6, share_with="cat"),
        BehaviourFieldInfo("type", table="hist__type", vocab_size=4),
    ])
    feats = [FeatureInfo("item", "sparse", vocab_size=20), FeatureInfo("cat", "sparse", vocab_size=6),
             FeatureInfo("d0", "dense"), hist]
    return FeatureMap(dataset="tiny", schema_hash="0" * 16, labels=["y"], features=feats, feature_groups={})


def behaviour_batch(lengths: list[int], max_len: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    ids = torch.stack([torch.randint(1, v, (B, max_len), generator=g) for v in (20, 6, 4)], dim=-1)
    keep = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]
    return Batch(
        dense=torch.randn(B, 1, generator=g),
        sparse=torch.stack([torch.randint(1, 20, (B,), generator=g), torch.randint(1, 6, (B,), generator=g)], 1),
        labels=torch.randint(0, 2, (B, 1), generator=g).float(),
        behaviours={"hist": ids * keep[:, :, None]},
    )


def build(max_len: int, seed: int = 0):
    torch.manual_seed(seed)
    model = registry.build_model("pyramid_mixer", behaviour_map(max_len), OPTIONS).eval()
    with torch.no_grad():  # embeddings large enough that positions differ
        model.embedding.weight.normal_(0.0, 0.5)
        model.embedding.weight[0].zero_()
    return model


def test_the_candidate_is_the_query_and_every_level_feeds_the_mlp():
    model = build(10)
    spec = model.encoders.specs[0]
    assert spec.keys == (0, 1) and spec.query == (0, 1)  # item and cat share the row's tables
    enc = model.encoders["hist"]
    assert (enc.num_outputs, enc.out_dim) == (3, 3 * 4)
    assert model.mlp.in_features == 3 * 4 + 3 * 3 * 4  # item, cat, d0 fields + 3 levels x F*d
    batch = behaviour_batch([10, 3, 1, 0], 10)
    out = model(batch).logits
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    # the history matters: a different history for a row changes its logit
    other = behaviour_batch([10, 3, 1, 0], 10, seed=1)
    other = Batch(dense=batch.dense, sparse=batch.sparse, labels=batch.labels, behaviours=other.behaviours)
    changed = (model(other).logits - out).abs()[:3]
    assert (changed > 0).all()


def test_pad_positions_and_empty_histories():
    model = build(10)
    lengths = [10, 6, 2, 0]
    batch = behaviour_batch(lengths, 10)
    base = model(batch).logits
    assert torch.isfinite(base).all()
    # the same rows with a longer max_len (appended pad positions) and the same weights
    longer = build(23, seed=5)
    longer.load_state_dict(model.state_dict())
    ids = torch.cat([batch.behaviours["hist"], torch.zeros(4, 13, 3, dtype=torch.long)], dim=1)
    got = longer(Batch(dense=batch.dense, sparse=batch.sparse, labels=batch.labels, behaviours={"hist": ids}))
    torch.testing.assert_close(got.logits, base, rtol=1e-5, atol=1e-6)
    # an all-empty batch trains to finite gradients
    empty = behaviour_batch([0, 0], 10)
    model.train()
    model(empty).logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_flops_per_sample_grow_linearly_in_max_len():
    """Forward matmul FLOPs per sample at max_len 64, 128, 256: each doubling adds twice what
    the one before added (linear: a + b L; a quadratic term would make it four times)."""
    flops = [forward_flops_per_sample(build(L), behaviour_batch([L, L // 2, 0], L)) for L in (64, 128, 256)]
    first, second = flops[1] - flops[0], flops[2] - flops[1]
    assert first > 0
    assert second / first == pytest.approx(2.0, rel=0.02)
