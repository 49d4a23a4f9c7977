"""The peer models' layers against slow references: explicit loops in float64, and torch's own
MultiheadAttention on the same weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rankmixer.nn.attention import HeterogeneousAttention, InteractingLayer
from rankmixer.nn.experts import MixtureOfExperts
from rankmixer.nn.fm_block import FactorizationMachineBlock, LinearCompressBlock, WukongLayer, fm_matrix
from rankmixer.nn.fusion import BilinearFusion, FeatureGate

pytestmark = pytest.mark.usefixtures("single_thread")


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- AutoInt interacting layer ---------------------------------------------------------------


def _interacting_loop(layer: InteractingLayer, x: torch.Tensor) -> torch.Tensor:
    """Song et al. 2019 eqs. 5-8, one field, head and partner at a time."""
    B, F, _ = x.shape
    H, dh = layer.num_heads, layer.head_dim
    Wq, Wk, Wv = layer.w_q.weight, layer.w_k.weight, layer.w_v.weight
    out = torch.zeros(B, F, H * dh, dtype=x.dtype)
    for b in range(B):
        for m in range(F):
            for h in range(H):
                rows = slice(h * dh, (h + 1) * dh)
                q = Wq[rows] @ x[b, m]
                scores = torch.stack([(q @ (Wk[rows] @ x[b, k])) * layer.scale for k in range(F)])
                alpha = torch.softmax(scores, dim=0)
                out[b, m, rows] = sum(alpha[k] * (Wv[rows] @ x[b, k]) for k in range(F))
            if layer.use_residual:
                out[b, m] += layer.w_res.weight @ x[b, m] if layer.w_res is not None else x[b, m]
    return torch.relu(out)


@pytest.mark.parametrize("in_dim,att_dim,heads,scale,residual", [
    (6, 8, 2, False, True), (8, 8, 4, True, True), (5, 6, 1, False, False),
])
def test_interacting_layer_matches_loop(in_dim, att_dim, heads, scale, residual):
    torch.manual_seed(0)
    layer = InteractingLayer(in_dim, att_dim, heads, use_residual=residual, use_scale=scale).double()
    x = torch.randn(3, 4, in_dim, generator=_g(), dtype=torch.float64)
    torch.testing.assert_close(layer(x), _interacting_loop(layer, x))


def test_interacting_layer_matches_torch_multihead_attention():
    """With scaling and an identity output projection, the attention part is torch's MHA."""
    torch.manual_seed(0)
    d, heads = 8, 2
    layer = InteractingLayer(d, d, heads, use_residual=True, use_scale=True).double()
    mha = nn.MultiheadAttention(d, heads, bias=False, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([layer.w_q.weight, layer.w_k.weight, layer.w_v.weight]))
        mha.out_proj.weight.copy_(torch.eye(d, dtype=torch.float64))
    x = torch.randn(5, 6, d, generator=_g(), dtype=torch.float64)
    ref = torch.relu(mha(x, x, x, need_weights=False)[0] + x)
    torch.testing.assert_close(layer(x), ref)


# ---- HiFormer attention ----------------------------------------------------------------------


def _hetero_loop(att: HeterogeneousAttention, x: torch.Tensor) -> torch.Tensor:
    B, L, d = x.shape
    H, dk, n = att.num_heads, att.head_dim, att.num_queries
    q = torch.stack([torch.stack([x[b, i] @ att.w_q[i] for i in range(n)]) for b in range(B)])
    if att.mode == "heterogeneous":
        k = torch.stack([torch.stack([x[b, j] @ att.w_k[j] for j in range(L)]) for b in range(B)])
        v = torch.stack([torch.stack([x[b, j] @ att.w_v[j] for j in range(L)]) for b in range(B)])
    else:
        def proj(mod):
            w = mod.weight if isinstance(mod, nn.Linear) else mod[1].weight @ mod[0].weight  # W = U_2 U_1
            return torch.stack([w @ x[b].reshape(-1) for b in range(B)]).view(B, L, H * dk)
        k, v = proj(att.k_proj), proj(att.v_proj)
    out = torch.zeros(B, n, d, dtype=x.dtype)
    for b in range(B):
        for i in range(n):
            heads = []
            for h in range(H):
                c = slice(h * dk, (h + 1) * dk)
                s = torch.stack([q[b, i, c] @ k[b, j, c] / math.sqrt(dk) for j in range(L)])
                a = torch.softmax(s, 0)
                heads.append(sum(a[j] * v[b, j, c] for j in range(L)))
            out[b, i] = torch.cat(heads) @ att.w_o[i]
    return out


