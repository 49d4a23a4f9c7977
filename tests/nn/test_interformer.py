"""InterFormer's sequence layers (nn/sequence/interformer.py) against float64 loops written here:
RoPE, masked multi-head attention with RoPE, PMA, the personalised FFN, the gating, recent
tokens, the MaskNet's right alignment; the encoder's pad invariance and empty histories."""

from __future__ import annotations

import math

import pytest
import torch

from rankmixer.nn.sequence import BehaviourInput, BehaviourSpec, build_encoder, encoder_names
from rankmixer.nn.sequence.interformer import (
    PMA,
    Gating,
    MaskNetMerge,
    PersonalisedFFN,
    RoPEAttention,
    recent_tokens,
    rope,
    with_cls,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def rotate(vec: torch.Tensor, p: float, base: float = 10000.0) -> torch.Tensor:
    """The rotation formula, pair by pair: ``(a, b) -> (a cos t - b sin t, a sin t + b cos t)``,
    ``t = p * base^(-2i / d)``."""
    out = vec.clone()
    d = vec.shape[0]
    for i in range(d // 2):
        t = p * base ** (-2 * i / d)
        a, b = vec[2 * i].item(), vec[2 * i + 1].item()
        out[2 * i] = a * math.cos(t) - b * math.sin(t)
        out[2 * i + 1] = a * math.sin(t) + b * math.cos(t)
    return out


def test_rope_matches_the_rotation_formula_per_position():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [-3, -2, -1, 0, 7]])
    got = rope(x, positions, base=100.0)
    for b in range(2):
        for l in range(5):
            torch.testing.assert_close(got[b, l], rotate(x[b, l], positions[b, l].item(), base=100.0))
    # relative: the score of two rotated vectors depends on the offset only
    q, k = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    s1 = rotate(q, 3.0) @ rotate(k, 1.0)
    s2 = rotate(q, 12.0) @ rotate(k, 10.0)
    assert s1.item() == pytest.approx(s2.item(), rel=1e-10)


def heads_of(linear: torch.nn.Linear, x: torch.Tensor, part: int, h: int, num_heads: int, dim: int) -> torch.Tensor:
    """Head ``h`` of block ``part`` of ``linear(x)`` (x one vector)."""
    dh = dim // num_heads
    y = linear.weight @ x + linear.bias
    return y[part * dim + h * dh : part * dim + (h + 1) * dh]


def test_masked_attention_with_rope_matches_a_loop_softmax_over_real_positions():
    torch.manual_seed(0)
    B, L, D, H = 3, 5, 8, 2
    att = RoPEAttention(D, H, rope_base=50.0).double().eval()
    x = torch.randn(B, L, D, dtype=torch.float64)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    positions = torch.tensor([[0, -3, -2, -1, 5], [0, 1, 2, 3, 4], [0, 2, 4, 6, 8]])
    got = att(x, positions, key_mask)
    dh = D // H
    for b in range(B):
        for i in range(L):  # every query, pad ones included (they attend to the real keys)
            heads = []
            for h in range(H):
                q = rotate(heads_of(att.qkv, x[b, i], 0, h, H, D), positions[b, i].item(), 50.0)
                scores, values = [], []
                for j in range(L):
                    if key_mask[b, j]:
                        k = rotate(heads_of(att.qkv, x[b, j], 1, h, H, D), positions[b, j].item(), 50.0)
                        scores.append((q @ k).item() / math.sqrt(dh))
                        values.append(heads_of(att.qkv, x[b, j], 2, h, H, D))
                top = max(scores)
                w = [math.exp(s - top) for s in scores]
                heads.append(sum(wi * v for wi, v in zip(w, values)) / sum(w))
            expected = att.out.weight @ torch.cat(heads) + att.out.bias
            torch.testing.assert_close(got[b, i], expected)


def test_pma_matches_a_loop_and_pools_an_empty_history_to_zeros():
    torch.manual_seed(0)
    B, L, D, H, n = 3, 4, 6, 3, 2
    pma = PMA(D, H).double().eval()
    queries = torch.randn(B, n, D, dtype=torch.float64)
    s = torch.randn(B, L, D, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    got = pma(queries, s, mask)
    dh = D // H
    for b in range(B):
        for t in range(n):
            if not mask[b].any():
                assert torch.equal(got[b, t], torch.zeros(D, dtype=torch.float64))
                continue
            heads = []
            for h in range(H):
                q = (pma.q.weight @ queries[b, t] + pma.q.bias)[h * dh : (h + 1) * dh]
                real = [j for j in range(L) if mask[b, j]]
                scores = [(q @ heads_of(pma.kv, s[b, j], 0, h, H, D)).item() / math.sqrt(dh) for j in real]
                w = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0)
                heads.append(sum(w[r] * heads_of(pma.kv, s[b, j], 1, h, H, D) for r, j in enumerate(real)))
            torch.testing.assert_close(got[b, t], pma.out.weight @ torch.cat(heads) + pma.out.bias)


def test_personalised_ffn_is_a_matrix_per_row():
    torch.manual_seed(0)
    B, n, d, D, L = 3, 2, 4, 5, 6
    ffn = PersonalisedFFN(n * d, D).double()
    x_sum, s = torch.randn(B, n, d, dtype=torch.float64), torch.randn(B, L, D, dtype=torch.float64)
    got = ffn(x_sum, s)
    for b in range(B):
        flat = x_sum[b].reshape(-1)
        w = torch.empty(D, D, dtype=torch.float64)
        for r in range(D):
            for c in range(D):
                row = r * D + c
                w[r, c] = ffn.generate.weight[row] @ flat + ffn.generate.bias[row]
        for pos in range(L):
            torch.testing.assert_close(got[b, pos], s[b, pos] @ w)
        # three sequences per row, stacked copy-major: copy c of row b at c * B + b, same matrix
        stacked = torch.randn(3 * B, L, D, dtype=torch.float64)
        out = ffn(x_sum, stacked)
        for c in range(3):
            for pos in range(L):
                torch.testing.assert_close(out[c * B + b, pos], stacked[c * B + b, pos] @ w)


