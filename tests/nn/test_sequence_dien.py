"""DIEN's encoder against float64 loops written from the paper's equations (row by row, real
positions only), its auxiliary loss against a hand computation, and Dice against its formula
and FuxiCTR's layer."""

from __future__ import annotations

import math

import pytest
import torch
from tests.factories import NEEDS_FUXICTR

from rankmixer.nn.mlp import MLP, Dice
from rankmixer.nn.sequence import BehaviourInput, BehaviourSpec, build_encoder
from rankmixer.nn.sequence.dien import augru, interest_aux_loss, negative_rows

pytestmark = pytest.mark.usefixtures("single_thread")

B, F, D = 5, 2, 3
LENGTHS = [6, 3, 1, 0, 4]  # a full row, short ones, a single behaviour, an empty history


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def gru_loop(xs, w_ih, w_hh, b_ih, b_hh, attention=None):
    """States of a GRU over the vectors ``xs`` (one row's real positions), from the equations:
    ``r = s(W_ir x + b_ir + W_hr h + b_hr)``, ``u = s(W_iu x + b_iu + W_hu h + b_hu)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``. Without ``attention``: PyTorch's GRU,
    ``h' = (1 - u) n + u h`` (rows of the weights in order r, u, n). With it: AUGRU,
    ``u' = a_t u``, ``h' = (1 - u') h + u' n`` (the paper's convention: u weighs the new state).
    Every entry computed by scalar loops in float64."""
    H = w_hh.shape[1]
    h = [0.0] * H
    states = []
    for t, x in enumerate(xs):
        gx = [sum(w_ih[i, j].item() * x[j].item() for j in range(len(x))) + b_ih[i].item() for i in range(3 * H)]
        gh = [sum(w_hh[i, j].item() * h[j] for j in range(H)) + b_hh[i].item() for i in range(3 * H)]
        new = []
        for k in range(H):
            r = sig(gx[k] + gh[k])
            u = sig(gx[H + k] + gh[H + k])
            n = math.tanh(gx[2 * H + k] + r * gh[2 * H + k])
            if attention is None:
                new.append((1 - u) * n + u * h[k])
            else:
                u = attention[t] * u
                new.append((1 - u) * h[k] + u * n)
        h = new
        states.append(torch.tensor(h, dtype=torch.float64))
    return states