@pytest.mark.parametrize("mode,rank,num_queries", [
    ("heterogeneous", None, None), ("composite", None, None), ("composite", 5, None),
    ("composite", None, 2), ("heterogeneous", None, 1),
])
def test_heterogeneous_attention_matches_loop(mode, rank, num_queries):
    torch.manual_seed(0)
    att = HeterogeneousAttention(4, 6, num_heads=2, head_dim=3, mode=mode, rank=rank, num_queries=num_queries).double()
    x = torch.randn(3, 4, 6, generator=_g(), dtype=torch.float64)
    out = att(x)
    assert out.shape == (3, num_queries or 4, 6)
    torch.testing.assert_close(out, _hetero_loop(att, x))


def test_heterogeneous_attention_projections_are_per_token():
    """Swapping two tokens of the input does not just swap the output (unlike plain
    self-attention, which is permutation-equivariant): the projections belong to positions."""
    torch.manual_seed(0)
    att = HeterogeneousAttention(3, 4, num_heads=1, mode="heterogeneous").double()
    x = torch.randn(2, 3, 4, generator=_g(), dtype=torch.float64)
    perm = torch.tensor([1, 0, 2])
    assert not torch.allclose(att(x[:, perm]), att(x)[:, perm])


# ---- Wukong blocks ---------------------------------------------------------------------------


