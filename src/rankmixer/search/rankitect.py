"""Rankitect's one-shot search (Wen et al. 2023): the supernet trained by single paths over a data
stream, a model of fixed architecture trained alongside as the baseline, and a REINFORCE
controller that learns which path to take from rewards measured against that baseline.

The stream drifts (on the day-sharded set the law changes from day to day), so a path's NE on
the current batch says as much about the batch as about the path. Rankitect cancels that with a
baseline model co-trained on the same batches: a path's reward is its NE relative to the
baseline's on the same batch, ``(NE_baseline - NE_path) / NE_baseline``, minus
``cost_weight * FLOPs(path) / F_max`` (the supernet's FLOP counts, as DistDNAS's cost).

One pass (``epochs``) over the training split, batch by batch:

1. every ``update_every`` steps after ``warmup_steps``: ``samples`` paths drawn from the controller
   are scored on the batch *before* anything trains on it (progressive evaluation), and the
   controller takes one REINFORCE step: ``theta += lr * sum_j (r_j - mean r) * grad log pi(path_j)``
   (the mean reward of the draw is REINFORCE's variance-reducing baseline);
2. the supernet trains one step on a path drawn uniformly (weight training decoupled from the
   controller, so every candidate keeps training), and the baseline model trains one step.

The controller's most likely path is the result: a ``searched`` model retrained from scratch by
``rankmixer train``. ``OUT/rankitect.json`` holds the context, the controller's probabilities, the
reward history (mean reward and controller entropy per update), the NE of the chosen path and of
the baseline on the validation split, and the chosen model section with its train command. The
optimizers are the experiment's (its dense optimizer for weights; its sparse optimizer, with
dense gradients, for the tables).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rankmixer import experiment
from rankmixer.config import config_path, load_config
from rankmixer.core.files import write_json
from rankmixer.core.hardware import machine_info
from rankmixer.core.metrics import normalized_entropy
from rankmixer.data.loader import ParquetBatches
from rankmixer.models import registry
from rankmixer.models.searched import describe_blocks
from rankmixer.models.supernet import candidate_label
from rankmixer.nn.embedding import split_parameters
from rankmixer.search.controller import Controller
from rankmixer.search.sigeo import path_model
from rankmixer.search.folder import open_folder, refuse_model_overrides
from rankmixer.search.space import ArchitectureSpace, load_architecture_space
from rankmixer.train.optim import make_optimizer
from rankmixer.tune.space import format_override

__all__ = ["RANKITECT_REPORT", "probabilities_table", "run_rankitect", "searches_table"]

RANKITECT_REPORT = "rankitect.json"
RANKITECT_KIND = "rankitect"  # the ownership marker of a search folder (core/files.py)


def _ne(logits: Tensor, labels: Tensor) -> float:
    return normalized_entropy(labels[:, 0].numpy(), torch.sigmoid(logits[:, 0].float()).numpy())


def _optimizers(model: torch.nn.Module, cfg) -> list[torch.optim.Optimizer]:
    emb, dense = split_parameters(model)
    sparse = cfg.train.sparse_optimizer
    if sparse is None:
        return [make_optimizer(cfg.train.dense_optimizer, dense + emb)]
    return [make_optimizer(cfg.train.dense_optimizer, dense), make_optimizer(sparse, emb)]


def _train_step(model: torch.nn.Module, optimizers: list, batch) -> None:
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    out = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), batch.labels.float())
    loss.backward()
    for o in optimizers:
        o.step()


def run_rankitect(
    config: str | Path,
    space: str | Path | ArchitectureSpace,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    epochs: int = 1,
    samples: int = 8,
    update_every: int = 5,
    warmup_steps: int = 20,
    controller_lr: float = 0.5,
    cost_weight: float = 0.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the search (see the module docstring); write and return ``rankitect.json``. The
    baseline is the experiment's own model."""
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    out_dir, overrides = Path(out_dir), list(overrides or [])
    refuse_model_overrides(overrides, "the search keeps the experiment's model as its baseline; change it in the config")
    if epochs < 1 or samples < 2 or update_every < 1 or warmup_steps < 0 or controller_lr <= 0 or cost_weight < 0:
        raise ValueError("epochs >= 1, samples >= 2, update_every >= 1, warmup_steps >= 0, controller_lr > 0 and "
                         f"cost_weight >= 0; got {epochs}, {samples}, {update_every}, {warmup_steps}, "
                         f"{controller_lr}, {cost_weight}")
    path = config_path(config)
    cfg = load_config(path, overrides)
    open_folder(out_dir, RANKITECT_KIND, [path, space.file, cfg.data.prepared_path()])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    fm = experiment.prepare_data(cfg.data, log=log)
    torch.manual_seed(cfg.seed)
    supernet_section = {k: v for k, v in (space.supernet or {}).items() if k != "name"}
    supernet = registry.build_model("supernet", fm, supernet_section)
    baseline = registry.build_model(cfg.model_name, fm, cfg.model_params)
    net = supernet.cfg
    generator = torch.Generator().manual_seed(cfg.seed)
    controller = Controller(supernet.paths(), len(net.candidates), controller_lr, generator)
    uniform = Controller(supernet.paths(), len(net.candidates), controller_lr, generator)
    opt_super, opt_base = _optimizers(supernet, cfg), _optimizers(baseline, cfg)
    flops = supernet.op_flops.double()
    history, step, t0 = [], 0, time.time()
    train = ParquetBatches(fm, "train", cfg.train.batch_size, shuffle=True, seed=cfg.seed,
                           shuffle_buffer=cfg.data.shuffle_buffer)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for batch in train:
            if step >= warmup_steps and step % update_every == 0 and 0 < batch.labels[:, 0].sum() < len(batch.labels):
                supernet.eval()
                baseline.eval()
                with torch.no_grad():
                    ne_base = _ne(baseline(batch).logits, batch.labels)
                    paths = controller.sample(samples)
                    rewards = []
                    for p in paths:
                        supernet.set_path(p)
                        cost = float(sum(flops[i, k] for i, k in enumerate(p))) / supernet.max_flops
                        rewards.append((ne_base - _ne(supernet(batch).logits, batch.labels)) / ne_base - cost_weight * cost)
                    supernet.set_path(None)
                controller.step(paths, rewards)
                history.append({"step": step, "mean_reward": float(np.mean(rewards)), "ne_baseline": ne_base,
                                "entropy": controller.entropy()})
            supernet.train()
            baseline.train()
            supernet.set_path(uniform.sample(1)[0])
            _train_step(supernet, opt_super, batch)
            supernet.set_path(None)
            _train_step(baseline, opt_base, batch)
            step += 1
        log(f"epoch {epoch + 1}: {step} steps, controller entropy {controller.entropy():.3f}")
    best = controller.best()
    valid = _valid_ne(supernet, baseline, fm, cfg, best)
    section = path_model(net, best)
    report = {
        "context": {"config": str(path), "overrides": overrides, "space": str(space.file or space.where),
                    "machine": machine_info(), "epochs": epochs, "steps": step, "samples": samples,
                    "update_every": update_every, "warmup_steps": warmup_steps, "controller_lr": controller_lr,
                    "cost_weight": cost_weight, "baseline": {"name": cfg.model_name, **cfg.model_params},
                    "supernet": {"name": "supernet", **supernet_section}, "seconds": time.time() - t0},
        "candidates": [candidate_label(c) for c in net.candidates],
        "probabilities": controller.probs().tolist(),
        "history": history,
        "valid_ne": valid,
        "best": {"path": best, "architecture": describe_blocks(section["blocks"]), "model": section,
                 "train_command": f"rankmixer train -c {config} '{format_override('model', section)}'"},
    }
    write_json(out_dir / RANKITECT_REPORT, report, [path], "Rankitect report")
    return report


