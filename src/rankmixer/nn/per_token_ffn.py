"""Per-token feed-forward networks: RankMixer's PFFN and the shared-FFN ablation.

Token ``t`` of ``x [B, T, D]`` has its own two-layer FFN ``v_t = W2_t act(W1_t s_t + b1_t) + b2_t``
(``W1_t: D -> kD``, ``W2_t: kD -> D``; ``act`` = GELU in the paper). Weights are stored in
``x @ W`` orientation (``[in, out]``, the transpose of ``nn.Linear.weight``) and initialised
like ``nn.Linear``, token by token. Three implementations of the same function (``impl``):

``bmm``
    Weights stacked (``w1 [T, D, kD]``, ``b1 [T, kD]``, ``w2 [T, kD, D]``, ``b2 [T, D]``); each
    layer is one ``torch.baddbmm`` over the token axis. No Python loop; backward writes each
    weight gradient once.
``fused``
    The same stacked weights, run token by token by one autograd function
    (:class:`_FusedPerTokenFFN`): GEMM, activation, GEMM on one token's hidden activation while
    it is in cache, weights cast to the compute dtype one token at a time, a hand-written
    backward writing every weight gradient in place. Needs GELU or ReLU and no hidden dropout
    (else ``bmm``); traced, exported and compiled graphs get ``bmm``.
``split``
    ``T`` separate parameters per layer, one ``addmm`` per token. Separate, because slicing
    ``W[t]`` of one stacked parameter in a loop makes autograd materialise a full-size gradient
    per slice.
``auto``
    The implementation timed fastest on this machine for this shape, batch and dtype where
    :mod:`rankmixer.system.auto` has measured it (``rankmixer train`` does): ``bmm`` or
    ``fused`` per call (``measured_impl``; they share their storage), or ``split``, for which
    the module switches its storage once, before training (:meth:`PerTokenFFN.set_storage`).
    Unmeasured, the fixed rule ``AUTO_IMPL``: on CPU ``fused`` when autograd records
    (training), ``bmm`` in inference; on other devices ``bmm``. A checkpoint is saved in the
    requested impl's layout (stacked unless ``split`` was asked for) and loads into either
    storage.

Inference under autocast reuses low-precision copies of the stacked weights while they are
unchanged (:meth:`PerTokenFFN.compute_weights`); ``docs/performance.md`` has the measurements.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.nn.mlp import make_activation

Impl = Literal["auto", "bmm", "fused", "split"]

# The implementation "auto" runs on CPU, per (training?, compute dtype), from the measurements in
# docs/performance.md ("Per-token FFN"). ``bmm`` and ``fused`` share one storage layout, so the choice is made
# per call, not when building.
AUTO_IMPL: dict[tuple[bool, torch.dtype], str] = {
    (True, torch.float32): "fused", (True, torch.bfloat16): "fused",  # forward + backward
    (False, torch.float32): "bmm", (False, torch.bfloat16): "bmm",  # inference (no autograd)
}


def resolve_impl(impl: str, dtype: torch.dtype = torch.float32, grad: bool = True) -> str:
    """``auto`` -> the measured faster implementation for a call with (``grad``) or without
    autograd in ``dtype``; other names pass through."""
    if impl == "auto":
        return AUTO_IMPL.get((grad, dtype), AUTO_IMPL[(grad, torch.float32)])
    if impl not in ("bmm", "fused", "split"):
        raise ValueError(f"unknown per-token FFN impl {impl!r}; known: auto, bmm, fused, split")
    return impl


def ffn_hidden(dim: int, expansion: float) -> int:
    """Hidden width ``round(expansion * dim)`` (at least 1)."""
    return max(1, round(expansion * dim))


def _init_uniform_(t: Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)


# Activations the fused path can run: name -> (forward, backward(grad_out, pre_activation)).
_FUSED_ACTS = {
    "gelu": (F.gelu, lambda g, a: torch.ops.aten.gelu_backward(g, a)),
    "relu": (F.relu, lambda g, a: g * (a > 0)),
}


def _mm_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out = a @ b``: in place when ``out`` has the operands' dtype, else through a temporary
    cast into it (a bf16 weight gradient into its fp32 buffer)."""
    if out.dtype == a.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