def test_fm_matrix_matches_pairwise_sums():
    x = torch.randn(2, 5, 3, generator=_g(), dtype=torch.float64)
    Y = torch.randn(5, 4, generator=_g(1), dtype=torch.float64)
    full = torch.zeros(2, 5, 5, dtype=torch.float64)
    opt = torch.zeros(2, 5, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                full[b, i, j] = sum(x[b, i, t] * x[b, j, t] for t in range(3))
            for k in range(4):
                opt[b, i, k] = sum(full[b, i, j] * Y[j, k] for j in range(5))
    torch.testing.assert_close(fm_matrix(x), full)
    torch.testing.assert_close(fm_matrix(x, Y), opt)


def test_fm_block_and_lcb_match_their_formulas():
    torch.manual_seed(0)
    fmb = FactorizationMachineBlock(5, 3, num_out=2, rank=4, hidden=[7]).double()
    lcb = LinearCompressBlock(5, 3).double()
    x = torch.randn(2, 5, 3, generator=_g(), dtype=torch.float64)
    ref = fmb.mlp(fmb.norm(torch.bmm(torch.bmm(x, x.transpose(1, 2)), fmb.proj.expand(2, -1, -1)).flatten(1)))
    torch.testing.assert_close(fmb(x), ref.view(2, 2, 3))
    W = lcb.weight.weight  # [n_L, n]
    ref_lcb = torch.stack([torch.stack([sum(W[o, i] * x[b, i] for i in range(5)) for o in range(3)]) for b in range(2)])
    torch.testing.assert_close(lcb(x), ref_lcb)


def test_wukong_layer_residual_identity_or_projection():
    torch.manual_seed(0)
    same = WukongLayer(6, 4, num_fmb=3, num_lcb=3, rank=2, fmb_hidden=[8]).double()
    grow = WukongLayer(6, 4, num_fmb=4, num_lcb=4, rank=None, fmb_hidden=[8]).double()
    x = torch.randn(2, 6, 4, generator=_g(), dtype=torch.float64)
    assert same.residual is None and grow.residual is not None
    torch.testing.assert_close(same(x), same.norm(torch.cat([same.fmb(x), same.lcb(x)], 1) + x))
    assert grow(x).shape == (2, 8, 4)


# ---- FinalMLP --------------------------------------------------------------------------------


@pytest.mark.parametrize("heads,out_dim", [(1, 1), (2, 1), (4, 3)])
def test_bilinear_fusion_matches_loop(heads, out_dim):
    torch.manual_seed(0)
    fuse = BilinearFusion(8, 12, num_heads=heads, out_dim=out_dim).double()
    x = torch.randn(3, 8, generator=_g(), dtype=torch.float64)
    y = torch.randn(3, 12, generator=_g(1), dtype=torch.float64)
    hx, hy = 8 // heads, 12 // heads
    ref = torch.zeros(3, out_dim, dtype=torch.float64)
    for b in range(3):
        for o in range(out_dim):
            v = fuse.w_x.bias[o] + fuse.w_x.weight[o] @ x[b] + fuse.w_y.weight[o] @ y[b]
            for h in range(heads):
                for i in range(hx):
                    for j in range(hy):
                        v = v + x[b, h * hx + i] * fuse.w_xy[h, i, j, o] * y[b, h * hy + j]
            ref[b, o] = v
    torch.testing.assert_close(fuse(x, y), ref)


def test_feature_gate_starts_at_one_without_context_and_uses_context():
    torch.manual_seed(0)
    gate = FeatureGate(6, None, embedding_dim=4, hidden=[5]).double()
    x = torch.randn(3, 6, generator=_g(), dtype=torch.float64)
    # zero context vector: gate = 2 sigmoid(MLP(0)), the same for every row
    g = 2 * torch.sigmoid(gate.mlp(torch.zeros(1, 4, dtype=torch.float64)))
    torch.testing.assert_close(gate(x), x * g)
    ctx_gate = FeatureGate(6, 8, embedding_dim=4, hidden=[5]).double()
    ctx = torch.randn(3, 8, generator=_g(2), dtype=torch.float64)
    torch.testing.assert_close(ctx_gate(x, ctx), x * 2 * torch.sigmoid(ctx_gate.mlp(ctx)))
    with pytest.raises(ValueError, match="context"):
        ctx_gate(x)


# ---- MoE -------------------------------------------------------------------------------------


def test_mixture_of_experts_matches_loop():
    torch.manual_seed(0)
    moe = MixtureOfExperts(5, num_experts=3, hidden=[7, 4], num_gates=2).double()
    x = torch.randn(4, 5, generator=_g(), dtype=torch.float64)
    out, w = moe(x)
    assert out.shape == (2, 4, 4) and w.shape == (2, 4, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, dtype=torch.float64))
    logits = moe.gates(x).view(4, 2, 3)
    for g in range(2):
        for b in range(4):
            p = torch.exp(logits[b, g]) / torch.exp(logits[b, g]).sum()
            ref = sum(p[e] * moe.experts[e](x[b : b + 1])[0] for e in range(3))
            torch.testing.assert_close(out[g, b], ref)


def test_transformer_encoder_layer_matches_torch():
    from rankmixer.nn.attention import TransformerEncoderLayer

    torch.manual_seed(0)
    ours = TransformerEncoderLayer(8, 2, ffn_dim=12).double().eval()
    ref = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True).double().eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(ours.out.state_dict())
        ref.linear1.load_state_dict(ours.ff1.state_dict())
        ref.linear2.load_state_dict(ours.ff2.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
    x = torch.randn(3, 5, 8, generator=_g(), dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_attention_flops_are_counted():
    """The FLOPs-per-sample column must see the attention matmuls (torch's fused kernels were
    counted as zero on CPU): Q K^T and A V are 2 * 2 * H * F * F * d_h per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = InteractingLayer(8, 8, num_heads=2, use_residual=False).eval()
    x = torch.randn(4, 6, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as c:
        layer(x)
    proj = 3 * 2 * 6 * 8 * 8  # Q, K, V projections per sample
    attn = 2 * 2 * 2 * 6 * 6 * 4
    assert c.get_total_flops() / 4 == proj + attn
