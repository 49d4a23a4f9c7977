"""PerTokenMoE: exactness against a slow float64 reference, DTSI gradients, the L1 controller,
sparse inference (same output, less compute), top-k routing, checkpointing of lambda."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from rankmixer.nn.moe import MoEConfig, PerTokenMoE

pytestmark = pytest.mark.usefixtures("single_thread")

T, D, K = 3, 8, 2  # tokens, width, expansion (hidden = 16)


def make(routing: str = "relu", E: int = 4, dtype=torch.float32, seed: int = 0, **kw) -> PerTokenMoE:
    torch.manual_seed(seed)
    return PerTokenMoE(T, D, K, MoEConfig(routing=routing, num_experts=E, **kw)).to(dtype)


def reference(m: PerTokenMoE, x: torch.Tensor, gate_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow float64 loops: G = ReLU(x W_r + b_r) per token, out = sum_j G_j e_j(x) with the
    exact (erf) GELU written out. Returns (out, G)."""
    x = x.double()
    B = x.shape[0]
    w_r, b_r = m.router.weight.double(), m.router.bias.double()
    w1, b1, w2, b2 = (p.double() for p in (m.w1, m.b1, m.w2, m.b2))
    G = torch.zeros(B, T, m.num_experts, dtype=torch.float64)
    out = torch.zeros(B, T, D, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            pre = x[b, t] @ w_r[t] + b_r[t]
            G[b, t] = gate_fn(pre) if gate_fn else torch.clamp(pre, min=0.0)
            for e in range(m.num_experts):
                h = x[b, t] @ w1[t, e] + b1[t, e]
                a = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
                out[b, t] += G[b, t, e] * (a @ w2[t, e] + b2[t, e])
    return out, G


def set_ratio(m: PerTokenMoE, x: torch.Tensor, ratio: float) -> None:
    """Router biases such that about ``ratio`` of the inference gates on ``x`` are positive."""
    with torch.no_grad():
        m.router.bias.zero_()
        q = torch.quantile(m.router(x).double(), 1.0 - ratio, dim=0)
        m.router.bias.copy_(-q.to(m.router.bias.dtype))


# ---------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("routing", ["relu", "relu_dtsi"])
def test_all_active_equals_dense_reference_float64(routing):
    m = make(routing, dtype=torch.float64, relu_grad_leak=0.0)
    with torch.no_grad():  # every inference gate > 0 (and the training router's, for DTSI)
        m.router.bias.fill_(10.0)
        if m.router_train is not None:
            m.router_train.bias.fill_(10.0)
    x = torch.randn(6, T, D, dtype=torch.float64)
    ref, G = reference(m, x)
    assert (G > 0).all()
    m.eval()
    for sparse in (True, False):
        m.cfg.sparse_inference = sparse
        out, aux, metrics = m(x)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        assert metrics["moe/active_ratio"] == 1.0
    if routing == "relu":  # the training path computes the same gates (no mix)
        m.train()
        out, aux, metrics = m(x)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        assert aux.item() > 0


@pytest.mark.parametrize("routing", ["relu", "relu_dtsi", "topk"])
@pytest.mark.parametrize("impl", ["loop", "padded"])
def test_sparse_inference_equals_masked_dense(routing, impl):
    m = make(routing, E=4, sparse_impl=impl, top_k=2 if routing == "topk" else None).eval()
    x = torch.randn(64, T, D)
    if routing != "topk":
        set_ratio(m, x, 0.3)
    with torch.no_grad():
        G, mask, _ = m.gates(x)
        assert 0 < mask.float().mean() < 1
        dense = m.dense_experts(x, G * mask)
        dense_loop = m.dense_experts(x, G * mask, impl="loop")
        out, _, metrics = m(x)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense_loop, dense, rtol=1e-5, atol=1e-5)
    assert metrics["moe/active_ratio"] == pytest.approx(mask.float().mean().item())
    if routing == "relu":  # and both equal the float64 reference on a partial mask
        ref, Gref = reference(m, x)
        assert torch.equal(Gref > 0, mask)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_sparse_inference_skips_inactive_experts_compute():
    """Matmul FLOPs counted by torch's FlopCounterMode: the sparse path does exactly the
    active (row, expert) pairs' work, the dense path all of it."""
    B, E = 64, 4
    m = make("relu_dtsi", E=E, sparse_impl="loop").eval()
    x = torch.randn(B, T, D)
    set_ratio(m, x, 0.25)
    H = m.hidden
    with torch.no_grad():
        n_active = int((m.gates(x)[0] > 0).sum())
    router = 2 * B * T * D * E
    per_row = 2 * (D * H + H * D)  # two matmuls per (row, expert)

    def flops(sparse: bool) -> int:
        m.cfg.sparse_inference = sparse
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(x)
        return fc.get_total_flops()

    dense, sparse = flops(False), flops(True)
    assert dense >= router + B * T * E * per_row
    assert sparse == router + n_active * per_row
    assert m.last_expert_rows == n_active
    assert n_active < 0.4 * B * T * E and sparse < 0.45 * dense


