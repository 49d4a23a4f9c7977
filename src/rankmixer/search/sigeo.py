"""SiGeo (Zheng et al. 2023): sub-one-shot search. The supernet is warmed up on a small share of
the training rows, then subnets are ranked by a proxy computed from a few mini-batches, with the
weights they inherit from the supernet.

1. **Warm-up.** The space's supernet (``rankmixer.models.supernet``) with ``training:
   sampled_path`` (every step one candidate per choice block, drawn uniformly) trains on
   ``warmup`` of the training rows (0: no training, the weights at initialisation; 0.01: one
   hundredth ...), as a normal run (``OUT/warmup-<share>``) with one validation at its end.
2. **Subnets.** ``subnets`` distinct paths (one candidate per choice block) drawn uniformly
   with ``seed``.
3. **Proxies.** For each path, on the first ``proxy_batches`` training batches: the gradients
   ``g`` of the BCE loss with respect to the weights the path uses (embedding tables excepted:
   every path shares them), the weights ``theta`` themselves and the losses. Then

   * ``zico = sum over weight tensors l of log(sum_w mean_b |g_w| / sd_b(g_w))`` (ZiCo, Li et al.
     2023: large and steady gradients);
   * ``fisher_rao = log((theta . mean_b g)^2)`` (the Fisher-Rao norm of the inherited weights);
   * ``loss = mean_b BCE``;
   * ``sigeo = zico_weight * zico + fisher_rao_weight * fisher_rao - loss_weight * loss``.

   The weights of the three terms are ours to choose (``ProxyWeights``; what we could read of the
   paper does not fix them); every term is reported on its own as well.
4. **Ranking.** Paths sorted by ``sigeo``; the best one becomes a ``searched`` model
   (:func:`rankmixer.models.supernet.derive_blocks` with its one-hot weights), retrained from
   scratch by ``rankmixer train``.

``OUT/sigeo.json`` holds the context, every path with its proxies, and the best path's model
section and train command. ``rankmixer bench sigeo`` checks the proxy: it trains every path from
scratch and reports the rank correlation of each proxy with the test AUC.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankmixer import experiment
from rankmixer.config import ExperimentConfig, config_path, load_config
from rankmixer.core.files import write_json
from rankmixer.core.hardware import machine_info
from rankmixer.core.rundir import METRICS_FILE
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches
from rankmixer.models import registry
from rankmixer.models.searched import describe_blocks
from rankmixer.models.supernet import SupernetConfig, candidate_label, derive_blocks
from rankmixer.runs import load_run
from rankmixer.search.folder import SUPERNET_SETS_MODEL, open_folder, refuse_model_overrides
from rankmixer.search.space import ArchitectureSpace, load_architecture_space
from rankmixer.tune.space import format_override

__all__ = ["PROXIES", "SIGEO_REPORT", "ProxyWeights", "path_model", "proxies", "run_sigeo", "sample_paths", "warm_up"]

SIGEO_REPORT = "sigeo.json"
SIGEO_KIND = "sigeo"  # the ownership marker of a search folder (core/files.py)
PROXIES = ("sigeo", "zico", "fisher_rao", "neg_loss")


@dataclass(frozen=True)
class ProxyWeights:
    zico: float = 1.0
    fisher_rao: float = 1.0
    loss: float = 1.0


def sample_paths(allowed: list[list[int]], n: int, seed: int) -> list[list[int]]:
    """``n`` distinct paths drawn uniformly (all of them when there are fewer), in draw order."""
    total = math.prod(len(ks) for ks in allowed)
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < min(n, total):
        seen.setdefault(tuple(int(ks[rng.integers(len(ks))]) for ks in allowed), None)
    return [list(p) for p in seen]


def path_model(net: SupernetConfig, path: list[int]) -> dict[str, Any]:
    """The ``searched`` model section of one path (its one-hot weights derived)."""
    onehot = [[1.0 if k == chosen else 0.0 for k in range(len(net.candidates))] for chosen in path]
    return {"name": "searched", "embedding_dim": net.embedding_dim, "blocks": derive_blocks(net, onehot),
            **({"head_hidden": net.head_hidden} if net.head_hidden else {})}


def warm_up(config: Path, supernet: dict[str, Any], share: float, out_dir: Path, overrides: list[str],
            base: ExperimentConfig, fm: FeatureMap, log: Callable[[str], None]) -> torch.nn.Module:
    """The supernet after single-path training on ``share`` of the training rows (0: as built,
    seeded by the config's seed); resumed or read if its run exists. ``base`` and ``fm``: the
    experiment (``config`` with ``overrides``) and its prepared data."""
    section = {**supernet, "training": "sampled_path"}
    if share == 0:
        torch.manual_seed(base.seed)
        return registry.build_model("supernet", fm, {k: v for k, v in section.items() if k != "name"})
    rows = fm.splits["train"].rows
    steps = max(1, math.ceil(share * rows / base.train.batch_size))
    run_dir = out_dir / f"warmup-{share:g}"
    cfg = load_config(config, [*overrides, format_override("model", section), f"train.max_steps={steps}",
                               "train.epochs=1", "train.one_pass_evals=1", "train.early_stopping=null",
                               "train.lr_plateau=null", f"run_dir={run_dir}", "train.progress=false"])
    if not (run_dir / METRICS_FILE).is_file():
        log(f"warm-up on {share:g} of the {rows:,} training rows: {steps} steps")
    experiment.train_to_end(cfg)
    return load_run(run_dir).model


def proxies(model: torch.nn.Module, batches: list, path: list[int], weights: ProxyWeights = ProxyWeights()) -> dict:
    """The proxies of one path on ``batches`` (see the module docstring), in float64."""
    model.eval()  # no dropout noise in the gradients
    model.set_path(path)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("embedding.")]
    grads: dict[str, list[torch.Tensor]] = {}
    losses = []
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            out = model(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), batch.labels.float())
            loss.backward()
            losses.append(float(loss.detach()))
            for n, p in named:
                if p.grad is not None:
                    grads.setdefault(n, []).append(p.grad.detach().double().flatten().clone())
    finally:
        model.set_path(None)
        model.zero_grad(set_to_none=True)
    zico, dot = 0.0, 0.0
    params = dict(named)
    for n, gs in grads.items():
        g = torch.stack(gs)  # [batches, weights]
        sd = g.std(dim=0, unbiased=False)
        ok = sd > 0
        if ok.any():
            zico += math.log(float((g.abs().mean(dim=0)[ok] / sd[ok]).sum()))
        dot += float(params[n].detach().double().flatten() @ g.mean(dim=0))
    fisher_rao = math.log(dot * dot) if dot else -math.inf
    loss = float(np.mean(losses))
    return {"zico": zico, "fisher_rao": fisher_rao, "neg_loss": -loss,
            "sigeo": weights.zico * zico + weights.fisher_rao * fisher_rao - weights.loss * loss}


def proxy_batches(fm: FeatureMap, batch_size: int, count: int) -> list:
    """The first ``count`` training batches of ``batch_size`` rows, in file order."""
    out = []
    for batch in ParquetBatches(fm, "train", batch_size, shuffle=False):
        out.append(batch)
        if len(out) == count:
            break
    return out


def run_sigeo(
    config: str | Path,
    space: str | Path | ArchitectureSpace,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    warmup: float = 0.01,
    subnets: int = 32,
    batches: int = 8,
    seed: int = 0,
    weights: ProxyWeights = ProxyWeights(),
    log: Callable[[str], None] = print,
) -> dict:
    """Warm up, score ``subnets`` paths, rank them; write and return ``sigeo.json``."""
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    out_dir, overrides = Path(out_dir), list(overrides or [])
    refuse_model_overrides(overrides, SUPERNET_SETS_MODEL)
    if not 0 <= warmup <= 1 or subnets < 1 or batches < 2:
        raise ValueError(f"warmup must lie in [0, 1], subnets >= 1 and batches >= 2; got {warmup}, {subnets}, {batches}")
    path = config_path(config)
    base = load_config(path, overrides)
    open_folder(out_dir, SIGEO_KIND, [path, space.file, base.data.prepared_path()])
    supernet = dict(space.supernet or {})
    net = SupernetConfig.model_validate({k: v for k, v in supernet.items() if k != "name"})
    fm = experiment.prepare_data(base.data, log=log)
    t0 = time.time()
    model = warm_up(path, supernet, warmup, out_dir, overrides, base, fm, log)
    warm_seconds = time.time() - t0
    drawn = sample_paths(model.paths(), subnets, seed)
    data = proxy_batches(fm, base.train.batch_size, batches)
    t1 = time.time()
    scored = []
    for p in drawn:
        section = path_model(net, p)
        scored.append({"path": p, "candidates": [candidate_label(net.candidates[k]) for k in p],
                       "architecture": describe_blocks(section["blocks"]), "model": section,
                       **proxies(model, data, p, weights)})
    ranked = sorted(scored, key=lambda r: -r["sigeo"])
    best = ranked[0]
    report = {
        "context": {"config": str(path), "overrides": overrides, "space": str(space.file or space.where),
                    "machine": machine_info(), "warmup": warmup, "subnets": len(drawn), "proxy_batches": len(data),
                    "batch_size": base.train.batch_size, "seed": seed, "proxy_weights": weights.__dict__,
                    "supernet": supernet, "warmup_seconds": warm_seconds, "proxy_seconds": time.time() - t1},
        "paths": ranked,
        "best": {"path": best["path"], "architecture": best["architecture"], "model": best["model"],
                 "train_command": f"rankmixer train -c {config} '{format_override('model', best['model'])}'"},
    }
    write_json(out_dir / SIGEO_REPORT, report, [path], "SiGeo report")
    return report
