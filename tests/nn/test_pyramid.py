"""Pyramid Mixer's layers and encoder against float64 loops written here: position, field and
channel mixing, mask-aware pair pooling, the recent-first reordering, and the whole encoder
against a per-row reference that never sees a pad position; pad invariance, empty histories,
and FLOPs that grow linearly in the history length."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rankmixer.models.flops import count_flops
from rankmixer.nn.sequence import BehaviourInput, BehaviourSpec, build_encoder
from rankmixer.nn.sequence.pyramid import (
    FieldMixing,
    MixerBlock,
    PositionMixing,
    PyramidConfig,
    pair_pool,
    recent_first,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def two_layer(module: nn.Module, v: torch.Tensor, act) -> torch.Tensor:
    """``W2 act(W1 v + b1) + b2`` written out, for a module holding exactly two Linears."""
    l1, l2 = linears(module)
    return l2.weight @ act(l1.weight @ v + l1.bias) + l2.bias


def gelu(v: torch.Tensor) -> torch.Tensor:
    return 0.5 * v * (1 + torch.erf(v / math.sqrt(2.0)))


def layer_norm(v: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean = v.mean()
    var = ((v - mean) ** 2).mean()
    return (v - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn at random (LayerNorm scales and biases too), float64."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return module


def prefix_mask(lengths: list[int], L: int) -> torch.Tensor:
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


# ---- the three mixing layers ----------------------------------------------------------------


def test_position_mixing_matches_a_loop():
    B, L, F, D, w = 2, 6, 3, 2, 3
    mix = randomise(PositionMixing(w, 2, "gelu"), 0)
    x = torch.randn(B, L, F, D, dtype=torch.float64)
    got = mix(x)
    expected = torch.empty_like(x)
    for b in range(B):
        for s in range(0, L, w):
            for f in range(F):
                for c in range(D):
                    expected[b, s:s + w, f, c] = two_layer(mix, x[b, s:s + w, f, c], gelu)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_field_mixing_matches_a_loop():
    B, L, F, D = 2, 4, 3, 2
    mix = randomise(FieldMixing(F, 2, "gelu"), 1)
    x = torch.randn(B, L, F, D, dtype=torch.float64)
    got = mix(x)
    expected = torch.empty_like(x)
    for b in range(B):
        for pos in range(L):
            for c in range(D):
                expected[b, pos, :, c] = two_layer(mix, x[b, pos, :, c], gelu)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_channel_mlp_matches_a_loop():
    B, L, F, D = 2, 4, 3, 2
    block = randomise(MixerBlock(F, D, PyramidConfig(window=2)), 2)
    channel = block.mixers[2]
    x = torch.randn(B, L, F, D, dtype=torch.float64)
    got = channel(x)
    expected = torch.empty_like(x)
    for b in range(B):
        for pos in range(L):
            for f in range(F):
                expected[b, pos, f] = two_layer(channel, x[b, pos, f], gelu)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ---- reordering and pooling -------------------------------------------------------------------


def test_recent_first_matches_a_loop():
    lengths, L = [0, 1, 3, 5], 5
    mask = prefix_mask(lengths, L)
    x = torch.randn(4, L, 2, 3, dtype=torch.float64)  # garbage at pad positions too
    got, got_mask = recent_first(x, mask)
    for b, n in enumerate(lengths):
        for j in range(L):
            want = x[b, n - 1 - j] if j < n else torch.zeros(2, 3, dtype=torch.float64)
            torch.testing.assert_close(got[b, j], want, rtol=0, atol=0)
            assert bool(got_mask[b, j]) == (j < n)


@pytest.mark.parametrize("L", [6, 7])
def test_pair_pool_matches_a_loop(L):
    lengths = [0, 1, 2, 5, L]
    mask = prefix_mask(lengths, L)
    x = torch.randn(len(lengths), L, 2, 3, dtype=torch.float64)  # non-zero pads: must be ignored
    got, got_mask = pair_pool(x, mask)
    assert got.shape[1] == math.ceil(L / 2)
    for b, n in enumerate(lengths):
        for i in range(got.shape[1]):
            real = [x[b, p] for p in (2 * i, 2 * i + 1) if p < n]
            want = torch.stack(real).mean(0) if real else torch.zeros(2, 3, dtype=torch.float64)
            torch.testing.assert_close(got[b, i], want, rtol=1e-12, atol=1e-12)
            assert bool(got_mask[b, i]) == bool(real)


# ---- the whole encoder against a per-row reference --------------------------------------------


def reference_block(block: MixerBlock, rows: list[torch.Tensor], w: int) -> list[torch.Tensor]:
    """One mixer block on the real positions of one row (each ``[F, D]``), as written in the
    module docstring: windows of ``w`` from position 0, missing window slots read zero."""
    n = len(rows)
    F, D = rows[0].shape if rows else (0, 0)
    norms, (position, fields, channel) = block.norms, block.mixers
    # position mixing
    ln = [torch.stack([layer_norm(r[f], norms[0]) for f in range(F)]) for r in rows]
    out = [r.clone() for r in rows]
    for s in range(0, n, w):
        for f in range(F):
            for c in range(D):
                v = torch.stack([ln[s + i][f, c] if s + i < n else torch.zeros((), dtype=torch.float64)
                                 for i in range(w)])
                mixed = two_layer(position, v, gelu)
                for i in range(min(w, n - s)):
                    out[s + i][f, c] = out[s + i][f, c] + mixed[i]
    rows = out
    # field mixing
    ln = [torch.stack([layer_norm(r[f], norms[1]) for f in range(F)]) for r in rows]
    out = [r.clone() for r in rows]
    for p in range(n):
        for c in range(D):
            out[p][:, c] = out[p][:, c] + two_layer(fields, ln[p][:, c], gelu)
    rows = out
    # channel MLP
    out = [r.clone() for r in rows]
    for p in range(n):
        for f in range(F):
            out[p][f] = out[p][f] + two_layer(channel, layer_norm(rows[p][f], norms[2]), gelu)
    return out


def reference_encoder(enc, hist, mask, query, keys) -> torch.Tensor:
    B = hist.shape[0]
    F, D = hist.shape[2], hist.shape[3]
    out = []
    for b in range(B):
        n = int(mask[b].sum())
        rows = [hist[b, n - 1 - j].clone() for j in range(n)]  # most recent first
        tokens = []
        for k, blocks in enumerate(enc.levels):
            if k > 0:
                rows = [torch.stack(rows[i:i + 2]).mean(0) for i in range(0, len(rows), 2)]
            for block in blocks:
                rows = reference_block(block, rows, enc.cfg.window)
            if not rows:
                tokens.append(torch.zeros(F * D, dtype=torch.float64))
                continue
            q = query[b].flatten()
            scores = []
            for r in rows:
                key = r[keys].flatten()
                scores.append(enc.units[k](torch.cat([key, q, key - q, key * q]))[0])
            weights = torch.softmax(torch.stack(scores), 0)
            tokens.append(sum(wi * r.flatten() for wi, r in zip(weights, rows)))
        out.append(torch.stack(tokens))
    return torch.stack(out)


def encoder(cfg: dict, F: int, D: int, L: int, keys=(0, 1), seed: int = 3):
    spec = BehaviourSpec("hist", F, L, keys=tuple(keys), query=tuple(range(len(keys))))
    return randomise(build_encoder("pyramid", cfg, D, spec, num_context=2), seed).eval()


def behaviour_input(lengths: list[int], L: int, F: int, D: int, K: int, seed: int = 0) -> BehaviourInput:
    g = torch.Generator().manual_seed(seed)
    mask = prefix_mask(lengths, L)
    hist = torch.randn(len(lengths), L, F, D, generator=g, dtype=torch.float64) * mask[:, :, None, None]
    query = torch.randn(len(lengths), K, D, generator=g, dtype=torch.float64)
    return BehaviourInput(hist=hist, mask=mask, query=query, context=query)


def test_encoder_matches_a_per_row_reference():
    F, D, L = 3, 2, 11
    cfg = {"levels": 3, "blocks_per_level": 2, "window": 3, "attention_hidden": [4]}
    enc = encoder(cfg, F, D, L)
    x = behaviour_input([0, 1, 4, 7, 11], L, F, D, K=2)
    got = enc(x).tokens
    assert got.shape == (5, 3, F * D) and (enc.num_outputs, enc.out_dim) == (3, F * D)
    expected = reference_encoder(enc, x.hist, x.mask, x.query, [0, 1])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_encoder_without_shared_fields_takes_the_mean():
    F, D, L = 2, 2, 5
    enc = encoder({"levels": 2, "window": 2}, F, D, L, keys=())
    assert enc.units is None
    x = behaviour_input([3, 5], L, F, D, K=0)
    got = enc(x).tokens
    # the same blocks, read out by masked mean: reference with every score equal
    for b, n in enumerate([3, 5]):
        rows = [x.hist[b, n - 1 - j] for j in range(n)]
        rows = reference_block(enc.levels[0][0], rows, 2)
        torch.testing.assert_close(got[b, 0], torch.stack(rows).mean(0).flatten(), rtol=1e-10, atol=1e-12)


# ---- pads, empty histories, cost ----------------------------------------------------------------


def test_pad_positions_change_nothing():
    F, D, L = 3, 2, 9
    enc = encoder({"levels": 3, "window": 4, "attention_hidden": [4]}, F, D, L)
    lengths = [0, 2, 5, 9]
    x = behaviour_input(lengths, L, F, D, K=2)
    base = enc(x).tokens
    # garbage vectors at pad positions
    noisy = x.hist + torch.randn_like(x.hist) * (~x.mask)[:, :, None, None]
    torch.testing.assert_close(enc(BehaviourInput(noisy, x.mask, x.query, x.context)).tokens, base,
                               rtol=1e-12, atol=1e-12)
    # appended pad positions (a longer max_len)
    extra = 14
    longer = torch.cat([x.hist, torch.zeros(4, extra, F, D, dtype=torch.float64)], dim=1)
    mask = torch.cat([x.mask, torch.zeros(4, extra, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(enc(BehaviourInput(longer, mask, x.query, x.context)).tokens, base,
                               rtol=1e-12, atol=1e-12)


def test_empty_history_is_finite_and_zero():
    F, D, L = 3, 2, 6
    for keys in ((0,), ()):
        enc = encoder({"levels": 2, "window": 2}, F, D, L, keys=keys)
        x = behaviour_input([0, 0], L, F, D, K=len(keys))
        out = enc(x).tokens
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, torch.zeros_like(out))


def test_flops_grow_linearly_in_length():
    """Matmul FLOPs of one forward at L = 64, 128, 256: doubling L doubles them (a dense L x L
    position MLP would quadruple them)."""
    F, D = 4, 8
    counts = []
    for L in (64, 128, 256):
        enc = encoder({"levels": 3, "window": 8}, F, D, L).float()
        x = behaviour_input([L, L // 2], L, F, D, K=2)
        x = BehaviourInput(x.hist.float(), x.mask, x.query.float(), x.context.float())
        with torch.no_grad():
            counts.append(count_flops(lambda: enc(x)))
    assert counts[0] > 0
    assert counts[1] / counts[0] == pytest.approx(2.0, rel=0.02)
    assert counts[2] / counts[1] == pytest.approx(2.0, rel=0.02)


def test_unknown_options_are_errors_naming_the_encoder():
    spec = BehaviourSpec("hist", 2, 4, keys=(), query=())
    with pytest.raises(ValueError, match="(?s)'pyramid'.*windw"):
        build_encoder("pyramid", {"windw": 3}, 4, spec, num_context=1)