def test_auto_impl_choice():
    m = make("relu", E=4).eval()
    x = torch.randn(64, T, D)
    set_ratio(m, x, 0.25)
    with torch.no_grad():
        _, mask, _ = m.gates(x)
    counts, n = mask.sum(0).flatten(), int(mask.sum())
    assert m._pick_impl(x, counts, n) == "loop"  # one thread (fixture)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert m._pick_impl(x, counts, n) == "padded"  # balanced: padding < 2x
        skewed = torch.tensor([n] + [0] * (counts.numel() - 1))
        assert m._pick_impl(x, skewed, n) == "loop"  # one expert has all rows
    finally:
        torch.set_num_threads(before)


def test_padded_sparse_rows_bounded_by_largest_expert():
    m = make("relu", E=4, sparse_impl="padded").eval()
    x = torch.randn(64, T, D)
    set_ratio(m, x, 0.25)
    with torch.no_grad():
        _, mask, _ = m.gates(x)
        m(x)
    C = int(mask.sum(0).max())
    assert m.last_expert_rows == T * 4 * C < 64 * T * 4


# ---------------------------------------------------------------------------------- DTSI
@pytest.mark.parametrize("mode", ["sample", "mix"])
def test_dtsi_inference_router_gets_task_gradient(mode):
    m = make("relu_dtsi", dtsi_mode=mode, l1_lambda_init=0.0, l1_adapt_rate=0.0).train()
    x, y = torch.randn(64, T, D), torch.randn(64, T, D)
    out, aux, _ = m(x)
    assert aux.item() == 0.0
    ((out - y) ** 2).mean().backward()  # task loss alone
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0
    assert m.router_train.weight.grad is not None and m.router_train.weight.grad.abs().sum() > 0


def test_dtsi_mix_anneals():
    m = make("relu_dtsi", dtsi_mix=0.8, dtsi_mix_end=0.0, dtsi_anneal_steps=4).train()
    mixes = [m(torch.randn(8, T, D))[2]["moe/dtsi_mix"] for _ in range(6)]
    assert mixes == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0, 0.0])


def test_dtsi_inference_uses_infer_router_only():
    m = make("relu_dtsi").eval()
    x = torch.randn(16, T, D)
    with torch.no_grad():
        out1, _, _ = m(x)
        m.router_train.weight.normal_()
        m.router_train.bias.fill_(3.0)
        out2, _, _ = m(x)
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)


