"""``rankmixer bench speed``: throughput, MFU and latency against the machine's own matmul peak.

One run measures, interleaved (round-robin: every variant once per round, several rounds, so a
load change on a shared machine hits all of them alike):

* the dense matmul **peak** per precision (fp32, and bf16/fp16 tensors: the kernel autocast
  dispatches to), same threads, a large square and a shape-matched ``[B, D] x [D, kD]`` matmul;
  the best rate over shapes and rounds;
* **training** samples/s of the full step (forward + backward + optimizer, as
  :meth:`rankmixer.train.trainer.Trainer.train_step` does it, with the trainer's optimizer
  factory) of a RankMixer backbone on synthetic tokens ``[B, T, D]`` (+ mean over tokens and one
  logit, BCE loss); achieved FLOP/s from the analytic FLOPs
  (:func:`~rankmixer.models.rankmixer.rankmixer_flops_per_sample`, 3x forward for a step),
  **MFU** = achieved / peak of the same precision measured in the same run;
* **inference** latency p50 / p99 and samples/s per batch size (eval, ``inference_mode``);
* **peak memory** per variant (CPU: the process's peak RSS, reset before the variant's warm-up
  through ``/proc/self/clear_refs``; it includes every model the run holds, see
  ``rss_before_mb``; CUDA: ``max_memory_allocated``).

Side by side in the same rounds: :mod:`rankmixer.bench.public_rankmixer` (the public-style
per-token loop baseline, with torch's default optimizer as public code uses it), and with
``ablations`` the "before" of each speed change (torch's per-tensor optimizer loop; autocast
re-casting the weights on every inference call). Separately (own interleaved rounds): our
DCNv2 vs FuxiCTR's DCNv2 (:mod:`rankmixer.bench.fuxictr_dcnv2`, skipped with a note if
``fuxictr`` is absent) and sparse vs dense MoE inference (:mod:`rankmixer.bench.moe`).

Numbers are "best" (the least disturbed round) and "median" (of the rounds); every row records
``os.getloadavg()`` at the end of the run in ``setup``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.train import optim
from rankmixer.train.config import OptimizerConfig
from rankmixer.core.hardware import PRECISIONS, autocast, cpu_flags, device_name, pick_device
from rankmixer.models import registry
from rankmixer.models.rankmixer import RankMixerBackbone, RankMixerConfig, rankmixer_flops_per_sample
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.per_token_ffn import PerTokenFFN



# ------------------------------------------------------------------------------------------
# the measured models
# ------------------------------------------------------------------------------------------
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


def make_train_step(
    forward: Callable[[], tuple[Tensor, Tensor | None]],
    labels: Tensor,
    optimizers: Sequence[torch.optim.Optimizer],
    precision: str,
    device: torch.device,
) -> Callable[[], Tensor]:
    """One training step as ``Trainer.train_step`` runs it: zero grads, autocast forward, BCE
    (+ aux loss) in fp32, backward, optimizer steps. fp16 uses a GradScaler (CUDA). No host
    sync: the loss is returned as a tensor."""
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None

    def step() -> Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with autocast(precision, device):
            logits, aux = forward()
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        if aux is not None:
            loss = loss + aux.float()
        if scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
        else:
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
        return loss.detach()

    return step


def make_optimizer(name: str, params: list[nn.Parameter], impl: str = "auto", lr: float = 1e-3) -> torch.optim.Optimizer:
    """The trainer's optimizer factory (``impl``: auto = fused/foreach, forloop = torch's CPU
    default, what public code gets)."""
    return optim.make_optimizer(OptimizerConfig(name=name, lr=lr, impl=impl), params)


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb(key: str = "VmRSS") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_memory(device: torch.device) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: "5" resets the peak RSS (VmHWM) of the process
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _rss_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Variant:
    """One timed configuration. ``flops``: matmul FLOPs of one call; ``peak_key``: the
    precision whose measured peak its MFU is relative to (None: no MFU)."""

    name: str
    kind: str  # "peak" | "train" | "infer"
    fn: Callable[[], object]
    batch: int = 0
    flops: float = 0.0
    precision: str = "fp32"
    impl: str = ""
    peak_key: str | None = None
    warmup: int = 1
    calls: int = 1  # per round; set from the warm-up time for inference
    info: dict = field(default_factory=dict)
    times: list[list[float]] = field(default_factory=list)  # per round, per call
    memory: dict = field(default_factory=dict)


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def run_interleaved(
    variants: list[Variant], rounds: int, device: torch.device, call_target_s: float = 0.3, max_calls: int = 30,
    log: Callable[[str], None] = print,
) -> None:
    """Warm every variant up (measuring its peak memory), then ``rounds`` rounds in each of
    which every variant runs ``calls`` times back to back."""
    for v in variants:
        before = _rss_mb() if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
        ok = _reset_peak_memory(device)
        t = 0.0
        for _ in range(max(1, v.warmup)):
            t = _time_call(v.fn, device)
        v.memory = {"peak_mb": round(_peak_memory_mb(device) or 0.0, 1) if ok else None,
                    ("rss_before_mb" if device.type == "cpu" else "allocated_before_mb"): round(before or 0.0, 1)}
        if v.kind != "train":
            v.calls = max(1, min(max_calls, math.ceil(call_target_s / max(t, 1e-6))))
        log(f"  warm-up {v.name}: {t * 1e3:.1f} ms/call, {v.calls} call(s)/round")
    for r in range(rounds):
        for v in variants:
            v.times.append([_time_call(v.fn, device) for _ in range(v.calls)])
        log(f"  round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})")


def _summary(v: Variant, peaks_per_round: dict[str, list[float]], peaks_best: dict[str, float]) -> dict:
    per_round = [statistics.median(ts) for ts in v.times]
    flat = sorted(t for ts in v.times for t in ts)
    best, med = min(flat), statistics.median(per_round)
    row: dict[str, Any] = {"name": v.name, "kind": v.kind, "impl": v.impl, "precision": v.precision,
                           "batch": v.batch, "calls": len(flat), **v.info}
    if v.kind == "peak":
        row.update(gflops_best=round(v.flops / best / 1e9, 1), gflops_median=round(v.flops / med / 1e9, 1))
        return row
    if v.kind == "optim":
        row.update(ms_best=round(best * 1e3, 3), ms_median=round(med * 1e3, 3), memory=v.memory)
        return row
    row.update(
        ms_best=round(best * 1e3, 3), ms_median=round(med * 1e3, 3),
        samples_per_s_best=round(v.batch / best, 1), samples_per_s_median=round(v.batch / med, 1),
        flops_per_call=v.flops,
        achieved_gflops_best=round(v.flops / best / 1e9, 2), achieved_gflops_median=round(v.flops / med / 1e9, 2),
        memory=v.memory,
    )
    if v.kind == "infer":
        row.update(latency_ms_p50=round(_percentile(flat, 50) * 1e3, 3),
                   latency_ms_p99=round(_percentile(flat, 99) * 1e3, 3))
    if v.peak_key is not None and v.peak_key in peaks_best:
        peak = peaks_best[v.peak_key]
        row["peak_gflops"] = peak
        row["mfu_best"] = round(row["achieved_gflops_best"] / peak, 4)
        rounds = peaks_per_round[v.peak_key]
        row["mfu_median"] = round(statistics.median(
            v.flops / t / 1e9 / p for t, p in zip(per_round, rounds, strict=True)), 4)
    return row


def _percentile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of an ascending list."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = (len(sorted_vals) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------------
# the pieces of a run
# ------------------------------------------------------------------------------------------
def peak_variants(precisions: Sequence[str], shapes: Sequence[tuple[int, int, int]], device: torch.device) -> list[Variant]:
    """One variant per (precision, shape): ``reps`` matmuls ``[M, K] x [K, N]`` per call, so a
    call lasts long enough to time; the same output buffer is reused (no allocation timed)."""
    out = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for p in precisions:
        for M, K, N in shapes:
            a = torch.randn(M, K, generator=g).to(device, PRECISIONS[p])
            b = torch.randn(K, N, generator=g).to(device, PRECISIONS[p])
            c = torch.empty(M, N, device=device, dtype=PRECISIONS[p])
            reps = 3

            def fn(a=a, b=b, c=c, reps=reps):
                for _ in range(reps):
                    torch.mm(a, b, out=c)

            out.append(Variant(f"peak/{p}/{M}x{K}x{N}", "peak", fn, flops=2.0 * M * K * N * reps, precision=p,
                               info={"shape": [M, K, N]}))
    return out


def _peaks(rows: list[dict], variants: list[Variant]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Best peak per precision (over shapes and rounds) and the per-round best over shapes."""
    best: dict[str, float] = {}
    per_round: dict[str, list[float]] = {}
    for v in variants:
        if v.kind != "peak":
            continue
        rates = [v.flops / min(ts) / 1e9 for ts in v.times]
        cur = per_round.setdefault(v.precision, [0.0] * len(rates))
        per_round[v.precision] = [max(a, b) for a, b in zip(cur, rates, strict=True)]
        best[v.precision] = round(max(best.get(v.precision, 0.0), max(rates)), 1)
    return best, per_round