def make_input(lengths=LENGTHS, L=6, K=1, garbage=True, seed=0):
    """A behaviour input with ``F`` fields of width ``D``; pad positions hold random values
    (``garbage``) that the encoder must ignore, as it must ignore anything behind the mask."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    hist = torch.randn(len(lengths), L, F, D, generator=g, dtype=torch.float64)
    if not garbage:
        hist = hist * mask[:, :, None, None]
    query = torch.randn(len(lengths), K, D, generator=g, dtype=torch.float64)
    return BehaviourInput(hist=hist, mask=mask, query=query, context=query)


def make_encoder(K=1, **options):
    torch.manual_seed(0)
    spec = BehaviourSpec(name="hist", num_fields=F, max_len=6, keys=tuple(range(K)), query=tuple(range(K)))
    return build_encoder("dien", options, D, spec, num_context=K).double()


def reference_states(enc, x):
    """Per row: the extractor's states over the real positions, their attention and the final
    AUGRU state, all from :func:`gru_loop`."""
    g, aug = enc.extractor, enc.evolution
    out = []
    for b, n in enumerate(x.lengths.tolist()):
        e = x.hist[b, :n].reshape(n, F * D)
        states = gru_loop(e, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        if enc.attention is None:
            a = [1.0] * n
        else:
            wq = enc.attention.weight.detach() @ x.query[b].reshape(-1)
            logits = [float(h @ wq) for h in states]
            z = sum(math.exp(v) for v in logits)
            a = [math.exp(v) / z for v in logits]
        w = (aug.input.weight, aug.hidden.weight, aug.input.bias, aug.hidden.bias)
        final = (gru_loop(states, *(t.detach() for t in w), attention=a)[-1] if n
                 else torch.zeros(enc.out_dim, dtype=torch.float64))
        out.append((e, states, final))
    return out


@pytest.mark.parametrize("hidden", [None, 4])
def test_encoder_matches_the_equations_row_by_row(hidden):
    enc = make_encoder(hidden=hidden).eval()
    x = make_input()
    assert enc.out_dim == (hidden or F * D) and enc.num_outputs == 1
    with torch.no_grad():
        out = enc(x)
    assert out.aux_loss is None  # eval mode: no auxiliary loss
    assert out.tokens.shape == (B, 1, enc.out_dim)
    expected = torch.stack([final for _, _, final in reference_states(enc, x)])
    torch.testing.assert_close(out.tokens[:, 0], expected, rtol=1e-10, atol=1e-12)
    assert (out.tokens[LENGTHS.index(0)] == 0).all()  # empty history: the zero state


def test_without_a_shared_field_augru_is_a_plain_gru():
    enc = make_encoder(K=0).eval()
    x = make_input(K=0)
    with torch.no_grad():
        got = enc(x).tokens[:, 0]
    expected = torch.stack([final for _, _, final in reference_states(enc, x)])  # attention 1 everywhere
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_augru_function_against_the_loop():
    g = torch.Generator().manual_seed(3)
    H, L = 3, 5
    lengths = [5, 2, 0]
    x = torch.randn(3, L, 4, generator=g, dtype=torch.float64)
    a = torch.rand(3, L, generator=g, dtype=torch.float64)
    inp, hid = torch.nn.Linear(4, 3 * H).double(), torch.nn.Linear(H, 3 * H).double()
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = augru(inp(x), mask, a, hid)
    for b, n in enumerate(lengths):
        w = (inp.weight, hid.weight, inp.bias, hid.bias)
        ref = gru_loop(x[b, :n], *(t.detach() for t in w), attention=a[b, :n].tolist())
        expected = ref[-1] if n else torch.zeros(H, dtype=torch.float64)
        torch.testing.assert_close(got[b], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden", [None, 4])
def test_aux_loss_matches_a_hand_computation(hidden):
    weight = 0.7
    enc = make_encoder(hidden=hidden, aux_loss_weight=weight).train()
    x = make_input()
    enc.generator = torch.Generator().manual_seed(5)
    negatives = negative_rows(B, generator=torch.Generator().manual_seed(5))
    got = enc(x).aux_loss
    total, pairs = 0.0, 0
    lengths = LENGTHS
    with torch.no_grad():
        for b, (e, states, _) in enumerate(reference_states(enc, x)):
            j = int(negatives[b])
            for t in range(lengths[b] - 1):
                if t + 1 >= lengths[j]:
                    continue  # the other row has no behaviour there: no pair
                h = states[t] if enc.aux_proj is None else enc.aux_proj.weight @ states[t]
                pos = float(h @ e[t + 1])
                neg = float(h @ x.hist[j, t + 1].reshape(-1))
                total += -math.log(sig(pos)) - math.log(1 - sig(neg))
                pairs += 1
    assert pairs > 0
    torch.testing.assert_close(got, torch.tensor(weight * total / pairs, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_aux_loss_with_a_fixed_permutation_and_no_valid_pair():
    h = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    e = torch.tensor([[[9.0, 9.0], [1.0, -1.0]], [[9.0, 9.0], [2.0, 3.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, True]])
    got = interest_aux_loss(h, e, mask, torch.tensor([1, 0]))
    # row 0: pos <(1,0),(1,-1)> = 1, neg <(1,0),(2,3)> = 2; row 1: pos <(0,2),(2,3)> = 6, neg <(0,2),(1,-1)> = -2
    expected = (-math.log(sig(1)) - math.log(1 - sig(2)) - math.log(sig(6)) - math.log(1 - sig(-2))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-12)
    mask[1, 1] = False  # row 0's negative gone, row 1's positive gone: no pair left
    assert interest_aux_loss(h, e, mask, torch.tensor([1, 0])).item() == 0.0


def test_negative_rows_are_another_row():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        for _ in range(20):
            rows = negative_rows(n, generator=g)
            assert sorted(rows.tolist()) == list(range(n)) and (rows != torch.arange(n)).all()
    assert negative_rows(1).tolist() == [0]


def test_pad_positions_change_nothing():
    enc = make_encoder().train()
    x = make_input(garbage=False)
    longer = make_input(L=9, seed=1)  # three more positions, garbage at every pad
    longer.hist[:, :6][x.mask] = x.hist[x.mask]
    longer.query, longer.context = x.query, x.context
    assert (longer.mask[:, :6] == x.mask).all()
    outs = []
    for inp in (x, longer):
        enc.generator = torch.Generator().manual_seed(2)
        outs.append(enc(inp))
    torch.testing.assert_close(outs[0].tokens, outs[1].tokens, rtol=0, atol=1e-13)
    torch.testing.assert_close(outs[0].aux_loss, outs[1].aux_loss, rtol=0, atol=1e-13)


def test_empty_histories_are_finite_with_finite_gradients():
    enc = make_encoder().train()
    x = make_input(lengths=[0, 0, 0], garbage=False)
    x.hist.requires_grad_(True)
    out = enc(x)
    assert (out.tokens == 0).all() and out.aux_loss.item() == 0.0
    (out.tokens.sum() + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
    assert torch.isfinite(x.hist.grad).all()


def test_aux_loss_weight_zero_disables_it():
    enc = make_encoder(aux_loss_weight=0.0).train()
    assert enc(make_input()).aux_loss is None


def test_bad_options_name_the_encoder():
    with pytest.raises(ValueError, match="(?s)'dien'.*hiden"):
        make_encoder(hiden=4)


# ---- Dice ---------------------------------------------------------------------------------------


def test_dice_matches_its_formula_in_train_and_eval():
    g = torch.Generator().manual_seed(0)
    dice = Dice(4).double()
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.25, -0.5, 1.0]))
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2 + 1
    got = dice.train()(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)  # batch statistics (biased, as BatchNorm)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-9))
    torch.testing.assert_close(got, p * x + (1 - p) * dice.alpha.detach() * x, rtol=1e-10, atol=1e-12)
    # running statistics: momentum 0.01 from mean 0, variance 1 (unbiased batch variance)
    run_mean, run_var = 0.01 * mean, 0.99 + 0.01 * x.var(0, unbiased=True)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64)
    p = torch.sigmoid((y - run_mean) / torch.sqrt(run_var + 1e-9))
    torch.testing.assert_close(dice.eval()(y), p * y + (1 - p) * dice.alpha.detach() * y, rtol=1e-10, atol=1e-12)
    # leading positions share the statistics
    z = x.reshape(2, 3, 4)
    torch.testing.assert_close(Dice(4).double().train()(z), Dice(4).double().train()(x).reshape(2, 3, 4))


@NEEDS_FUXICTR
def test_dice_matches_fuxictr():
    from fuxictr.pytorch.layers.activations import Dice as TheirDice

    g = torch.Generator().manual_seed(0)
    ours, theirs = Dice(5), TheirDice(5)
    with torch.no_grad():
        a = torch.randn(5, generator=g)
        ours.alpha.copy_(a)
        theirs.alpha.copy_(a)
    ours.train(), theirs.train()
    for _ in range(3):  # training mode: batch statistics; the running ones move alike
        x = torch.randn(8, 5, generator=g) * 3 + 2
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    ours.eval(), theirs.eval()
    x = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


def test_mlp_with_dice_has_one_per_hidden_layer():
    mlp = MLP(6, [8, 4], 1, activation="dice")
    dices = [m for m in mlp.modules() if isinstance(m, Dice)]
    assert [d.alpha.numel() for d in dices] == [8, 4]
    assert mlp(torch.randn(5, 6)).shape == (5, 1)
    from rankmixer.nn.mlp import make_activation

    with pytest.raises(ValueError, match="dice.*width"):
        make_activation("dice")
