"""The RankMixer model: each block follows the paper's equations under every ablation switch,
token mixing is what lets tokens meet (and what fits a two-token XOR), the named variants, the
MoE variant's auxiliary loss and metrics, bf16. The layers are tested in ``tests/nn``, the
analytic counts in ``test_rankmixer_counting.py``, what every model does in
``test_conformance.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.factories import THREE_GROUPS, fit_auc, make_feature_map, mixing_reference, random_batch, reference_ffns
from torch import nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.base import ModelOutput
from rankmixer.models.rankmixer import RankMixer, RankMixerBackbone, RankMixerBlock, RankMixerConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def _block_reference(block: RankMixerBlock, cfg: RankMixerConfig, x: torch.Tensor) -> torch.Tensor:
    """The block written out from the paper's equations and the switches."""
    ln1 = (lambda z: F.layer_norm(z, z.shape[-1:], block.norm1.weight, block.norm1.bias)) if cfg.layer_norm else (lambda z: z)
    ln2 = (lambda z: F.layer_norm(z, z.shape[-1:], block.norm2.weight, block.norm2.bias)) if cfg.layer_norm else (lambda z: z)
    if cfg.token_mixing == "none":
        s = ln1(x)
    else:
        m = mixing_reference(x) if cfg.token_mixing == "mixing" else block.mixer(x)
        s = ln1(m + x if cfg.residual else m)
    if cfg.ffn == "per_token":
        refs = reference_ffns(block.ffn)
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
    fm = make_feature_map(feature_groups=THREE_GROUPS)
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
    cfg = registry.parse_config("rankmixer-100m", {"dropout": 0.1, "hidden_dim": 512})
    assert (cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.dropout) == (16, 512, 2, 0.1)
    assert cfg.moe is None
    # nested mappings merge key by key; None switches MoE off
    moe = registry.parse_config("rankmixer-100m-moe", {"moe": {"num_experts": 16}}).moe
    assert moe.num_experts == 16 and moe.target_active_ratio == 0.125
    assert registry.parse_config("rankmixer-100m-moe", {"moe": None}).moe is None
    # the base model's defaults are untouched by the variants
    assert registry.parse_config("rankmixer", {}) == RankMixerConfig()
    fm = make_feature_map()
    model = registry.build_model("rankmixer-tiny", fm, {"num_layers": 1})
    assert isinstance(model, RankMixer) and len(model.backbone.blocks) == 1
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_variant("rankmixer-tiny", "rankmixer", {"num_layers": 5}, "other")


def test_tiny_model_output_and_bf16():
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, {"sequence_pooling": "target_attention"})
    batch = random_batch(fm, 8)
    out = model(batch)
    assert isinstance(out, ModelOutput) and out.logits.shape == (8, 2)
    assert out.aux_loss is None and out.metrics == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(batch)
    torch.testing.assert_close(out16.logits.float(), out.logits, rtol=0.1, atol=0.1)


def test_moe_variant_runs_with_aux_loss_and_metrics():
    pytest.importorskip("rankmixer.nn.moe")
    fm = make_feature_map(feature_groups=THREE_GROUPS)
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


# ---- learning ----------------------------------------------------------------------------------


def _xor_data(n: int, seed: int) -> tuple[FeatureMap, Batch]:
    """4 sparse features, each its own feature group (so its own token); the label is the XOR
    of the parities of s0 and s1 (a pure interaction of two tokens); s2, s3 are noise."""
    fm = make_feature_map(num_tasks=1, n_sparse=4, n_dense=0, bags=False, sequences=False, sparse_vocab=[12] * 4,
                          feature_groups={f"g{i}": [f"s{i}"] for i in range(4)})
    g = torch.Generator().manual_seed(seed)
    sparse = torch.randint(2, 12, (n, 4), generator=g)
    y = ((sparse[:, 0] % 2) ^ (sparse[:, 1] % 2)).float().unsqueeze(1)
    return fm, Batch(dense=torch.zeros(n, 0), sparse=sparse, labels=y)


def _fit(fm: FeatureMap, batch: Batch, overrides: dict) -> float:
    torch.manual_seed(0)
    model = registry.build_model(
        "rankmixer-tiny", fm, {"num_tokens": 4, "hidden_dim": 32, "embedding_dim": 8, **overrides}
    )
    return fit_auc(model, batch, steps=150)


def test_learns_planted_token_interaction():
    fm, batch = _xor_data(1024, seed=0)
    with_mixing = _fit(fm, batch, {})
    # without mixing the tokens never meet: the logit is a sum of per-token terms, which cannot
    # express an XOR of two tokens
    without = _fit(fm, batch, {"token_mixing": "none"})
    assert with_mixing > 0.98, with_mixing
    assert without < 0.75, without


def test_first_order_term_is_one_weight_per_feature_value_added_to_every_logit():
    """``first_order``: the logits move by, per row, the sum over sparse features of the weight
    of (feature, id) (0 for the pad id) plus, per numerical feature, its weight times its value,
    the same for every task; written out here as a loop over rows and features."""
    fm = make_feature_map(num_tasks=2, bags=False, sequences=False)
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, {"first_order": True}).eval()
    fo = model.first_order
    with torch.no_grad():
        fo.weight.normal_()
        fo.weight[0].zero_()  # the pad row
    batch = random_batch(fm, 32, torch.Generator().manual_seed(1))
    batch.sparse[0, 0] = 0  # one pad id
    with torch.no_grad():
        with_term = model(batch).logits
        w = fo.weight.detach().clone()
        fo.weight.zero_()
        without = model(batch).logits
    expected = torch.zeros(32)
    for r in range(32):
        for j, f in enumerate(fm.sparse):
            i = int(batch.sparse[r, j])
            expected[r] += 0.0 if i == 0 else w[fo.table_offsets[f.table] + i, 0]
        for j in range(len(fm.dense)):
            expected[r] += w[fo.numeric_offset + j, 0] * batch.dense[r, j]
    torch.testing.assert_close(with_term - without, expected[:, None].expand(32, 2), atol=1e-5, rtol=1e-5)
    assert registry.build_model("rankmixer-tiny", fm, {}).first_order is None
