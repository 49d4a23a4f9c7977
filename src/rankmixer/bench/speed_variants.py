"""The RankMixer side of ``bench speed``: the timed models and their training / inference variants.

* ``ours``: :class:`~rankmixer.models.rankmixer.RankMixerBackbone` on synthetic tokens
  ``[B, T, D]`` + mean over tokens + one logit (:class:`TokenModel`), trained with the
  trainer's optimizer factory and step (:mod:`rankmixer.bench.steps`); its FLOPs are the
  paper's closed form (``rankmixer_flops_per_sample``, 3x forward for a step), checked against
  torch's counter (:mod:`rankmixer.models.flops`) in every run;
* ``public``: the public-style per-token loop (:mod:`rankmixer.bench.public_rankmixer`) on the
  same weights, with torch's default optimizer as public code uses it;
* with ``ablations``, the "before" of each speed change: torch's per-tensor optimizer loop
  (``ours-forloop-opt``), the per-token FFN implementation ``auto`` does not pick
  (``ours-bmm`` / ``ours-fused``), inference re-casting the weights on every call
  (``ours-nocache``), and ``optimizer.step()`` alone per kernel choice (``optstep/...``);
* MoE models: the inference routers calibrated to their target active ratio, and dense
  inference of the same weights (``ours-moe-dense``).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.bench.harness import Variant
from rankmixer.bench.moe import set_active_ratio
from rankmixer.bench.public_rankmixer import PublicRankMixerBackbone, load_from_ours
from rankmixer.bench.steps import infer_call, make_optimizer, make_train_step
from rankmixer.models.flops import train_flops_per_sample
from rankmixer.models.rankmixer import RankMixerBackbone, RankMixerConfig, rankmixer_flops_per_sample
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.moe import PerTokenMoE
from rankmixer.nn.per_token_ffn import PerTokenFFN
from rankmixer.train import optim
from rankmixer.train.config import OptimizerConfig

__all__ = ["FFNImpl", "TokenModel", "counted_flops_per_sample", "optimizer_step_variants", "rankmixer_infer_fn",
           "rankmixer_variants"]


class TokenModel(nn.Module):
    """A backbone on ``[B, T, D]`` tokens, mean over tokens, one logit (``TaskHeads``).
    ``forward(x) -> (logits [B, 1], aux_loss or None)``."""

    def __init__(self, backbone: nn.Module, dim: int, head_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = TaskHeads(dim, 1, list(head_hidden))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.backbone(x)
        h, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        return self.heads(h.mean(dim=1)), aux


class FFNImpl(nn.Module):
    """``model`` with every per-token FFN forced to ``impl`` for the call: the implementation
    ``auto`` does not pick, as a "before". Shares the weights (``bmm`` and ``fused`` use one
    storage layout)."""

    def __init__(self, model: nn.Module, impl: str) -> None:
        super().__init__()
        self.model, self.impl = model, impl

    def forward(self, x: Tensor) -> Tensor:
        ffns = [m for m in self.model.modules() if isinstance(m, PerTokenFFN)]
        saved = [f.requested_impl for f in ffns]
        for f in ffns:
            f.requested_impl = self.impl
        try:
            return self.model(x)
        finally:
            for f, impl in zip(ffns, saved):
                f.requested_impl = impl


def counted_flops_per_sample(model: TokenModel, T: int, D: int, device: torch.device, batch: int = 4) -> dict:
    """FLOPs per sample counted by torch (:func:`rankmixer.models.flops.train_flops_per_sample`)
    for one fp32 forward and one forward + backward of ``model`` on random tokens."""
    x = torch.randn(batch, T, D, device=device)

    def loss() -> Tensor:
        logits, aux = model(x)
        return logits.float().sum() + (aux.float() if aux is not None else 0.0)

    return train_flops_per_sample(model, loss, batch)


def rankmixer_infer_fn(model: nn.Module, x: Tensor, precision: str, device: torch.device,
                       name: str) -> Callable[[], Tensor]:
    """One inference call of ``model`` on ``x``; the variant ``name`` sets the switches its
    "before" turns off (``ours-nocache``: no weight cache; ``ours-moe-dense``: dense MoE)."""
    ffns = [m for m in model.modules() if isinstance(m, PerTokenFFN)]
    moes = [m for m in model.modules() if isinstance(m, PerTokenMoE)]

    def fn() -> Tensor:
        for f in ffns:
            f.cache_autocast_weights = name != "ours-nocache"
        for m in moes:
            m.cfg.sparse_inference = name != "ours-moe-dense"
        return infer_call(lambda: model(x)[0], model, precision, device)

    return fn


def _calibrate_moe(model: TokenModel, x: Tensor) -> list[float]:
    """Set each MoE block's inference-router biases so that its target active ratio of gates
    is on for ``x`` (in block order: a block's input depends on the blocks before it)."""
    ratios = []
    model.eval()
    for block in model.backbone.blocks:
        captured: dict[str, Tensor] = {}
        h = block.ffn.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0].detach()))
        with torch.no_grad():
            model(x)
        h.remove()
        ratios.append(set_active_ratio(block.ffn, captured["x"], block.ffn.cfg.target_active_ratio))
    return ratios