def test_gating_is_sigmoid_of_z_times_mlp_z():
    torch.manual_seed(0)
    gate = Gating(3).double()
    z = torch.randn(2, 4, 3, dtype=torch.float64)
    lin = gate.mlp.layers[0]
    got = gate(z)
    for b in range(2):
        for t in range(4):
            m = lin.weight @ z[b, t] + lin.bias
            for e in range(3):
                expected = 1.0 / (1.0 + math.exp(-(z[b, t, e] * m[e]).item()))
                assert got[b, t, e].item() == pytest.approx(expected, rel=1e-12)


def test_recent_tokens_take_the_last_real_positions_most_recent_first():
    s = torch.arange(2 * 5 * 1, dtype=torch.float64).view(2, 5, 1) + 1
    got = recent_tokens(s, torch.tensor([3, 1]), 2)
    assert got[:, :, 0].tolist() == [[3.0, 2.0], [6.0, 0.0]]  # row 1 has one behaviour: zero beyond it


def test_cls_tokens_and_positions():
    cls = torch.randn(2, 3)
    s, mask = torch.randn(2, 4, 3), torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    tokens, key_mask, positions = with_cls(cls, s, mask)
    assert torch.equal(tokens[0, :2], cls) and torch.equal(tokens[1, 2:], s[1])
    assert key_mask.tolist() == [[True, True, True, True, True, False], [True, True, False, False, False, False]]
    assert positions[0].tolist() == [0, 0, -3, -2, -1, 0]  # the most recent behaviour at -1


def test_masknet_merges_behaviours_right_aligned():
    torch.manual_seed(0)
    D = 2
    merge = MaskNetMerge(2, D, [4]).double()
    a = torch.randn(2, 3, D, dtype=torch.float64)
    b = torch.randn(2, 5, D, dtype=torch.float64)
    ma = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    mb = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    a, b = a * ma.unsqueeze(-1), b * mb.unsqueeze(-1)
    got, mask = merge([(a, ma), (b, mb)])
    assert mask.tolist() == [[True] * 4 + [False], [True] * 3 + [False] * 2]
    for r in range(2):
        n = int(mask[r].sum())
        for t in range(5):
            z = torch.zeros(2 * D, dtype=torch.float64)
            for k, (s, m) in enumerate([(a, ma), (b, mb)]):
                own = int(m[r].sum())
                src = t - (n - own)  # the j-th most recent of each behaviour meet
                if t < n and 0 <= src < own:
                    z[k * D : (k + 1) * D] = s[r, src]
            expected = merge.out(z * merge.mask(z)) if t < n else torch.zeros(D, dtype=torch.float64)
            torch.testing.assert_close(got[r, t], expected)


SPEC = BehaviourSpec(name="hist", num_fields=3, max_len=6, keys=(0,), query=(1,))


def encoder_input(B=4, L=6, N=5, d=4, lengths=(0, 1, 4, 6), seed=0) -> BehaviourInput:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    hist = torch.randn(B, L, 3, d, generator=g, dtype=torch.float64) * mask[..., None, None]
    context = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    return BehaviourInput(hist=hist, mask=mask, query=context[:, [1]], context=context)


def small_encoder(**options):
    torch.manual_seed(0)
    opts = {"seq_dim": 8, "num_heads": 2, "num_layers": 2, **options}
    return build_encoder("interformer", opts, 4, SPEC, 5).double().eval()


def test_encoder_is_registered_and_gives_the_summary_tokens():
    assert "interformer" in encoder_names()
    enc = small_encoder()
    out = enc(encoder_input())
    assert enc.num_outputs == 4 + 2 + 2 and enc.out_dim == 8
    assert out.tokens.shape == (4, 8, 8) and out.aux_loss is None
    assert ((out.tokens > 0) & (out.tokens < 1)).all()  # gated: sigmoid(z * MLP(z))
    with pytest.raises(ValueError, match="interformer.*bad options"):
        build_encoder("interformer", {"num_cls": -1}, 4, SPEC, 5)
    with pytest.raises(ValueError, match="even width"):
        build_encoder("interformer", {"seq_dim": 6, "num_heads": 2}, 4, SPEC, 5)


@pytest.mark.parametrize("options", [{}, {"num_cls": 0}, {"num_pma": 0, "num_recent": 3}])
def test_encoder_ignores_pad_positions(options):
    enc = small_encoder(**options)
    x = encoder_input()
    with torch.no_grad():
        ref = enc(x).tokens
        changed = encoder_input()  # other values at the pad positions
        noise = torch.randn_like(changed.hist) * (~changed.mask)[..., None, None]
        changed.hist = changed.hist + noise
        torch.testing.assert_close(enc(changed).tokens, ref, rtol=0, atol=1e-12)
        extra = 3  # pad positions appended
        longer = BehaviourInput(
            hist=torch.cat([x.hist, torch.randn(4, extra, 3, 4, dtype=torch.float64)], dim=1),
            mask=torch.cat([x.mask, torch.zeros(4, extra, dtype=torch.bool)], dim=1),
            query=x.query, context=x.context)
        torch.testing.assert_close(enc(longer).tokens, ref, rtol=0, atol=1e-12)


def test_encoder_empty_history_is_finite_and_trains():
    enc = small_encoder(num_cls=0).train()  # no CLS: no key at all in an empty row
    x = encoder_input(lengths=(0, 0, 0, 0))
    out = enc(x).tokens
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