# ---------------------------------------------------------------------------------- controller
def _train(m: PerTokenMoE, steps: int, B: int = 128, seed: int = 0):
    """A synthetic regression: fit a fixed random dense per-token FFN (gate 5)."""
    torch.manual_seed(seed + 1)
    teacher = PerTokenMoE(T, D, 4, MoEConfig(routing="relu", num_experts=1)).eval()
    with torch.no_grad():
        teacher.router.weight.zero_()
        teacher.router.bias.fill_(5.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    ratios = []
    m.train()
    for _ in range(steps):
        x = torch.randn(B, T, D)
        with torch.no_grad():
            y = teacher(x)[0]
        out, aux, metrics = m(x)
        loss = ((out - y) ** 2).mean() + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        ratios.append(metrics["moe/active_ratio"])
    m.eval()
    x = torch.randn(1024, T, D)
    with torch.no_grad():
        y = teacher(x)[0]
        out, _, metrics = m(x)
    return ratios, metrics["moe/active_ratio"], ((out - y) ** 2).mean().item() / y.var().item()


@pytest.mark.parametrize("target,bias0", [(1 / 2, 0.0), (1 / 4, 0.0), (1 / 4, 1.0)])
def test_controller_reaches_target_ratio(target, bias0):
    """Default controller settings. bias0 = 0: the default init (~half the gates on);
    bias0 = 1: a near-dense start (~95% on), the case where the controller can overshoot."""
    m = make("relu_dtsi", E=4, target_active_ratio=target)
    with torch.no_grad():
        m.router.bias.fill_(bias0)
    lam0 = m.l1_lambda.item()
    ratios, eval_ratio, rel_mse = _train(m, steps=400)
    assert ratios[0] > (0.85 if bias0 else 0.35)
    train_ratio = sum(ratios[-50:]) / 50
    assert abs(train_ratio - target) <= 0.2 * target, (train_ratio, target)
    assert abs(eval_ratio - target) <= 0.2 * target, (eval_ratio, target)
    assert m.l1_lambda.item() != lam0
    # the inference routing alone still fits the task (it does not with dtsi_mode="mix")
    assert rel_mse < 0.5, rel_mse


def test_controller_frozen_when_rate_zero_and_in_eval():
    m = make("relu", l1_adapt_rate=0.0, l1_lambda_init=0.5)
    x = torch.randn(32, T, D)
    _, _, metrics = m.train()(x)
    assert m.l1_lambda.item() == 0.5 and metrics["moe/l1_lambda"] == 0.5
    m2 = make("relu")
    lam0 = m2.l1_lambda.item()
    with torch.no_grad():
        m2.train()(x)  # training mode but no grad: no update
    m2.eval()(x)
    assert m2.num_updates.item() == 0 and m2.l1_lambda.item() == lam0
    m2.train()(x)
    assert m2.num_updates.item() == 1 and m2.l1_lambda.item() != lam0


def test_metrics_every_training_forward():
    m = make("relu_dtsi").train()
    _, _, metrics = m(torch.randn(16, T, D))
    for key in ["moe/active_ratio", "moe/l1_lambda", "moe/active_ratio_ema", "moe/aux_loss", "moe/dtsi_mix"]:
        assert isinstance(metrics[key], float)
    per_token = [metrics[f"moe/active_ratio/t{t}"] for t in range(T)]
    assert metrics["moe/active_ratio"] == pytest.approx(sum(per_token) / T)
    m2 = PerTokenMoE(T, D, K, MoEConfig(), metric_prefix="block0/moe")
    assert "block0/moe/active_ratio/t2" in m2(torch.randn(4, T, D))[2]


def test_state_dict_round_trip_keeps_lambda():
    m = make("relu_dtsi", l1_adapt_rate=0.2)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    for _ in range(5):
        out, aux, _ = m.train()(torch.randn(32, T, D))
        (out.pow(2).mean() + aux).backward()
        opt.step()
        opt.zero_grad()
    assert m.l1_lambda.item() != m.cfg.l1_lambda_init
    sd = m.state_dict()
    assert {"l1_lambda", "ratio_ema", "num_updates"} <= set(sd)
    m2 = make("relu_dtsi", l1_adapt_rate=0.2, seed=1)
    m2.load_state_dict(sd)
    for name in ("l1_lambda", "ratio_ema", "num_updates"):
        assert torch.equal(getattr(m2, name), getattr(m, name))
    x = torch.randn(8, T, D)
    with torch.no_grad():
        torch.testing.assert_close(m2.eval()(x)[0], m.eval()(x)[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_picks_exactly_k(k):
    m = make("topk", E=4, top_k=k, load_balance_weight=0.01)
    x = torch.randn(32, T, D)
    for mode in (m.train(), m.eval()):
        G, mask, _ = mode.gates(x)
        assert ((G > 0).sum(-1) == k).all() and (mask.sum(-1) == k).all()
        torch.testing.assert_close(G.sum(-1), torch.ones(32, T))
    m.train()
    _, aux, metrics = m(x)
    assert metrics["moe/active_ratio"] == pytest.approx(k / 4) and metrics["moe/l1_lambda"] == 0.0
    assert aux.item() > 0  # load-balancing loss, >= weight (1.0 x weight when balanced)
    aux.backward()
    assert m.router.weight.grad.abs().sum() > 0
    # the reference with softmax-top-k gates
    ref, _ = reference(m.double().eval(), x.double(), gate_fn=lambda pre: _topk_gate(pre, k))
    with torch.no_grad():
        torch.testing.assert_close(m(x.double())[0], ref, rtol=1e-9, atol=1e-9)


def _topk_gate(pre: torch.Tensor, k: int) -> torch.Tensor:
    p = pre.softmax(-1)
    keep = p >= p.sort(descending=True).values[k - 1]
    p = p * keep
    return p / p.sum()


def test_topk_default_k_from_ratio():
    assert MoEConfig(routing="topk", num_experts=8, target_active_ratio=0.25).k == 2
    assert MoEConfig(routing="topk", num_experts=4, target_active_ratio=0.125).k == 1


# ---------------------------------------------------------------------------------- config
def test_config_is_strict():
    with pytest.raises(ValidationError):
        MoEConfig(num_expert=4)  # typo
    with pytest.raises(ValidationError):
        MoEConfig(routing="topk", num_experts=4, top_k=5)
    with pytest.raises(ValidationError):
        MoEConfig(dtsi_mix=1.0)  # would take h_infer off the task path
    with pytest.raises(ValueError):
        make("relu")(torch.randn(2, T + 1, D))


def test_expert_params_scale_with_experts():
    dense = sum(p.numel() for n, p in make("relu", E=1).named_parameters() if not n.startswith("router"))
    four = sum(p.numel() for n, p in make("relu", E=4).named_parameters() if not n.startswith("router"))
    assert four == 4 * dense == 4 * (2 * D * K * D + K * D + D) * T
    half = PerTokenMoE(T, D, K, MoEConfig(num_experts=4, expert_hidden_mult=0.25))
    assert half.hidden == K * D // 4