def _valid_ne(supernet, baseline, fm, cfg, best: list[int]) -> dict:
    """NE on the validation split of the chosen path (supernet weights) and of the baseline."""
    supernet.eval()
    baseline.eval()
    supernet.set_path(best)
    logits: dict[str, list[Tensor]] = {"path": [], "baseline": []}
    labels = []
    with torch.no_grad():
        for batch in ParquetBatches(fm, "valid", cfg.train.eval_batch_size):
            logits["path"].append(supernet(batch).logits)
            logits["baseline"].append(baseline(batch).logits)
            labels.append(batch.labels)
    supernet.set_path(None)
    y = torch.cat(labels)
    return {k: _ne(torch.cat(v), y) for k, v in logits.items()}



def probabilities_table(report: dict) -> str:
    """The controller's probabilities: a row per candidate, a column per choice block, the
    chosen path starred."""
    probs, best = report["probabilities"], report["best"]["path"]
    lines = ["| candidate | " + " | ".join(f"block {i}" for i in range(len(probs))) + " |",
             "|---" * (len(probs) + 1) + "|"]
    for k, name in enumerate(report["candidates"]):
        lines.append(f"| {name} | " + " | ".join(f"{p[k]:.3f}{' *' if best[i] == k else ''}"
                                                 for i, p in enumerate(probs)) + " |")
    return "\n".join(lines) + "\n"


def searches_table(reports: list[dict]) -> str:
    """One row per search: seed, controller updates, mean reward at the first and last update,
    the controller's final entropy, validation NE of the chosen path (supernet weights) and of
    the baseline, the chosen architecture and the wall time."""
    lines = ["| seed | updates | mean reward, first / last | entropy at the end | valid NE, path / baseline "
             "| chosen architecture | wall time |", "|---|---|---|---|---|---|---|"]
    for r in reports:
        c, h = r["context"], r["history"]
        seed = next((o.split("=", 1)[1] for o in c["overrides"] if o.startswith("seed=")), "config's")
        lines.append(f"| {seed} | {len(h)} | {h[0]['mean_reward']:+.4f} / {h[-1]['mean_reward']:+.4f} | "
                     f"{h[-1]['entropy']:.3f} | {r['valid_ne']['path']:.4f} / {r['valid_ne']['baseline']:.4f} | "
                     f"`{r['best']['architecture']}` | {c['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"