def flop_counter_check(model: nn.Module, T: int, D: int, device: torch.device, batch: int = 4) -> dict:
    """FLOPs per sample counted by ``torch.utils.flop_counter`` for one fp32 forward and one
    forward + backward of ``model`` (weight gradients only where parameters need them)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, T, D, device=device)
    was = model.training
    model.train()
    with FlopCounterMode(display=False) as fc:
        logits, _ = model(x)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        logits, aux = model(x)
        loss = logits.float().sum() + (aux.float() if aux is not None else 0.0)
        loss.backward()
    both = fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return {"forward_per_sample": fwd / batch, "train_per_sample": both / batch}


def _calibrate_moe(model: TokenModel, x: Tensor) -> list[float]:
    """Set each MoE block's inference-router biases so that its target active ratio of gates
    is on for ``x`` (in block order: a block's input depends on the blocks before it)."""
    from rankmixer.bench.moe import set_active_ratio

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


def rankmixer_variants(
    cfg: RankMixerConfig, batch_sizes: Sequence[int], train_batch: int, precisions: Sequence[str],
    device: torch.device, optimizer: str, baseline: bool, ablations: bool, compile_mode: str | None,
    seed: int = 0, log: Callable[[str], None] = print, inference_copy: bool = True,
) -> tuple[list[Variant], dict]:
    """Training and inference variants of our RankMixer backbone (and the public baseline)."""
    from rankmixer.bench.public_rankmixer import PublicRankMixerBackbone, load_from_ours

    T, D = cfg.num_tokens, cfg.hidden_dim
    torch.manual_seed(seed)
    ours = TokenModel(RankMixerBackbone(cfg), D, cfg.head_hidden).to(device)
    flops = rankmixer_flops_per_sample(cfg, None, num_tasks=1)
    counted = flop_counter_check(ours, T, D, device)
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
    public = None
    if baseline and not is_moe and cfg.ffn == "per_token" and cfg.token_mixing == "mixing" and cfg.residual \
            and cfg.layer_norm and cfg.activation == "gelu" and not cfg.head_hidden:
        public = TokenModel(PublicRankMixerBackbone(T, D, cfg.ffn_hidden, cfg.num_layers), D).to(device)
        load_from_ours(public.backbone, ours.backbone)
        public.heads.load_state_dict(ours.heads.state_dict())
    elif baseline:
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
            opt = opts[key]
            step = make_train_step(lambda m=m, x=xs[train_batch]: m(x), y, [opt], p, device)

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
                                        _infer_fn(m, xs[b], p, device, name), batch=b, flops=fl * b, precision=p,
                                        impl=name, peak_key=p, warmup=2 if "compiled" in name else 1))
    return variants, info


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