class _FusedPerTokenFFN(torch.autograd.Function):
    """``y[:, t] = act(x[:, t] @ w1[t] + b1[t]) @ w2[t] + b2[t]`` token by token, forward and
    backward, computed in ``dtype``, with the weights stacked as in ``bmm`` (``w1 [T, D, H]``,
    ``w2 [T, H, D]``) in any dtype.

    Why token by token: each token's ``[B, H]`` hidden activation is made, activated and
    consumed while it is still in cache, where the batched form writes all ``T`` of them (the
    largest tensor of the block) to memory between the GEMM, the activation and the next GEMM,
    in both directions; and plain 2-D GEMMs ran faster than ``bmm`` on the dev box, most of all
    for the weight gradients. For the same reason the weights are cast to ``dtype`` one token
    at a time (a ``[D, H]`` slice that the next GEMM reads from cache; casting the stacked
    weight up front was measurably slower), and each token's weight gradient is cast back
    into one stacked buffer of the weight's own dtype. Only the pre-activations are saved (the
    activation is recomputed in backward, cache-hot); there are no per-token parameters and no
    ``stack`` of outputs."""

    @staticmethod
    def run(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str, dtype: torch.dtype,
            keep: bool) -> tuple[Tensor, Tensor | None]:
        """The forward loop; ``keep``: also return the pre-activations ``[T, B, H]``. The output
        is the ``[B, T, D]`` view of a token-major ``[T, B, D]`` buffer, so that every GEMM
        writes its token's rows in place instead of into a temporary that is then copied."""
        fwd, _ = _FUSED_ACTS[act]
        x = x.to(dtype)
        B, T, _ = x.shape
        y = x.new_empty(T, B, w2.shape[2])
        pre = x.new_empty(T, B, w1.shape[2]) if keep else None
        for t in range(T):
            w1t, b1t, w2t, b2t = (p[t].to(dtype) for p in (w1, b1, w2, b2))
            a = torch.addmm(b1t, x[:, t], w1t, out=pre[t]) if keep else torch.addmm(b1t, x[:, t], w1t)
            torch.addmm(b2t, fwd(a), w2t, out=y[t])
        return y.transpose(0, 1), pre

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str, dtype: torch.dtype) -> Tensor:
        y, pre = _FusedPerTokenFFN.run(x, w1, b1, w2, b2, act, dtype, keep=True)
        ctx.act, ctx.x_dtype, ctx.b_dtypes = act, x.dtype, (b1.dtype, b2.dtype)
        ctx.save_for_backward(x.to(dtype), w1, w2, pre)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, w1, w2, pre = ctx.saved_tensors
        fwd, bwd = _FUSED_ACTS[ctx.act]
        dtype = x.dtype
        gy = gy.to(dtype)
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        B, T, _ = x.shape
        gx = x.new_empty(T, B, x.shape[2]) if need_x else None  # token-major, like the output
        gw1 = torch.empty_like(w1) if need_w1 else None
        gw2 = torch.empty_like(w2) if need_w2 else None
        gb1 = w1.new_empty(w1.shape[0], w1.shape[2], dtype=ctx.b_dtypes[0]) if need_b1 else None

        for t in range(T):
            g, a = gy[:, t], pre[t]
            if need_w2:
                _mm_into(gw2[t], fwd(a).t(), g)
            ga = bwd(g @ w2[t].to(dtype).t(), a)  # gradient at the pre-activation, [B, H]
            if need_b1:
                gb1[t] = ga.sum(0)
            if need_w1:
                _mm_into(gw1[t], x[:, t].t(), ga)
            if need_x:
                torch.mm(ga, w1[t].to(dtype).t(), out=gx[t])
        gb2 = gy.sum(0).to(ctx.b_dtypes[1]) if need_b2 else None
        return (gx.transpose(0, 1).to(ctx.x_dtype) if need_x else None), gw1, gb1, gw2, gb2, None, None


