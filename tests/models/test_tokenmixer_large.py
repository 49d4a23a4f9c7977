"""Norm placements and TokenMixer-Large (``models/rankmixer/model.py``, ``mix_revert.py``):
blocks against slow float64 references written from the equations, the rank of each block's
residual map, inter-layer residuals and the deep-supervision loss by hand, the layer_norm alias,
and the Sparse-Pertoken MoE switches."""

from __future__ import annotations

import pytest
import torch
from tests.factories import THREE_GROUPS, make_feature_map, mixing_reference, random_batch, reference_ffns
from torch import nn

from rankmixer.models import registry
from rankmixer.models.rankmixer import RankMixerBackbone, RankMixerBlock, RankMixerConfig
from rankmixer.models.rankmixer.mix_revert import MixRevertBlock
from rankmixer.nn.moe import MoEConfig, PerTokenMoE
from rankmixer.train.trainer import task_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def _norm_reference(norm: nn.Module, kind: str, placement: str):
    """LayerNorm / RMSNorm written out (eps 1e-5), or the identity without norms."""
    if placement == "none":
        return lambda z: z
    if kind == "layernorm":
        def ln(z):
            mu = z.mean(-1, keepdim=True)
            var = ((z - mu) ** 2).mean(-1, keepdim=True)
            return (z - mu) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
        return ln
    return lambda z: z / torch.sqrt((z**2).mean(-1, keepdim=True) + 1e-5) * norm.weight


def _ffn_reference(ffn, s):
    refs = [r.double() for r in reference_ffns(ffn)]
    return torch.stack([refs[t](s[:, t]) for t in range(s.shape[1])], dim=1)


def _perturb_norms(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                m.weight.normal_(1.0, 0.3)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, 0.3)


