"""The per-token FFN (``nn/per_token_ffn.py``): every implementation equals T separate
``nn.Linear`` FFNs, values and gradients; the fused backward against finite differences; bf16."""

from __future__ import annotations

import pytest
import torch
from tests.factories import reference_ffns

from rankmixer.nn.per_token_ffn import AUTO_IMPL, PerTokenFFN, SharedFFN, resolve_impl

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("impl", ["bmm", "fused", "split"])
def test_per_token_ffn_equals_separate_linear_ffns(impl):
    torch.manual_seed(0)
    T, D = 5, 12
    ffn = PerTokenFFN(T, D, expansion=2, impl=impl)
    assert ffn.impl == ("split" if impl == "split" else "bmm")  # storage layout
    x = torch.randn(7, T, D, requires_grad=True)
    assert ffn.forward_impl(x) == impl
    y = ffn(x)
    refs = reference_ffns(ffn)
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
