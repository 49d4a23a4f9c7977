"""Measured ``auto``: the kernel choices timed on the machine at hand, once, then reused.

Two settings have an ``auto`` value whose best answer depends on the machine (on an AVX2-only
EPYC the fused per-token FFN that a fixed rule picks trained slower than the per-token loop):

* the per-token FFN implementation (``model.ffn_impl``): the run's own training step (forward
  and backward of a real batch) is timed on copies of the model with the FFNs on ``bmm``,
  ``fused`` and ``split``, in interleaved rounds. The fastest decides: ``split`` switches the
  modules' storage (before the optimizer exists); ``bmm`` or ``fused`` is set per call
  (``PerTokenFFN.measured_impl``), inference then taking the faster of the two for each shape
  (they share the storage, ``split`` does not);
* the optimizer kernel (``train.dense_optimizer.impl``): ``fused``, ``foreach`` and the
  per-tensor loop, timed as ``optimizer.step()`` on copies of the dense parameters (at most
  :data:`MAX_OPTIM_ELEMENTS` elements, taken in order) with fixed gradients.

A timing is kept in the tune-system history (:mod:`rankmixer.system.history`, default
``~/.cache/rankmixer/system/history.parquet``, or ``$RANKMIXER_SYSTEM_HISTORY``) under this
machine's hardware fingerprint and the shape, so the next run with the same shape reads it
instead of timing again, and the predictor sees it beside the whole-run measurements.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rankmixer.core.hardware import PRECISIONS, autocast, hardware_fingerprint
from rankmixer.nn.per_token_ffn import PerTokenFFN
from rankmixer.system.history import append_records, new_record, read_history
from rankmixer.train import optim
from rankmixer.train.config import OptimizerConfig

__all__ = ["FFN_CHOICES", "MAX_OPTIM_ELEMENTS", "OPTIM_CHOICES", "SHARED_STORAGE", "apply_ffn_choices",
           "default_history_path", "measured_ffn_impls",
           "measured_optimizer_impl", "time_choices"]

FFN_CHOICES = ("bmm", "fused", "split")
SHARED_STORAGE = ("bmm", "fused")
OPTIM_CHOICES = ("fused", "foreach", "forloop")
MAX_OPTIM_ELEMENTS = 8_000_000


def default_history_path() -> Path:
    env = os.environ.get("RANKMIXER_SYSTEM_HISTORY")
    return Path(env) if env else Path.home() / ".cache" / "rankmixer" / "system" / "history.parquet"


def time_choices(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 3,
                 min_seconds: float = 0.01) -> dict[str, float]:
    """Median seconds per call of each function: one warm-up each, then ``rounds`` interleaved
    rounds (each function called back to back until ``min_seconds`` pass, so short calls are
    not timer noise)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        fn()
    per: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            t0, n = time.perf_counter(), 0
            while True:
                fn()
                n += 1
                sync()
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            per[name].append(dt / n)
    return {k: statistics.median(v) for k, v in per.items()}


def _cached(history: list[dict], key: str, fingerprint: str) -> dict | None:
    for r in reversed(history):
        if r.get("kind") == "auto" and r["key"] == key and r["fingerprint"] == fingerprint and r["status"] == "ok":
            return r["setting"]
    return None


def _record(key: str, info: dict, seconds: dict[str, float], choice: str, batch: int) -> dict:
    result = {"status": "ok", "samples_per_s": batch / seconds[choice] if batch else None,
              "step_ms_median": 1e3 * seconds[choice]}
    return new_record(key, {**info, "seconds": seconds, "choice": choice}, "auto", "auto", result)


def _auto_ffns(model: nn.Module) -> list[PerTokenFFN]:
    return [m for m in model.modules() if isinstance(m, PerTokenFFN) and m.requested_impl == "auto" and m.impl == "bmm"]