CASES = {
    "pre_layernorm": {"norm_placement": "pre"},
    "pre_rmsnorm": {"norm_placement": "pre", "norm": "rmsnorm"},
    "post_rmsnorm": {"norm": "rmsnorm"},
    "none": {"norm_placement": "none"},
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_rankmixer_block_placements_follow_the_equations(case):
    cfg = RankMixerConfig(num_tokens=4, hidden_dim=16, expansion=2, **CASES[case])
    torch.manual_seed(0)
    block = RankMixerBlock(cfg).double()
    _perturb_norms(block)
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    n1 = _norm_reference(block.norm1, cfg.norm, cfg.norm_placement)
    n2 = _norm_reference(block.norm2, cfg.norm, cfg.norm_placement)
    if cfg.norm_placement == "post":  # S = N(TM(X) + X); X' = N(F(S) + S)
        s = n1(mixing_reference(x) + x)
        want = n2(_ffn_reference(block.ffn, s) + s)
    else:  # S = X + TM(N(X)); X' = S + F(N(S))
        s = x + mixing_reference(n1(x))
        want = s + _ffn_reference(block.ffn, n2(s))
    got, _, _ = block(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["pre_rmsnorm", "post_rmsnorm", "none"])
def test_mix_revert_block_follows_the_equations(case):
    cfg = RankMixerConfig(num_tokens=4, hidden_dim=16, expansion=2, block="mix_revert", **CASES[case])
    torch.manual_seed(0)
    block = MixRevertBlock(cfg).double()
    _perturb_norms(block)
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    n1 = _norm_reference(block.norm1, cfg.norm, cfg.norm_placement)
    n2 = _norm_reference(block.norm2, cfg.norm, cfg.norm_placement)
    h = mixing_reference(x)
    if cfg.norm_placement == "post":
        h2 = n1(_ffn_reference(block.ffn_mix, h) + h)
        want = n2(_ffn_reference(block.ffn, mixing_reference(h2)) + x)
    else:
        h2 = h + _ffn_reference(block.ffn_mix, n1(h))
        want = x + _ffn_reference(block.ffn, n2(mixing_reference(h2)))  # H = T: revert = mix
    got, _, _ = block(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("T,D", [(4, 8), (8, 64)])
def test_residual_map_rank_rankmixer_loses_half_mix_revert_keeps_all(T, D):
    """The blocks' residual paths as linear maps (FFNs at zero, no norms, float64, on the TD
    standard basis): RankMixer's is I + TM, of rank (T+1)D/2 (the antisymmetric part of the
    token grid is lost); mixing-and-reverting's is Revert(Mix(x)) = x, of full rank TD."""
    basis = torch.eye(T * D, dtype=torch.float64).view(T * D, T, D)
    for block_kind, rank in (("rankmixer", (T + 1) * D // 2), ("mix_revert", T * D)):
        cfg = RankMixerConfig(num_tokens=T, hidden_dim=D, norm_placement="none", block=block_kind)
        block = RankMixerBackbone(cfg).blocks[0].double()
        block.ffn = _Zero()
        if block_kind == "mix_revert":
            block.ffn_mix = _Zero()
        out, _, _ = block(basis)
        assert torch.linalg.matrix_rank(out.reshape(T * D, T * D)).item() == rank, block_kind


def test_inter_residuals_and_aux_loss_by_hand():
    """L = 4, k = 2: X_2 gets + X_0 (not X_4: never after the last block); the aux head reads
    the final-normed X_2; loss = BCE(final) + w * BCE(aux), BCE written out."""
    fm = make_feature_map(feature_groups=THREE_GROUPS)
    torch.manual_seed(0)
    model = registry.build_model("tokenmixer-large", fm, {"embedding_dim": 8, "num_tokens": 4, "hidden_dim": 16})
    model.eval()
    batch = random_batch(fm, 6)
    out = model(batch)
    with torch.no_grad():
        xs = [model.tokens(batch)]
        for j, block in enumerate(model.backbone.blocks, start=1):
            x = block(xs[-1])[0]
            xs.append(x + xs[j - 2] if j == 2 else x)
        fin = model.backbone.final_norm
        aux = model.aux_heads[0](fin(xs[2]).mean(1))
        final = model.heads(fin(xs[4]).mean(1))
        y = batch.labels

        def bce(z):
            p = torch.sigmoid(z.double())
            return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

        want = bce(final) + 0.1 * bce(aux)
        torch.testing.assert_close(out.logits, final)
        torch.testing.assert_close(task_loss(out, y).double(), want, rtol=1e-5, atol=1e-6)


def test_layer_norm_alias():
    assert RankMixerConfig(layer_norm=False).norm_placement == "none"
    assert RankMixerConfig(norm_placement="none").layer_norm is False
    assert RankMixerConfig(norm_placement="pre").layer_norm is True
    cfg = RankMixerConfig(layer_norm=False)
    assert RankMixerConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(ValueError, match="contradicts"):
        RankMixerConfig(layer_norm=False, norm_placement="pre")
    with pytest.raises(ValueError, match="inter_residual"):
        RankMixerConfig(aux_loss_weight=0.1)


def test_sparse_pertoken_moe_equals_its_dense_formula():
    """Sparse training and inference compute ``alpha * sum_{top-k} softmax_k(logits) e_j(x) +
    shared(x)``, written out per row with explicit expert loops."""
    T, D, E = 3, 8, 4
    cfg = MoEConfig(num_experts=E, routing="topk", top_k=2, shared_expert=True, gate_scale=2.0,
                    sparse_training=True, load_balance_weight=0.0)
    torch.manual_seed(0)
    moe = PerTokenMoE(T, D, 1.0, cfg).double()
    x = torch.randn(5, T, D, dtype=torch.float64)
    shared = [r.double() for r in reference_ffns(moe.shared)]
    want = torch.zeros_like(x)
    for b in range(5):
        for t in range(T):
            logits = x[b, t] @ moe.router.weight[t] + moe.router.bias[t]
            top = logits.topk(2)
            g = torch.softmax(top.values, -1)
            for gj, j in zip(g, top.indices.tolist()):
                e = torch.nn.functional.gelu(x[b, t] @ moe.w1[t, j] + moe.b1[t, j]) @ moe.w2[t, j] + moe.b2[t, j]
                want[b, t] += 2.0 * gj * e
            want[b, t] += shared[t](x[b, t])
    for mode in (True, False):
        got, _, _ = moe.train(mode)(x)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
