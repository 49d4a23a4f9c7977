"""RankMixer's analytic counts (``models/rankmixer/counting.py``): parameters equal the built
module's (the big variants on the meta device), FLOPs equal the one measured counter
(``models/flops.py``, torch's FlopCounterMode), and the paper's leading terms."""

from __future__ import annotations

import pytest
import torch
from tests.factories import THREE_GROUPS, make_feature_map, random_batch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rankmixer.models import registry
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.models.rankmixer import RankMixerBackbone, rankmixer_flops_per_sample, rankmixer_param_count

pytestmark = pytest.mark.usefixtures("single_thread")


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["rankmixer-100m", "rankmixer-1b", "rankmixer-100m-moe", "rankmixer-1b-moe"])
def test_param_count_of_big_variants_on_meta(name):
    fm = make_feature_map(feature_groups=THREE_GROUPS)
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
    "pre_rmsnorm": {"norm_placement": "pre", "norm": "rmsnorm"},
    "mix_revert_aux": {"block": "mix_revert", "inter_residual": 1, "aux_loss_weight": 0.1},
    "first_order": {"first_order": True},  # 1-dim tables: parameters, no matmul FLOPs
}


@pytest.mark.parametrize("case", list(FLOP_CASES), ids=list(FLOP_CASES))
def test_flops_match_the_flop_counter(case):
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, FLOP_CASES[case])
    cfg = model.cfg
    flops = rankmixer_flops_per_sample(cfg, fm)
    assert forward_flops_per_sample(model, random_batch(fm, 16)) == flops["forward"]
    assert _n_params(model) == rankmixer_param_count(cfg, fm)["total"]
    T, D, L, k = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.expansion
    if case == "default":  # the block FLOPs are exactly the paper's 4kLTD^2
        assert flops["blocks"] == flops["paper_estimate"] == 4 * k * L * T * D * D
        assert flops["train"] == 3 * flops["forward"]


def test_moe_flops_count_the_training_forward():
    """With MoE, ``forward`` is what training computes (every expert, both routers): the counter
    on a training-mode forward (``forward_flops_per_sample`` runs eval, where sparse inference
    computes only the routed experts, so its count depends on the routing)."""
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    torch.manual_seed(0)
    model = registry.build_model("rankmixer-tiny", fm, {"moe": {"num_experts": 3}}).train()
    B = 16
    with FlopCounterMode(display=False) as fc:
        model(random_batch(fm, B))
    assert fc.get_total_flops() / B == rankmixer_flops_per_sample(model.cfg, fm)["forward"]
    assert _n_params(model) == rankmixer_param_count(model.cfg, fm)["total"]


def test_sparse_pertoken_moe_counts():
    """tokenmixer-large-moe: parameters equal the built module's; sparse inference (eval, one
    thread: exactly the k routed experts per token) equals ``forward_active`` on the counter."""
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    torch.manual_seed(0)
    model = registry.build_model("tokenmixer-large-moe", fm, {"num_tokens": 4, "hidden_dim": 16})
    flops = rankmixer_flops_per_sample(model.cfg, fm)
    assert _n_params(model) == rankmixer_param_count(model.cfg, fm)["total"]
    assert forward_flops_per_sample(model, random_batch(fm, 16)) == flops["forward_active"] == flops["forward"]