def _time_training(model: nn.Module, train_step: Callable[[nn.Module], object], device: torch.device) -> dict[str, float]:
    """Seconds of ``train_step`` on copies of ``model`` with every auto FFN on each implementation."""
    stacked = copy.deepcopy(model).to(device)
    switch = _auto_ffns(stacked)  # found once: setting requested_impl takes them off "auto"
    for f in switch:
        f.measured_impl = {}
    split = copy.deepcopy(stacked)
    for f in _auto_ffns(split):
        f.set_storage("split")  # split storage runs split, whatever is requested

    def run(impl: str) -> Callable[[], object]:
        work = split if impl == "split" else stacked

        def fn() -> object:
            if work is stacked:
                for f in switch:
                    f.requested_impl = impl
            work.train()
            train_step(work)
            work.zero_grad(set_to_none=True)
            return None
        return fn

    return time_choices({impl: run(impl) for impl in FFN_CHOICES}, device)


def _time_inference(ffn: PerTokenFFN, batch: int, precision: str, device: torch.device) -> dict[str, float]:
    """Seconds of one inference call of ``ffn`` (a copy) in each implementation sharing its storage."""
    work = copy.deepcopy(ffn).to(device).eval()
    work.measured_impl = {}
    x = torch.randn(batch, ffn.num_tokens, ffn.dim, device=device)

    def run(impl: str) -> Callable[[], object]:
        def fn() -> object:
            work.requested_impl = impl
            with torch.inference_mode(), autocast(precision, device):
                return work(x)
        return fn

    return time_choices({impl: run(impl) for impl in SHARED_STORAGE}, device)


def _key(kind: str, info: dict) -> str:
    return kind + ":" + ",".join(f"{k}={v}" for k, v in info.items() if k != "component")