class PerTokenFFN(nn.Module):
    """``[B, T, D] -> [B, T, D]``: token ``t`` through its own ``D -> kD -> D`` FFN.

    Args:
        num_tokens: T.
        dim: D.
        expansion: k (hidden width ``round(k * D)``).
        activation: name for :func:`~rankmixer.nn.mlp.make_activation` (default GELU).
        impl: ``bmm`` | ``split`` | ``auto`` (see the module docstring).
        dropout: dropout on the hidden activation (0 = none).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        expansion: float = 4,
        activation: str = "gelu",
        impl: Impl = "auto",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_tokens < 1 or dim < 1:
            raise ValueError(f"num_tokens and dim must be >= 1, got {num_tokens}, {dim}")
        self.num_tokens, self.dim = num_tokens, dim
        self.hidden = ffn_hidden(dim, expansion)
        resolve_impl(impl)  # reject unknown names early
        # storage: one stacked tensor per weight (bmm, fused, auto) or T separate ones (split)
        self.impl = "split" if impl == "split" else "bmm"
        self.requested_impl = impl
        self.activation = activation.lower()
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        T, D, H = num_tokens, dim, self.hidden
        if self.impl == "bmm":
            self.w1 = nn.Parameter(torch.empty(T, D, H))
            self.b1 = nn.Parameter(torch.empty(T, H))
            self.w2 = nn.Parameter(torch.empty(T, H, D))
            self.b2 = nn.Parameter(torch.empty(T, D))
        else:
            self.w1 = nn.ParameterList(nn.Parameter(torch.empty(D, H)) for _ in range(T))
            self.b1 = nn.ParameterList(nn.Parameter(torch.empty(H)) for _ in range(T))
            self.w2 = nn.ParameterList(nn.Parameter(torch.empty(H, D)) for _ in range(T))
            self.b2 = nn.ParameterList(nn.Parameter(torch.empty(D)) for _ in range(T))
        # Inference under autocast: low-precision copies of the stacked weights, reused while
        # the weights are unchanged (see compute_weights). Not in the state_dict.
        self.cache_autocast_weights = True
        # auto: the implementation timed fastest on this machine per (autograd?, compute dtype),
        # set by rankmixer.system.auto; where it has no entry the fixed rule (AUTO_IMPL) decides.
        self.measured_impl: dict[tuple[bool, torch.dtype], str] = {}
        self._cast_key: tuple | None = None
        self._cast: tuple[Tensor, ...] = ()
        self.reset_parameters()
        # The saved layout follows the requested impl, not the storage: stacked keys (w1, b1,
        # w2, b2) unless ``split`` was asked for, so a checkpoint of an ``auto`` module whose
        # storage was switched (set_storage) loads into any build of the same config.
        self._register_state_dict_hook(_save_in_requested_layout)
        self._register_load_state_dict_pre_hook(self._load_any_layout)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for t in range(self.num_tokens):
            _init_uniform_(self.w1[t], self.dim)
            _init_uniform_(self.b1[t], self.dim)
            _init_uniform_(self.w2[t], self.hidden)
            _init_uniform_(self.b2[t], self.hidden)

    # ---- storage -------------------------------------------------------------------------------
    @torch.no_grad()
    def set_storage(self, storage: str) -> None:
        """Keep the weights ``stacked`` (one tensor per weight: ``bmm`` and ``fused``) or
        ``split`` (T tensors per weight), values unchanged. The parameters are new objects:
        switch before an optimizer holds them (:mod:`rankmixer.system.auto` does, when ``split``
        measured fastest for an ``auto`` module)."""
        if storage not in ("stacked", "split"):
            raise ValueError(f"storage must be stacked or split, not {storage!r}")
        want = "split" if storage == "split" else "bmm"
        if want == self.impl:
            return
        stacked = [t.detach().clone() for t in self.stacked_weights()]
        for name in ("w1", "b1", "w2", "b2"):
            delattr(self, name)
        for name, t in zip(("w1", "b1", "w2", "b2"), stacked):
            if want == "bmm":
                setattr(self, name, nn.Parameter(t))
            else:
                setattr(self, name, nn.ParameterList(nn.Parameter(t[i].clone()) for i in range(self.num_tokens)))
        self.impl = want
        self._cast_key, self._cast = None, ()

    def _load_any_layout(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                         error_msgs) -> None:
        """Before loading: a saved layout that is not this module's storage is converted to it."""
        for name in ("w1", "b1", "w2", "b2"):
            key, first = prefix + name, f"{prefix}{name}.0"
            if self.impl == "split" and key in state_dict:
                whole = state_dict.pop(key)
                for t in range(whole.shape[0]):
                    state_dict[f"{key}.{t}"] = whole[t]
            elif self.impl == "bmm" and key not in state_dict and first in state_dict:
                parts, t = [], 0
                while f"{key}.{t}" in state_dict:
                    parts.append(state_dict.pop(f"{key}.{t}"))
                    t += 1
                state_dict[key] = torch.stack(parts)

    # ---- weights in one layout, whatever the storage -----------------------------------------
    def stacked_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(w1 [T, D, kD], b1 [T, kD], w2 [T, kD, D], b2 [T, D])`` (copies for ``split``)."""
        if self.impl == "bmm":
            return self.w1, self.b1, self.w2, self.b2
        return tuple(torch.stack(list(p)) for p in (self.w1, self.b1, self.w2, self.b2))  # type: ignore[return-value]

    @torch.no_grad()
    def load_stacked(self, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
        """Copy stacked weights (the layout of :meth:`stacked_weights`) into this module."""
        for dst, src in ((self.w1, w1), (self.b1, b1), (self.w2, w2), (self.b2, b2)):
            if isinstance(dst, Tensor):
                dst.copy_(src)
            else:
                for t in range(self.num_tokens):
                    dst[t].copy_(src[t])

    # ---- forward ---------------------------------------------------------------------------
    def compute_weights(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(w1, b1, w2, b2)`` as the ``bmm`` forward uses them.

        Autocast casts every weight to the low-precision dtype on every call (``2 T D kD``
        elements read and written per layer). Without autograd (inference) the casts are kept
        and reused until a weight changes: the cache key holds each weight's storage pointer and
        version counter, which every in-place update (optimizer step, ``load_state_dict``,
        ``copy_``) bumps. The cast values are those autocast would produce, so outputs are
        bitwise the same; ``cache_autocast_weights = False`` turns it off (the benchmark's
        "before")."""
        w = (self.w1, self.b1, self.w2, self.b2)
        dev = x.device.type
        if not self.cache_autocast_weights or torch.is_grad_enabled() or not torch.is_autocast_enabled(dev):
            return w  # type: ignore[return-value]
        dtype = torch.get_autocast_dtype(dev)
        key = (dtype, tuple((p.data_ptr(), p._version) for p in w))
        if key != self._cast_key:
            self._cast = tuple(p.detach().to(dtype) for p in w)
            self._cast_key = key
        return self._cast  # type: ignore[return-value]

    def train(self, mode: bool = True) -> PerTokenFFN:
        if mode:  # training does not use the copies: free them
            self._cast_key, self._cast = None, ()
        return super().train(mode)

    def forward_impl(self, x: Tensor) -> str:
        """What this call runs: ``split``, or ``bmm`` / ``fused`` for the stacked storage
        (``fused`` needs an activation it knows and no dropout on the hidden layer; traced,
        exported and compiled graphs get ``bmm``: two batched GEMMs, which exporters and
        compilers handle as such, rather than an unrolled Python loop)."""
        if self.impl == "split":
            return "split"
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return "bmm"
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.requested_impl == "auto" and (grad, dtype) in self.measured_impl:
            impl = self.measured_impl[(grad, dtype)]  # timed on this machine (rankmixer.system.auto)
        elif self.requested_impl == "auto" and dev != "cpu":
            return "bmm"  # one batched GEMM kernel, not 4T launches
        else:
            impl = resolve_impl(self.requested_impl, dtype, grad)
        if impl == "fused" and (self.activation not in _FUSED_ACTS or (self.training and isinstance(self.dropout, nn.Dropout))):
            return "bmm"
        return impl

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.num_tokens or x.shape[2] != self.dim:
            raise ValueError(f"expected [B, {self.num_tokens}, {self.dim}], got {list(x.shape)}")
        impl = self.forward_impl(x)
        if impl == "fused":
            w = self.compute_weights(x)  # cached low-precision copies in inference under autocast
            dev = x.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
            with torch.autocast(dev, enabled=False):  # the function casts, token by token
                if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in w)):
                    return _FusedPerTokenFFN.apply(x, *w, self.activation, dtype)
                return _FusedPerTokenFFN.run(x, *w, self.activation, dtype, keep=False)[0]  # nothing to save
        if impl == "bmm":
            w1, b1, w2, b2 = self.compute_weights(x)
            xt = x.transpose(0, 1)  # [T, B, D], a view
            h = self.dropout(self.act(torch.baddbmm(b1.unsqueeze(1), xt, w1)))
            return torch.baddbmm(b2.unsqueeze(1), h, w2).transpose(0, 1)
        outs = []
        for t, xs in enumerate(x.unbind(1)):
            h = self.dropout(self.act(torch.addmm(self.b1[t], xs, self.w1[t])))
            outs.append(torch.addmm(self.b2[t], h, self.w2[t]))
        return torch.stack(outs, dim=1)

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, dim={self.dim}, hidden={self.hidden}, impl={self.requested_impl}"


def _save_in_requested_layout(module: PerTokenFFN, state_dict, prefix, local_metadata) -> None:
    """State-dict hook: split storage of a module that did not ask for ``split`` is saved stacked."""
    if module.impl != "split" or module.requested_impl == "split":
        return
    for name in ("w1", "b1", "w2", "b2"):
        key = prefix + name
        state_dict[key] = torch.stack([state_dict.pop(f"{key}.{t}") for t in range(module.num_tokens)])


class SharedFFN(nn.Module):
    """The ablation: one ``D -> kD -> D`` FFN applied to every token (parameters ``1/T`` of
    :class:`PerTokenFFN`, same FLOPs)."""

    def __init__(self, dim: int, expansion: float = 4, activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = ffn_hidden(dim, expansion)
        self.fc1 = nn.Linear(dim, self.hidden)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(self.hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))
