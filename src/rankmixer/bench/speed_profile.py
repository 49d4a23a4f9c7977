"""``bench speed --profile``: torch.profiler over one training step and one inference call of our
RankMixer, the ops with the most self time (where the time goes, measured rather than guessed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankmixer.bench.harness import sync
from rankmixer.bench.speed_variants import TokenModel, rankmixer_infer_fn
from rankmixer.bench.steps import make_optimizer, make_train_step
from rankmixer.models.rankmixer import RankMixerBackbone, RankMixerConfig

__all__ = ["profile_step"]


def profile_step(cfg: RankMixerConfig, batch: int, precision: str, device: torch.device, optimizer: str,
                 seed: int = 0, top: int = 15) -> dict:
    """``{"precision", "batch", "train": {...}, "infer": {...}}``, each with the total self time
    and the ``top`` ops by self time (ms, share, calls)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    model = TokenModel(RankMixerBackbone(cfg), cfg.hidden_dim, cfg.head_hidden).to(device)
    x = F.layer_norm(torch.randn(batch, cfg.num_tokens, cfg.hidden_dim), (cfg.hidden_dim,)).to(device)
    y = torch.randint(0, 2, (batch, 1)).float().to(device)
    opt = make_optimizer(optimizer, list(model.parameters()))
    step = make_train_step(lambda: model(x), y, [opt], precision, device)
    infer = rankmixer_infer_fn(model, x, precision, device, "ours")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict = {"precision": precision, "batch": batch}
    for what, fn in (("train", lambda: (model.train(), step())), ("infer", infer)):
        fn()
        fn()  # warm: optimizer state, weight casts
        sync(device)
        with profile(activities=acts) as prof:
            fn()
            sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        evs = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in evs)
        out[what] = {"total_ms": round(total / 1e3, 2), "top": [
            {"op": e.key, "self_ms": round(getattr(e, key) / 1e3, 2), "share": round(getattr(e, key) / total, 4),
             "calls": e.count} for e in evs[:top]]}
    return out
