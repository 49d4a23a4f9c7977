"""Sparse per-token mixture of experts: the Sparse-MoE / DTSI-MoE variant of RankMixer's FFN.

:class:`PerTokenMoE` is a drop-in replacement for the per-token FFN (``nn/per_token_ffn.py``):
each of the ``T`` tokens owns ``E`` experts, every expert a two-layer GELU FFN
``e_{t,j}(s) = W2_{t,j} GELU(W1_{t,j} s + b1_{t,j}) + b2_{t,j}`` (``D -> H -> D``,
``H = round(expansion * D * expert_hidden_mult)``), and its own router(s). The output is
``v_t = sum_j G_{t,j} e_{t,j}(s_t)``; ``forward`` returns ``(out [B,T,D], aux_loss, metrics)``.

Why it is built this way:

* Routing (:class:`MoEConfig`): ReLU gates made sparse by an L1 penalty (``relu``); the
  paper's dense-training / sparse-inference variant with two routers (``relu_dtsi``, the
  default); top-k softmax, the baseline the paper says degrades with sparsity (``topk``). The
  paper does not say how DTSI keeps the inference router on the task path: ``dtsi_mode``
  records the choice and its alternative.
* The L1 weight is not a hyperparameter to tune per target: a controller
  (:meth:`PerTokenMoE._controller_step`) adapts it so that the measured active ratio holds
  ``target_active_ratio``. It is state (buffers), so it survives checkpoints.
* Training computes every expert in two batched matmuls (no Python loop, so each weight
  gradient is written once); eval skips the inactive experts
  (:meth:`PerTokenMoE.sparse_experts`): the inference compute is the active share, which is
  the point of a sparse MoE.

The measurements behind the defaults (DTSI ``sample`` vs ``mix``, the controller's rate, the
``relu_grad_leak`` trial, sparse vs dense inference and the ``auto`` implementation choice)
are in ``docs/performance.md``, section "Sparse per-token MoE". One file, though over 400
lines: routing, the controller and both compute paths read the same expert weights and gate
tensors; apart they would reach into each other's internals.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.per_token_ffn import PerTokenFFN


class MoEConfig(StrictModel):
    """Typed config of :class:`PerTokenMoE` (unknown keys are errors).

    Routing (``routing``):

    ``relu``
        ``G_t = ReLU(h_t(s_t))`` with ``h_t`` a per-token linear ``D -> E``. Sparsity comes from
        an L1 penalty ``aux = lambda * mean_{b,t} sum_j G_{b,t,j}`` (the L1 norm of a token's gate
        vector, averaged over the batch and the tokens) whose weight ``lambda`` the controller
        adapts. The same gates are used in training and inference.
    ``relu_dtsi`` (default; dense training, sparse inference)
        Two ReLU routers per token, ``h_train`` and ``h_infer``. The L1 penalty and the
        controller see only ``G_infer``; inference uses ``G_infer`` alone. Both must be on the
        training task path, or ``h_infer`` gets only the L1 gradient and collapses to zero (the
        pitfall of public versions). ``dtsi_mode`` picks how (``m = dtsi_mix``):

        - ``sample`` (default): per sample (row), the training gate is ``G_train`` with
          probability ``m`` and ``G_infer`` otherwise (drawn independently in every layer and
          step). On the ``G_infer`` rows training computes exactly what inference computes, so
          the task loss forces ``h_infer`` *alone* to be good; on the ``G_train`` rows (no
          penalty, dense) every expert keeps getting gradient ("dense training").
        - ``mix``: ``G = m * G_train + (1 - m) * G_infer`` on every row (the obvious reading).
          It gives ``h_infer`` a task gradient, but ``G_train`` can carry the whole task at no
          L1 cost, so the controller drives ``G_infer`` to zero and inference breaks. Kept for
          comparison only.

        ``dtsi_mix = 1`` is rejected (``h_infer`` off the task path). ``dtsi_mix_end`` with
        ``dtsi_anneal_steps`` anneals ``m`` linearly over that many training forwards (e.g. to
        0: training ends on the inference routing alone).
    ``topk``
        Top-k softmax gating: ``p = softmax(h_t(s_t))``, keep the ``top_k`` largest, renormalise
        to sum 1. ``top_k`` defaults to ``max(1, round(target_active_ratio * E))``. Optional
        Switch-style load-balancing loss per token position,
        ``aux = w * mean_t E * sum_j f_{t,j} P_{t,j}`` with ``f`` the share of routed slots going
        to expert ``j`` (divided by ``k``) and ``P`` its mean probability (``w`` when balanced).

    TokenMixer-Large's Sparse-Pertoken MoE ("sparse train, sparse infer") is ``topk`` with
    three switches: ``shared_expert`` (one always-active expert per token, added ungated),
    ``gate_scale`` (``alpha``: the routed gates are multiplied by it, the paper's gate value
    scaling, about ``E / k``) and ``sparse_training`` (training computes only the routed
    experts, as inference does).

    ``relu_grad_leak`` (off by default) gives the *task* gradient a slope below zero (forward
    value unchanged, the L1 term keeps the true ReLU gradient) so that dead gates can come back.
    """

    num_experts: int = Field(4, ge=1)
    routing: Literal["relu_dtsi", "relu", "topk"] = "relu_dtsi"
    # top-k only; None -> max(1, round(target_active_ratio * num_experts)). Ignored otherwise.
    top_k: int | None = Field(None, ge=1)
    # Average share of experts with a non-zero gate per token (the inference compute budget).
    target_active_ratio: float = Field(0.25, gt=0.0, le=1.0)
    # Expert hidden width = round(expansion * D * expert_hidden_mult); 1.0: E experts = E x the
    # per-token FFN's parameters; 1/E: parameter-matched.
    expert_hidden_mult: float = Field(1.0, gt=0.0)
    # L1 controller (relu, relu_dtsi).
    l1_lambda_init: float = Field(1e-2, ge=0.0)
    l1_adapt_rate: float = Field(0.03, ge=0.0)  # 0 freezes lambda at l1_lambda_init
    l1_ema: float = Field(0.9, ge=0.0, lt=1.0)  # EMA decay of the measured active ratio
    l1_lambda_min: float = Field(1e-6, ge=0.0)
    l1_lambda_max: float = Field(10.0, gt=0.0)
    # DTSI: "sample": each row uses G_train with probability dtsi_mix, else G_infer; "mix":
    # G = dtsi_mix * G_train + (1 - dtsi_mix) * G_infer. dtsi_mix < 1 keeps h_infer on the task path.
    dtsi_mode: Literal["sample", "mix"] = "sample"
    dtsi_mix: float = Field(0.5, ge=0.0, lt=1.0)
    dtsi_mix_end: float | None = Field(None, ge=0.0, lt=1.0)  # anneal target (None: constant)
    dtsi_anneal_steps: int = Field(0, ge=0)
    # ReLU gates, training only: slope of the task gradient below zero (straight-through leak,
    # the L1 term keeps the true ReLU gradient) so that a gate that is off for every row can come
    # back. Off by default (docs/performance.md: what it did on the synthetic task).
    relu_grad_leak: float = Field(0.0, ge=0.0)
    # top-k: Switch-style load-balancing loss weight (0 disables).
    load_balance_weight: float = Field(0.01, ge=0.0)
    # Eval mode skips inactive experts (False: compute all experts, multiply by the gates).
    sparse_inference: bool = True
    # Sparse-Pertoken MoE (top-k only): always-active shared expert per token, gate value
    # scaling alpha on the routed gates, and training that computes only the routed experts.
    shared_expert: bool = False
    gate_scale: float = Field(1.0, gt=0.0)
    sparse_training: bool = False
    sparse_impl: Literal["auto", "loop", "padded"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.routing == "topk" and self.top_k is not None and self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} > num_experts={self.num_experts}")
        if self.l1_lambda_min > self.l1_lambda_max:
            raise ValueError("l1_lambda_min > l1_lambda_max")
        if self.routing != "topk" and (self.sparse_training or self.gate_scale != 1.0):
            raise ValueError("sparse_training and gate_scale are for routing=topk (a fixed k routed experts)")
        return self

    @property
    def k(self) -> int:
        """Experts per token under top-k routing."""
        if self.top_k is not None:
            return self.top_k
        return max(1, min(self.num_experts, round(self.target_active_ratio * self.num_experts)))


class PerTokenLinear(nn.Module):
    """``T`` independent linear maps ``D -> O``, one per token: ``[B, T, D] -> [B, T, O]`` in one
    batched matmul. Weight ``[T, D, O]``, bias ``[T, O]``."""

    def __init__(self, num_tokens: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tokens, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_tokens, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight).transpose(0, 1)


class PerTokenMoE(nn.Module):
    """Per-token sparse MoE FFN (routing: :class:`MoEConfig`; controller: :meth:`_controller_step`).

    ``forward(x [B, T, D]) -> (out [B, T, D], aux_loss (0-dim tensor), metrics dict[str, float])``.
    ``aux_loss`` is to be added to the task loss (already weighted by lambda / the LB weight).

    Storage: four stacked parameters ``w1 [T, E, D, H]``, ``b1 [T, E, H]``, ``w2 [T, E, H, D]``,
    ``b2 [T, E, D]`` (routers ``[T, D, E]`` / ``[T, E]``). Compute:

    * training (dense) runs every expert of every token in two batched matmuls over the ``T*E``
      experts (``w1.view(T*E, D, H)`` is a view; the input is expanded to ``[T*E, B, D]``), the
      gate folded in before the second matmul (``G (a W2 + b2) = (G a) W2 + G b2``). Slicing one
      stacked parameter inside a Python loop would make autograd materialise a full-size zero
      gradient per slice, hence no loop.
    * sparse inference (eval, ``sparse_inference=True``) never computes an inactive expert: one
      ``nonzero`` over the gate mask lists the active (token, expert, row) triples grouped by
      expert, one ``index_select`` gathers their inputs, each expert runs on its rows, one
      ``index_add_`` scatters ``G * e(s)`` back. ``sparse_impl``: ``loop`` (a Python loop over
      the ``T*E`` experts, two ``addmm`` each on weight views; exactly the active rows),
      ``padded`` (every expert's rows padded to the largest count ``C``, one ``baddbmm`` over
      the experts: fewer kernel launches, ``T*E*C >= active`` rows), ``auto`` (``padded`` on
      CUDA; on CPU ``loop`` with one thread, else ``padded`` unless padding would more than
      double the rows computed, as with unbalanced experts). Meant for ``no_grad`` /
      ``inference_mode``: under autograd it stays correct, but ``loop`` slices the weights.
    * dense inference (eval, ``sparse_inference=False``) runs the training path with the
      inference gates: the reference the sparse path must equal.

    Metrics (every training forward, and in eval): ``{prefix}/active_ratio`` (share of active
    (row, token, expert) gates, of ``G_infer`` for DTSI), ``{prefix}/active_ratio/t{t}`` per
    token, ``{prefix}/l1_lambda`` (the L1 weight applied this step; 0 for top-k),
    ``{prefix}/active_ratio_ema``, ``{prefix}/aux_loss`` and, for DTSI, ``{prefix}/dtsi_mix``.
    Reading them costs one host sync per forward.
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        expansion: float = 4,
        cfg: MoEConfig | None = None,
        metric_prefix: str = "moe",
    ) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else MoEConfig()
        T, D, E = num_tokens, dim, cfg.num_experts
        H = max(1, round(expansion * dim * cfg.expert_hidden_mult))
        self.cfg, self.num_tokens, self.dim, self.num_experts, self.hidden = cfg, T, D, E, H
        self.metric_prefix = metric_prefix

        self.w1 = nn.Parameter(torch.empty(T, E, D, H))
        self.b1 = nn.Parameter(torch.empty(T, E, H))
        self.w2 = nn.Parameter(torch.empty(T, E, H, D))
        self.b2 = nn.Parameter(torch.empty(T, E, D))
        # nn.Linear's default init, expert by expert (fan-in D for layer 1, H for layer 2).
        for w, b, fan_in in ((self.w1, self.b1, D), (self.w2, self.b2, H)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

        self.router = PerTokenLinear(T, D, E)  # h_infer for DTSI; the only router otherwise
        # the shared expert: one more per-token GELU FFN of the experts' width, never gated
        self.shared = PerTokenFFN(T, D, H / D) if cfg.shared_expert else None
        self.router_train = PerTokenLinear(T, D, E) if cfg.routing == "relu_dtsi" else None

        self.register_buffer("l1_lambda", torch.tensor(float(cfg.l1_lambda_init)))
        self.register_buffer("ratio_ema", torch.tensor(0.0))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        self.last_expert_rows = 0  # rows the experts processed in the last forward (diagnostic)

    # ----------------------------------------------------------------------------- routing
    def dtsi_mix_now(self) -> float:
        """The DTSI training mix at the current update count (anneals if configured)."""
        c = self.cfg
        if c.dtsi_mix_end is None or c.dtsi_anneal_steps == 0:
            return c.dtsi_mix
        frac = min(1.0, int(self.num_updates) / c.dtsi_anneal_steps)
        return c.dtsi_mix + (c.dtsi_mix_end - c.dtsi_mix) * frac

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(G_task, active_mask, aux_loss)`` for the current mode.

        ``G_task [B, T, E]`` weights the experts' outputs (training: the DTSI mix; eval: the
        inference gates); ``active_mask`` marks the inference gates that are non-zero (what
        sparse inference runs and what the controller measures)."""
        c = self.cfg
        zero = x.new_zeros(())
        if c.routing == "topk":
            logits = self.router(x)
            probs = logits.softmax(-1)
            top_p, top_i = probs.topk(c.k, dim=-1)
            top_p = top_p / top_p.sum(-1, keepdim=True)
            G = torch.zeros_like(probs).scatter(-1, top_i, top_p * c.gate_scale)
            mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_i, True)
            aux = zero
            if self.training and c.load_balance_weight > 0:
                f = mask.to(probs.dtype).mean(0) / c.k  # [T, E] share of routed slots
                P = probs.mean(0)  # [T, E]
                aux = c.load_balance_weight * self.num_experts * (f * P).sum(-1).mean()
            return G, mask, aux
        h_inf = self.router(x)
        G_inf = F.relu(h_inf)
        mask = G_inf > 0
        if not self.training:
            return G_inf, mask, zero
        lam = self.l1_lambda.detach().clone().to(G_inf.dtype)  # the buffer is updated in place later
        aux = lam * G_inf.sum(-1).mean()
        G = self._leaky(G_inf, h_inf)
        if c.routing == "relu_dtsi":
            assert self.router_train is not None
            m = self.dtsi_mix_now()
            h_tr = self.router_train(x)
            G_tr = self._leaky(F.relu(h_tr), h_tr)
            if c.dtsi_mode == "mix":
                G = m * G_tr + (1.0 - m) * G
            else:  # per sample: the training router with probability m, else the inference one
                use_tr = torch.rand(x.shape[0], 1, 1, device=x.device) < m
                G = torch.where(use_tr, G_tr, G)
        return G, mask, aux

    def _leaky(self, G: Tensor, h: Tensor) -> Tensor:
        """``G = relu(h)`` in value; gradient slope ``relu_grad_leak`` where ``h < 0``."""
        leak = self.cfg.relu_grad_leak
        if leak == 0:
            return G
        neg = h.clamp(max=0.0)
        return G + leak * (neg - neg.detach())

    @torch.no_grad()
    def _controller_step(self, mask: Tensor) -> None:
        """The L1 controller (``relu`` / ``relu_dtsi``), after every training forward with grad.

        With ``r`` the measured active ratio (share of ``G_infer > 0`` over batch, tokens and
        experts) and ``target = target_active_ratio``::

            ema    = r                               on the first update
            ema    = beta * ema + (1 - beta) * r      afterwards             (beta = l1_ema)
            lambda = clip(lambda * (max(ema, target / 100) / target) ** rate,
                          l1_lambda_min, l1_lambda_max)                      (rate = l1_adapt_rate)

        i.e. ``log lambda`` integrates ``rate * log(ema / target)``: too many active experts ->
        lambda grows, too few -> it shrinks, symmetrically in log space (2x and 1/2 the target
        move lambda by the same factor), so one rate serves targets 1/2 .. 1/8. (ReMoE, Wang et
        al. 2025, uses the bang-bang ``lambda *= 1.2 ** sign(error)``.) An error relative to the
        target would be asymmetric (+7 at most above a 1/8 target, -1 below) and overshoots. The
        ratio responds to lambda only after tens of steps (the optimizer must move the router),
        and gates switched off for every input get no gradient, so they come back slowly. A
        step's loss uses lambda *before* its update; everything stays on the device. Caveats:
        activation checkpointing that re-runs the forward updates twice per step; with gradient
        accumulation lambda moves once per micro-batch."""
        c = self.cfg
        r = mask.float().mean()
        ema = torch.where(self.num_updates == 0, r, c.l1_ema * self.ratio_ema + (1 - c.l1_ema) * r)
        self.ratio_ema.copy_(ema)
        if c.l1_adapt_rate > 0 and c.routing != "topk":
            tgt = c.target_active_ratio
            err = torch.log(ema.clamp(min=tgt / 100) / tgt)
            lam = self.l1_lambda * torch.exp(c.l1_adapt_rate * err)
            self.l1_lambda.copy_(lam.clamp(c.l1_lambda_min, c.l1_lambda_max))
        self.num_updates += 1

    # ----------------------------------------------------------------------------- experts
    def dense_experts(self, x: Tensor, G: Tensor, impl: str = "batched") -> Tensor:
        """``sum_j G[..., j] * e_j(x)`` computing *every* expert of every token.

        ``batched`` (training and eval default): two batched matmuls over the ``T*E`` experts.
        ``loop`` (benchmark baseline; no autograd): one ``addmm`` pair per expert on all rows,
        accumulated in place. On one CPU thread it is faster than ``batched`` for large shapes
        (its ``[B, H]`` intermediates stay in cache where ``batched`` writes ``[T*E, B, H]``
        tensors to memory), so the benchmark compares sparse inference with the faster one."""
        B, T, D = x.shape
        E, H = self.num_experts, self.hidden
        TE = T * E
        self.last_expert_rows = TE * B
        if impl == "loop":
            if torch.is_grad_enabled() and (x.requires_grad or self.w1.requires_grad):
                raise RuntimeError("dense_experts(impl='loop') is for inference; use it under torch.no_grad()")
            xt = x.transpose(0, 1).contiguous()  # [T, B, D]
            out = x.new_zeros(T, B, D)
            for t in range(T):
                for e in range(E):
                    a = F.gelu(torch.addmm(self.b1[t, e], xt[t], self.w1[t, e]))
                    out[t].addcmul_(torch.addmm(self.b2[t, e], a, self.w2[t, e]), G[:, t, e : e + 1])
            return out.transpose(0, 1)
        if impl != "batched":
            raise ValueError(f"unknown dense impl {impl!r}")
        xe = x.transpose(0, 1).unsqueeze(1).expand(T, E, B, D).reshape(TE, B, D)
        a = F.gelu(torch.baddbmm(self.b1.view(TE, 1, H), xe, self.w1.view(TE, D, H)))
        g = G.permute(1, 2, 0).reshape(TE, B, 1)  # [T*E, B, 1]
        a = a.mul_(g) if not torch.is_grad_enabled() else a * g
        y = torch.bmm(a, self.w2.view(TE, H, D)).view(T, E, B, D).sum(1)  # [T, B, D]
        y = torch.baddbmm(y, G.transpose(0, 1), self.b2)  # + sum_j G_j b2_j
        return y.transpose(0, 1)

    def _active_triples(self, G: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Active gates grouped by expert: ``(group = t*E + e, row = b*T + t, gate, counts[T*E])``,
        sorted by group (``nonzero`` returns row-major order over ``[T, E, B]``)."""
        _, T, E = G.shape
        mask_teb = mask.permute(1, 2, 0)
        nz = mask_teb.nonzero()  # [N, 3] (t, e, b)
        t, e, b = nz.unbind(1)
        gate = G.permute(1, 2, 0)[mask_teb]  # same order as nz
        counts = mask_teb.sum(-1).flatten()  # [T*E]
        return t * E + e, b * T + t, gate, counts

    @staticmethod
    def _pick_impl(x: Tensor, counts: Tensor, n_active: int) -> str:
        """``auto``: ``padded`` on CUDA; on CPU ``loop`` with one thread, else ``padded`` unless
        padding would more than double the rows computed (unbalanced experts)."""
        if x.is_cuda:
            return "padded"
        if torch.get_num_threads() == 1 or n_active == 0:
            return "loop"
        padded_rows = int(counts.max()) * counts.numel()  # host sync
        return "padded" if padded_rows <= 2 * n_active else "loop"

    def sparse_experts(self, x: Tensor, G: Tensor, mask: Tensor, impl: str | None = None) -> Tensor:
        """Same result as ``dense_experts(x, G * mask)``, computing only active (row, expert) pairs."""
        impl = impl or self.cfg.sparse_impl
        B, T, D = x.shape
        E, H = self.num_experts, self.hidden
        xf = x.reshape(B * T, D)
        group, rows, gate, counts = self._active_triples(G, mask)
        N = rows.numel()
        if impl == "auto":
            impl = self._pick_impl(x, counts, N)
        if impl == "loop":
            xs = xf.index_select(0, rows)  # [N, D], grouped by expert
            ys: list[Tensor] = []
            start = 0
            for idx, n in enumerate(counts.tolist()):  # the one host sync
                if n == 0:
                    continue
                t, e = divmod(idx, E)
                a = F.gelu(torch.addmm(self.b1[t, e], xs[start : start + n], self.w1[t, e]))
                ys.append(torch.addmm(self.b2[t, e], a, self.w2[t, e]))
                start += n
            self.last_expert_rows = N
            if not ys:
                return x.new_zeros(B, T, D)
            y = torch.cat(ys) * gate.unsqueeze(1).to(ys[0].dtype)
            out = y.new_zeros(B * T, D).index_add_(0, rows, y)
            return out.view(B, T, D)
        if impl != "padded":
            raise ValueError(f"unknown sparse_impl {impl!r}")
        TE = T * E
        C = int(counts.max()) if N else 0  # host sync
        if C == 0:
            self.last_expert_rows = 0
            return x.new_zeros(B, T, D)
        offsets = counts.cumsum(0) - counts
        pos = torch.arange(N, device=x.device) - offsets[group]
        slot = group * C + pos  # position in the padded [T*E, C] layout
        idx = torch.full((TE * C,), B * T, dtype=torch.long, device=x.device)  # pad -> zero row
        idx[slot] = rows
        gpad = gate.new_zeros(TE * C)
        gpad[slot] = gate
        xpad = torch.cat([xf, xf.new_zeros(1, D)]).index_select(0, idx).view(TE, C, D)
        a = F.gelu(torch.baddbmm(self.b1.view(TE, 1, H), xpad, self.w1.view(TE, D, H)))
        y = torch.baddbmm(self.b2.view(TE, 1, D), a, self.w2.view(TE, H, D))
        y = y.view(TE * C, D) * gpad.unsqueeze(1).to(y.dtype)
        self.last_expert_rows = TE * C
        out = y.new_zeros(B * T + 1, D).index_add_(0, idx, y)
        return out[: B * T].view(B, T, D)

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
        if x.dim() != 3 or x.shape[1] != self.num_tokens or x.shape[2] != self.dim:
            raise ValueError(f"expected [B, {self.num_tokens}, {self.dim}], got {list(x.shape)}")
        c = self.cfg
        G, mask, aux = self.gates(x)
        if self.training and c.sparse_training:
            out = self.sparse_experts(x, G, mask, impl="padded")  # "loop" would slice the weights
        elif self.training or not c.sparse_inference:
            out = self.dense_experts(x, G)
        else:
            out = self.sparse_experts(x, G, mask)
        if self.shared is not None:
            out = out + self.shared(x)
        lam = self.l1_lambda.detach().clone()  # before this step's update (what the loss used)
        if c.routing == "topk":
            lam.zero_()
        mix = self.dtsi_mix_now() if self.training and c.routing == "relu_dtsi" else 0.0
        if self.training and torch.is_grad_enabled():
            self._controller_step(mask)
        per_token = mask.float().mean(dim=(0, 2))  # [T]
        stats = torch.cat([per_token.mean().view(1), self.ratio_ema.view(1).float(),
                           lam.view(1).float(), aux.detach().view(1).float(), per_token])
        vals = stats.tolist()  # the one host sync of the metrics
        p = self.metric_prefix
        metrics = {
            f"{p}/active_ratio": vals[0],
            f"{p}/active_ratio_ema": vals[1],
            f"{p}/l1_lambda": vals[2],
            f"{p}/aux_loss": vals[3],
        }
        if c.routing == "relu_dtsi":
            metrics[f"{p}/dtsi_mix"] = mix
        for t, v in enumerate(vals[4:]):
            metrics[f"{p}/active_ratio/t{t}"] = v
        return out, aux, metrics

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"tokens={self.num_tokens}, dim={self.dim}, experts={self.num_experts}, hidden={self.hidden}, "
                f"routing={c.routing}, target_active_ratio={c.target_active_ratio}")