def _has_auto_ffn(model: nn.Module) -> bool:
    """Whether ``model`` has per-token FFNs, all on ``auto`` with the stacked storage (so the
    other implementation can run on the same weights)."""
    ffns = [m for m in model.modules() if isinstance(m, PerTokenFFN)]
    return bool(ffns) and all(f.requested_impl == "auto" and f.impl == "bmm" for f in ffns)


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


def _infer_fn(model: nn.Module, x: Tensor, precision: str, device: torch.device, name: str) -> Callable[[], Tensor]:
    from rankmixer.nn.per_token_ffn import PerTokenFFN

    ffns = [m for m in model.modules() if isinstance(m, PerTokenFFN)]
    moes = [m for m in model.modules() if type(m).__name__ == "PerTokenMoE"]

    def fn() -> Tensor:
        model.eval()
        for f in ffns:
            f.cache_autocast_weights = name != "ours-nocache"
        for m in moes:
            m.cfg.sparse_inference = name != "ours-moe-dense"
        with torch.inference_mode(), autocast(precision, device):
            return model(x)[0]

    return fn


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def run_speed_bench(
    model: str = "rankmixer-100m",
    overrides: dict | None = None,
    batch_sizes: Sequence[int] = (512,),
    train_batch: int | None = None,
    precisions: Sequence[str] = ("fp32", "bf16"),
    device: str = "auto",
    threads: int | None = None,
    rounds: int = 3,
    optimizer: str = "adamw",
    baseline: bool = True,
    ablations: bool = True,
    compile_mode: str | None = None,
    peak_shapes: Sequence[tuple[int, int, int]] | None = None,
    dcn: bool = True,
    dcn_options: dict | None = None,
    moe_bench: bool = True,
    moe_options: dict | None = None,
    profile: bool = False,
    inference_copy: bool = True,
    out: Path | str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark; print the table; return (and with ``out`` write) the report."""
    dev = pick_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; known: {', '.join(PRECISIONS)}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    cfg = registry.parse_config(model, overrides or {})
    if not isinstance(cfg, RankMixerConfig):
        raise ValueError(f"bench speed measures RankMixer models; {model!r} is not one")
    before_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    train_batch = train_batch or batch_sizes[0]
    try:
        if peak_shapes is None:
            big = 8192 if dev.type == "cuda" else 2048
            peak_shapes = [(big, big, big), (train_batch * (cfg.num_tokens if dev.type == "cuda" else 1),
                                              cfg.hidden_dim, cfg.ffn_hidden)]
        log(f"bench speed: {model} {overrides or {}} on {device_name(dev)}, {torch.get_num_threads()} thread(s)")
        rm_variants, info = rankmixer_variants(cfg, batch_sizes, train_batch, precisions, dev, optimizer, baseline,
                                               ablations, compile_mode, seed, log, inference_copy)
        peak_vs = peak_variants(precisions, peak_shapes, dev)
        # peak first in every round: the rates it sets are the ones the round's MFU divides by
        variants = peak_vs + rm_variants
        log(f"analytic training step: {info['train_gflop_per_step']} GFLOP at batch {train_batch}; "
            f"{len(variants)} variants x {rounds} rounds")
        run_interleaved(variants, rounds, dev, log=log)
        rows = [_summary(v, {}, {}) for v in peak_vs]
        best, per_round = _peaks(rows, peak_vs)
        rows += [_summary(v, per_round, best) for v in rm_variants]
        _add_ratios(rows)
        report: dict[str, Any] = {
            "setup": _setup(model, overrides, cfg, dev, rounds, train_batch, batch_sizes, precisions, optimizer,
                            compile_mode),
            "peak_gflops": best, "peak_gflops_per_round": per_round, "rankmixer": info, "rows": rows,
        }
        if profile:
            report["profile"] = {p: profile_step(cfg, train_batch, p, dev, optimizer, seed) for p in precisions}
        if dcn:
            from rankmixer.bench.fuxictr_dcnv2 import run_dcn_comparison

            # FuxiCTR's own precision is fp32: always in the comparison. Each DCNv2 call is short,
            # so it gets more rounds than the big model.
            dcn_prec = ["fp32", *[p for p in precisions if p != "fp32"]]
            report["dcn"] = run_dcn_comparison(precisions=dcn_prec, device=dev, rounds=max(rounds, 5), peaks=best,
                                               log=log, **(dcn_options or {}))
        if moe_bench:
            from rankmixer.bench.moe import run_moe_bench

            opts = {"T": 16, "D": 256, "k": 4, "experts": (4,), "ratios": (0.25,), "batch_size": 512,
                    "repeats": max(3, rounds), **(moe_options or {})}
            report["moe"] = run_moe_bench(log=log, **opts)
        report["setup"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        torch.set_num_threads(before_threads)
    log(format_table(report))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        log(f"wrote {out}")
    return report


def _add_ratios(rows: list[dict]) -> None:
    """``vs_public`` (samples/s of ours over the public baseline, same kind/precision/batch) and
    ``vs_before`` on the ablation rows' partners."""
    index = {(r["impl"], r["kind"], r["precision"], r["batch"]): r for r in rows if r["kind"] != "peak"}
    for (impl, kind, p, b), r in index.items():
        pub = index.get(("public", kind, p, b))
        if impl == "ours" and pub is not None:
            r["vs_public_best"] = round(r["samples_per_s_best"] / pub["samples_per_s_best"], 2)
            r["vs_public_median"] = round(r["samples_per_s_median"] / pub["samples_per_s_median"], 2)
        before = {"ours-forloop-opt": "ours", "ours-nocache": "ours", "ours-moe-dense": "ours", "ours-bmm": "ours",
                  "ours-fused": "ours"}.get(impl)
        if before is not None and (before, kind, p, b) in index:
            o = index[(before, kind, p, b)]
            r["ours_speedup_best"] = round(o["samples_per_s_best"] / r["samples_per_s_best"], 2)
            r["ours_speedup_median"] = round(o["samples_per_s_median"] / r["samples_per_s_median"], 2)


def _setup(model, overrides, cfg, dev, rounds, train_batch, batch_sizes, precisions, optimizer, compile_mode) -> dict:
    return {
        "model": model, "overrides": overrides or {}, "config": cfg.model_dump(mode="json"),
        "device": dev.type, "device_name": device_name(dev), "cpu_flags": cpu_flags() if dev.type == "cpu" else [],
        "threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": rounds,
        "train_batch": train_batch, "batch_sizes": list(batch_sizes), "precisions": list(precisions),
        "optimizer": optimizer, "compile": compile_mode,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "note": "interleaved rounds; best = least disturbed round, median = median of rounds",
    }


# ------------------------------------------------------------------------------------------
# profile
# ------------------------------------------------------------------------------------------
def profile_step(cfg: RankMixerConfig, batch: int, precision: str, device: torch.device, optimizer: str,
                 seed: int = 0, top: int = 15) -> dict:
    """torch.profiler over one training step and one inference call of our model: the ops
    with the most self time (where the time goes, measured rather than guessed)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    model = TokenModel(RankMixerBackbone(cfg), cfg.hidden_dim, cfg.head_hidden).to(device)
    x = F.layer_norm(torch.randn(batch, cfg.num_tokens, cfg.hidden_dim), (cfg.hidden_dim,)).to(device)
    y = torch.randint(0, 2, (batch, 1)).float().to(device)
    opt = make_optimizer(optimizer, list(model.parameters()))
    step = make_train_step(lambda: model(x), y, [opt], precision, device)
    infer = _infer_fn(model, x, precision, device, "ours")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = {"precision": precision, "batch": batch}
    for what, fn in (("train", lambda: (model.train(), step())), ("infer", infer)):
        fn()
        fn()  # warm: optimizer state, weight casts
        _sync(device)
        with profile(activities=acts) as prof:
            fn()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        evs = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in evs)
        out[what] = {"total_ms": round(total / 1e3, 2), "top": [
            {"op": e.key, "self_ms": round(getattr(e, key) / 1e3, 2), "share": round(getattr(e, key) / total, 4),
             "calls": e.count} for e in evs[:top]]}
    return out


# ------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def format_table(report: dict) -> str:
    s = report["setup"]
    lines = [f"{s['model']} {s['overrides']} on {s['device_name']}, {s['threads']} thread(s), torch {s['torch']}, "
             f"{s['rounds']} interleaved rounds, load {s['loadavg_start']} -> {s.get('loadavg_end')}",
             "peak GFLOP/s (best over shapes and rounds): "
             + ", ".join(f"{p} {v:,.1f}" for p, v in report["peak_gflops"].items()),
             f"analytic training step: {report['rankmixer']['train_gflop_per_step']} GFLOP; flop counter / analytic: "
             + _counter_ratio(report["rankmixer"]),
             "", "| variant | samples/s best / median | ms best | p50 / p99 ms | GFLOP/s best | MFU best / median "
                 "| vs public | vs before | peak mem MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["kind"] == "peak":
            continue
        if r["kind"] == "optim":
            lines.append(f"| {r['name']} (step alone, {r['params'] / 1e6:.0f}M params) | - | {r['ms_best']:.1f} "
                         f"(median {r['ms_median']:.1f}) | - | - | - | - | - | {_fmt(r['memory'].get('peak_mb'), ',.0f')} |")
            continue
        lat = f"{r['latency_ms_p50']:.1f} / {r['latency_ms_p99']:.1f}" if r["kind"] == "infer" else "-"
        mfu = f"{r['mfu_best']:.1%} / {r['mfu_median']:.1%}" if "mfu_best" in r else "-"
        vp = f"{r['vs_public_best']:.2f}x / {r['vs_public_median']:.2f}x" if "vs_public_best" in r else "-"
        vb = f"ours {r['ours_speedup_best']:.2f}x / {r['ours_speedup_median']:.2f}x" if "ours_speedup_best" in r else "-"
        lines.append(f"| {r['name']} | {r['samples_per_s_best']:,.0f} / {r['samples_per_s_median']:,.0f} | "
                     f"{r['ms_best']:.1f} | {lat} | {r['achieved_gflops_best']:,.1f} | {mfu} | {vp} | {vb} | "
                     f"{_fmt(r['memory'].get('peak_mb'), ',.0f')} |")
    for precision, prof in report.get("profile", {}).items():
        for what in ("train", "infer"):
            pr = prof[what]
            lines += ["", f"profile, one {what} call ({precision}): {pr['total_ms']:.0f} ms self time",
                      "| op | self ms | share | calls |", "|---|---|---|---|"]
            lines += [f"| {e['op']} | {e['self_ms']:.1f} | {e['share']:.1%} | {e['calls']} |" for e in pr["top"][:10]]
    if "dcn" in report:
        from rankmixer.bench.fuxictr_dcnv2 import format_dcn_table

        lines += ["", format_dcn_table(report["dcn"])]
    if "moe" in report:
        from rankmixer.bench.moe import format_table as moe_table

        lines += ["", moe_table(report["moe"])]
    return "\n".join(lines)


def _counter_ratio(info: dict) -> str:
    a, c = info["analytic_flops_per_sample"], info["flop_counter_per_sample"]
    return (f"forward {c['forward_per_sample'] / a['forward']:.4f}, "
            f"forward+backward {c['train_per_sample'] / a['train']:.4f}")