def _has_auto_ffn(model: nn.Module) -> bool:
    """Whether ``model`` has per-token FFNs, all on ``auto`` with the stacked storage (so the
    other implementation can run on the same weights)."""
    ffns = [m for m in model.modules() if isinstance(m, PerTokenFFN)]
    return bool(ffns) and all(f.requested_impl == "auto" and f.impl == "bmm" for f in ffns)


def _public_baseline(cfg: RankMixerConfig, ours: TokenModel, device: torch.device) -> TokenModel | None:
    """The public-style loop on ours's weights, where it computes the same function: the dense
    per-token block with mixing, residuals, LayerNorms, GELU and a plain head."""
    if cfg.moe is not None or cfg.ffn != "per_token" or cfg.token_mixing != "mixing" or not cfg.residual \
            or cfg.norm_placement != "post" or cfg.norm != "layernorm" or cfg.block != "rankmixer" \
            or cfg.inter_residual or cfg.activation != "gelu" or cfg.head_hidden:
        return None
    T, D = cfg.num_tokens, cfg.hidden_dim
    public = TokenModel(PublicRankMixerBackbone(T, D, cfg.ffn_hidden, cfg.num_layers), D).to(device)
    load_from_ours(public.backbone, ours.backbone)
    public.heads.load_state_dict(ours.heads.state_dict())
    return public