def measured_ffn_impls(model: nn.Module, batch: int, precision: str, device: torch.device,
                       train_step: Callable[[nn.Module], object], history_path: Path | None = None,
                       log: Callable[[str], None] = print) -> list[dict]:
    """Give the per-token FFNs of ``model`` left on ``auto`` (stacked storage) the
    implementation measured fastest on this machine, and return the choices made.

    Training decides: ``train_step(model)`` (forward and backward of a real batch, as the run
    will do them) is timed on copies of the model with every such FFN on ``bmm``, ``fused`` and
    ``split``. A single layer timed alone does not rank them as the whole step does: the
    layers around it, the gradients' memory and the cache all move the result. ``split``
    switches the storage (call this before an optimizer holds the parameters); ``bmm`` or
    ``fused`` is set per call, inference then taking the faster of the two for each shape
    (one layer, timed alone). Timings are kept in the history: the model's FFN shapes, its
    parameter count, the batch and the precision key a training choice."""
    ffns = _auto_ffns(model)
    if not ffns:
        return []
    history_path = history_path or default_history_path()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    history, fingerprint = read_history(history_path), hardware_fingerprint()
    shapes = sorted({(f.num_tokens, f.dim, f.hidden, f.activation) for f in ffns})
    info = {"component": "per_token_ffn", "training": True, "shapes": "/".join("x".join(map(str, s)) for s in shapes),
            "layers": len(ffns), "params": sum(p.numel() for p in model.parameters()), "batch": batch,
            "precision": precision, "device": device.type}
    new: list[dict] = []
    hit = _cached(history, _key("ffn", info), fingerprint)
    if hit is None:
        seconds = _time_training(model, train_step, device)
        new.append(_record(_key("ffn", info), info, seconds, min(FFN_CHOICES, key=seconds.get), batch))
        hit = new[-1]["setting"]
        log(f"measured auto: per-token FFNs ({info['shapes']}, {len(ffns)} layers) training step at batch {batch} "
            f"{precision}: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in seconds.items()) + f" -> {hit['choice']}")
    choices = [hit]
    if hit["choice"] != "split":  # inference, per shape, between the two sharing the storage
        for shape, f in {(f.num_tokens, f.dim, f.hidden, f.activation): f for f in ffns}.items():
            inf_info = {"component": "per_token_ffn", "training": False, "tokens": f.num_tokens, "dim": f.dim,
                        "hidden": f.hidden, "activation": f.activation, "batch": batch, "precision": precision,
                        "device": device.type}
            got = _cached(history + new, _key("ffn", inf_info), fingerprint)
            if got is None:
                seconds = _time_inference(f, batch, precision, device)
                new.append(_record(_key("ffn", inf_info), inf_info, seconds, min(seconds, key=seconds.get), batch))
                got = new[-1]["setting"]
            choices.append(got)
    apply_ffn_choices(model, choices, precision)
    if new:
        append_records(history_path, new)
    return choices


def apply_ffn_choices(model: nn.Module, choices: list[dict], precision: str) -> None:
    """Give the ``auto`` per-token FFNs of ``model`` recorded choices (those of
    :func:`measured_ffn_impls`): a resumed run keeps the storage its checkpoints were written in."""
    train = next((c for c in choices if c.get("component") == "per_token_ffn" and c.get("training")), None)
    if train is None:
        return
    dtype = PRECISIONS[precision]
    infer = {(c["tokens"], c["dim"], c["hidden"], c["activation"]): c["choice"]
             for c in choices if c.get("component") == "per_token_ffn" and not c.get("training")}
    for f in _auto_ffns(model):
        if train["choice"] == "split":
            f.set_storage("split")
        else:
            shape = (f.num_tokens, f.dim, f.hidden, f.activation)
            f.measured_impl = {(True, dtype): train["choice"], (False, dtype): infer.get(shape, "bmm")}


def measured_optimizer_impl(cfg: OptimizerConfig, params: list[nn.Parameter], device: torch.device,
                            history_path: Path | None = None, log: Callable[[str], None] = print) -> str | None:
    """The fastest of the optimizer kernels this optimizer has, for these parameters on this
    machine (None: nothing to choose, e.g. an optimizer with one kernel or no parameters). Only
    the parameters the optimizer updates are timed: those that require gradients (a model may
    hold a constant as a frozen parameter, an integer mask for instance)."""
    params = [p for p in params if p.requires_grad]
    kernels = [k for k in OPTIM_CHOICES if _has_kernel(cfg, k)]
    if len(kernels) < 2 or not params:
        return None
    taken, total = [], 0
    for p in params:
        if total + p.numel() > MAX_OPTIM_ELEMENTS and taken:
            break
        taken.append(p)
        total += p.numel()
    info = {"component": "optimizer", "name": cfg.name, "tensors": len(taken), "elements": total,
            "device": device.type, "dtype": str(params[0].dtype).replace("torch.", "")}
    key = _key("optimizer", info)
    history_path = history_path or default_history_path()
    hit = _cached(read_history(history_path), key, hardware_fingerprint())
    if hit is not None:
        return hit["choice"]
    g = torch.Generator(device="cpu").manual_seed(0)
    copies = [nn.Parameter(p.detach().clone()) for p in taken]
    grads = [(torch.randn(p.shape, generator=g) * 1e-3).to(p.device, p.dtype) for p in copies]

    def step_of(kernel: str) -> Callable[[], object]:
        opt = optim.make_optimizer(cfg.model_copy(update={"impl": kernel}), copies)

        def fn() -> None:
            for p, gr in zip(copies, grads, strict=True):
                p.grad = gr
            opt.step()
        return fn

    seconds = time_choices({k: step_of(k) for k in kernels}, device)
    choice = min(seconds, key=seconds.get)
    append_records(history_path, [_record(key, info, seconds, choice, 0)])
    log(f"measured auto: {cfg.name} step over {len(taken)} tensors ({total:,} elements): "
        + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in seconds.items()) + f" -> {choice}")
    return choice


def _has_kernel(cfg: OptimizerConfig, kernel: str) -> bool:
    try:
        optim.impl_kwargs(cfg.model_copy(update={"impl": kernel}), sparse=False)
    except ValueError:
        return False
    return cfg.name != "sparse_adam"