def rankmixer_variants(
    cfg: RankMixerConfig, batch_sizes: Sequence[int], train_batch: int, precisions: Sequence[str],
    device: torch.device, optimizer: str, baseline: bool, ablations: bool, compile_mode: str | None,
    seed: int = 0, log: Callable[[str], None] = print, inference_copy: bool = True,
) -> tuple[list[Variant], dict]:
    """Training and inference variants of our RankMixer backbone (and the public baseline),
    and ``info``: the analytic and counted FLOPs, parameters, MoE calibration."""
    T, D = cfg.num_tokens, cfg.hidden_dim
    torch.manual_seed(seed)
    ours = TokenModel(RankMixerBackbone(cfg), D, cfg.head_hidden).to(device)
    flops = rankmixer_flops_per_sample(cfg, None, num_tasks=1)
    counted = counted_flops_per_sample(ours, T, D, device)
    info: dict[str, Any] = {"analytic_flops_per_sample": flops, "flop_counter_per_sample": counted,
                            "params": sum(p.numel() for p in ours.parameters()),
                            "train_gflop_per_step": round(flops["train"] * train_batch / 1e9, 2)}
    g = torch.Generator(device="cpu").manual_seed(seed)
    xs = {b: F.layer_norm(torch.randn(b, T, D, generator=g), (D,)).to(device) for b in sorted(set(batch_sizes) | {train_batch})}
    y = torch.randint(0, 2, (train_batch, 1), generator=g).float().to(device)
    is_moe = cfg.moe is not None
    if is_moe:
        info["moe_active_ratio_per_block"] = _calibrate_moe(ours, xs[train_batch])
        ratio = statistics.fmean(info["moe_active_ratio_per_block"])
        infer_flops = rankmixer_flops_per_sample(cfg, None, 1, active_ratio=ratio)["forward_active"]
        dense_infer_flops = rankmixer_flops_per_sample(cfg, None, 1, active_ratio=1.0)["forward_active"]
    else:
        infer_flops = dense_infer_flops = flops["forward"]
    public = _public_baseline(cfg, ours, device) if baseline else None
    if baseline and public is None:
        info["baseline_note"] = "public-style baseline only for the dense per-token block with GELU (no ablations, no MoE)"

    # Inference runs on its own copy: training steps change the weights every round, which
    # would invalidate the inference weight cache (and move a calibrated MoE router).
    # inference_copy=False (models too big to hold twice) times inference on the trained model.
    ours_inf = copy.deepcopy(ours).eval() if inference_copy else ours
    compiled = compiled_inf = None
    if compile_mode is not None:
        mode = None if compile_mode == "default" else compile_mode
        compiled, compiled_inf = torch.compile(ours, mode=mode), torch.compile(ours_inf, mode=mode)

    variants: list[Variant] = []
    models: list[tuple[str, nn.Module, str]] = [("ours", ours, "auto")]
    # The per-token FFN implementation that "auto" does not pick, as a "before" (on CPU it
    # trains with "fused" and infers with "bmm"; elsewhere "bmm" throughout; nn/per_token_ffn.py).
    alt_train, alt_infer = ("bmm", "fused") if device.type == "cpu" else ("fused", "fused")
    has_alt = ablations and _has_auto_ffn(ours)
    if ablations:
        models.append(("ours-forloop-opt", ours, "forloop"))
        if has_alt:
            models.append((f"ours-{alt_train}", FFNImpl(ours, alt_train), "auto"))
    if compiled is not None:
        models.append((f"ours-compiled-{compile_mode}", compiled, "auto"))
    if public is not None:
        models.append(("public", public, "forloop"))
    # One optimizer per (weights, optimizer impl), shared by the precisions and by the model
    # views over the same weights ("ours-bmm" steps ours's optimizer): every variant takes real
    # steps, and the speed does not depend on the values. An optimizer per variant would hold
    # AdamW state (2x the weights) eight times over at 100M scale.
    opts: dict[tuple[int, str], torch.optim.Optimizer] = {}
    for p in precisions:
        for name, m, impl in models:
            base = m.model if isinstance(m, FFNImpl) else m
            key = (id(base), impl)
            if key not in opts:
                opts[key] = make_optimizer(optimizer, list(base.parameters()), impl)
            step = make_train_step(lambda m=m, x=xs[train_batch]: m(x), y, [opts[key]], p, device)

            def train_fn(m=m, step=step):
                m.train()
                return step()

            variants.append(Variant(f"{name}/train/{p}/b{train_batch}", "train", train_fn, batch=train_batch,
                                    flops=flops["train"] * train_batch, precision=p, impl=name, peak_key=p,
                                    warmup=2, info={"optimizer": f"{optimizer}/{impl}"}))
    if ablations:
        variants += optimizer_step_variants(ours, optimizer, train_batch, seed)
    infer_models: list[tuple[str, nn.Module, float]] = [("ours", ours_inf, infer_flops)]
    if has_alt:
        infer_models.append((f"ours-{alt_infer}", FFNImpl(ours_inf, alt_infer), infer_flops))
    if is_moe:
        infer_models.append(("ours-moe-dense", ours_inf, dense_infer_flops))
    if compiled_inf is not None:
        infer_models.append((f"ours-compiled-{compile_mode}", compiled_inf, infer_flops))
    if public is not None:
        infer_models.append(("public", public, infer_flops))
    for p in precisions:
        for b in batch_sizes:
            entries = list(infer_models)
            if ablations and p != "fp32" and not is_moe:
                entries.insert(1, ("ours-nocache", ours_inf, infer_flops))
            for name, m, fl in entries:
                variants.append(Variant(f"{name}/infer/{p}/b{b}", "infer",
                                        rankmixer_infer_fn(m, xs[b], p, device, name), batch=b, flops=fl * b,
                                        precision=p, impl=name, peak_key=p, warmup=2 if "compiled" in name else 1))
    return variants, info


def optimizer_step_variants(model: nn.Module, optimizer: str, batch: int, seed: int = 0) -> list[Variant]:
    """``optimizer.step()`` alone for each kernel choice, on a copy of ``model``'s parameters
    with fixed gradients: the optimizer change measured without the noise of a whole step."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    grads = [(torch.randn(p.shape, generator=g) * 1e-3).to(p.device) for p in params]
    out, seen = [], []
    for impl in ("auto", "foreach", "forloop"):
        kw = optim.impl_kwargs(OptimizerConfig(name=optimizer, impl=impl), sparse=False)
        if kw in seen:
            continue
        seen.append(kw)
        opt = make_optimizer(optimizer, params, impl)

        def fn(opt=opt):
            for p, gr in zip(params, grads, strict=True):
                p.grad = gr
            opt.step()

        label = "fused" if kw.get("fused") else ("foreach" if kw.get("foreach") else "forloop")
        out.append(Variant(f"optstep/{optimizer}-{label}", "optim", fn, batch=batch, impl=f"optstep-{label}",
                           warmup=2, info={"optimizer": f"{optimizer}/{label}", "params": sum(p.numel() for p in params)}))
    return out
