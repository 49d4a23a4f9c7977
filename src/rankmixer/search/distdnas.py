"""DistDNAS (Zhang et al. 2023): a differentiable, cost-aware search run separately on each day's
data, the architecture weights aggregated, the top operators kept and retrained from scratch.

1. **One supernet search per day.** The space's supernet (``rankmixer.models.supernet``: choice
   blocks mixing every candidate block by softmax(alpha), loss = BCE + lambda x expected FLOPs)
   trains on one day's shard of the experiment's data: the synthetic preset's ``train_day``, in
   a data folder of the search's own (``OUT/data/day-D``), or, for data whose training split is
   prepared by day (schema ``days``, e.g. ``data/taobao_days``), that day's partition
   (``train.day``). The recipe is the experiment's, the
   model weights and alpha trained together on the day's rows (single-level, as a streaming
   trainer sees each day once): ``epochs`` passes (default one). The days run in parallel
   worker processes (``workers``), each a normal, resumable training run (``OUT/days/day-D``).
2. **Aggregation.** Each day's alpha is read back from its run's best weights as
   softmax(alpha / temperature); the architecture weights are their mean over days.
3. **Derivation.** :func:`rankmixer.models.supernet.derive_blocks` keeps the ``keep`` heaviest
   candidates per choice block (a block whose heaviest candidate is zero is left out) as a
   ``searched`` model, which ``rankmixer train`` retrains from scratch on the whole data.

Writes ``OUT/distdnas.json``: the context (config, overrides, machine, the supernet, the wall time
spent training supernets over every call), per day its run, validation AUC, best step of steps
(the weights are read at the best), weights and expected FLOPs, the aggregated weights, the
derived model section and its ``rankmixer train`` command.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankmixer import experiment
from rankmixer.config import ConfigError, config_path, load_config
from rankmixer.core.files import write_json
from rankmixer.core.hardware import machine_info
from rankmixer.core.processes import run_in_processes
from rankmixer.core.rundir import METRICS_FILE
from rankmixer.models.searched import describe_blocks
from rankmixer.models.supernet import SupernetConfig, candidate_label, derive_blocks, selection
from rankmixer.runs import load_run
from rankmixer.search.folder import SUPERNET_SETS_MODEL, open_folder, refuse_model_overrides
from rankmixer.search.space import ArchitectureSpace, load_architecture_space
from rankmixer.tune.space import format_override

__all__ = ["DISTDNAS_REPORT", "day_overrides", "prepared_day_overrides", "run_distdnas", "searches_table",
           "weights_table"]

DISTDNAS_REPORT = "distdnas.json"
DISTDNAS_KIND = "distdnas"  # the ownership marker of a search folder (core/files.py)


def day_overrides(out_dir: Path, day: int) -> list[str]:
    """The overrides that make an experiment train on one day's shard of the synthetic preset, in
    the search's folder."""
    return [f"data.preset_options.train_day={day}", f"data.prepared_dir={out_dir / 'data' / f'day-{day}'}",
            f"run_dir={out_dir / 'days' / f'day-{day}'}", "train.progress=false"]


def prepared_day_overrides(out_dir: Path, day: int) -> list[str]:
    """The overrides that make an experiment train on one day's partition of data prepared by day."""
    return [f"train.day={day}", f"run_dir={out_dir / 'days' / f'day-{day}'}", "train.progress=false"]


def _day_plan(cfg, log: Callable[[str], None]) -> tuple[list[int], Callable[[Path, int], list[str]]]:
    """(the days to search, the overrides that train on one of them): the synthetic preset's days
    (drawn day by day), or the days of a training split prepared by day (schema ``days``, Taobao's
    ``days: true``, the synthetic set's ``timestamps: true``; prepared here if it is not yet)."""
    data = cfg.data
    options = data.preset_options
    if data.dataset == "synthetic" and not data.schema_file and not options.get("timestamps"):
        days = int(options.get("days", 1))
        if days >= 2:
            return list(range(days)), day_overrides
        found = f"{days} day"
    else:
        fm = experiment.prepare_data(data, log=log)
        if len(fm.days) >= 2:
            return [d.day for d in fm.days], prepared_day_overrides
        found = f"{len(fm.days) or 'no'} prepared day{'' if len(fm.days) == 1 else 's'}"
    raise ConfigError("DistDNAS searches day by day: the experiment's data must be the synthetic preset over several "
                      "days (preset_options.days >= 2, e.g. -c synthetic_drift_dcnv2) or a training split prepared "
                      f"by day with at least 2 days (schema days, e.g. data/taobao_days); {data.name} has {found}")


def _train_day(cfg) -> float:
    """One day's supernet run (resumed if it got as far as its config); the seconds it took."""
    t0 = time.time()
    experiment.train_to_end(cfg)
    return time.time() - t0


def run_distdnas(
    config: str | Path,
    space: str | Path | ArchitectureSpace,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    keep: int = 1,
    epochs: int = 1,
    cost_weight: float | None = None,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the per-day searches (resumable), aggregate, derive; write and return ``distdnas.json``.
    ``cost_weight`` replaces the space's lambda."""
    space = space if isinstance(space, ArchitectureSpace) else load_architecture_space(space)
    out_dir = Path(out_dir)
    overrides = list(overrides or [])
    refuse_model_overrides(overrides, SUPERNET_SETS_MODEL)
    if workers < 1 or keep < 1 or epochs < 1:
        raise ValueError(f"workers, keep and epochs must be at least 1, got {workers}, {keep}, {epochs}")
    supernet = dict(space.supernet or {})
    if cost_weight is not None:
        supernet["cost_weight"] = cost_weight
    net_cfg = SupernetConfig.model_validate({k: v for k, v in supernet.items() if k != "name"})
    path = config_path(config)
    base = load_config(path, overrides)
    days, overrides_of = _day_plan(base, log)
    open_folder(out_dir, DISTDNAS_KIND, [path, space.file, base.data.prepared_path()])
    model = format_override("model", supernet)
    cfgs = {d: load_config(path, [*overrides, model, f"train.epochs={epochs}", *overrides_of(out_dir, d)])
            for d in days}

    todo = {d: c for d, c in cfgs.items() if not (c.resolved_run_dir() / METRICS_FILE).is_file()}
    log(f"DistDNAS: {len(days)} days, {len(net_cfg.candidates)} candidates x {net_cfg.choice_blocks} choice "
        f"blocks, lambda {net_cfg.cost_weight}; {len(days) - len(todo)} day(s) searched before")
    for data in {str(c.data.prepared_path()): c.data for c in todo.values()}.values():  # once, before any worker
        experiment.prepare_data(data, log=log)
    threads = max(1, (os.cpu_count() or 1) // min(workers, max(1, len(todo))))
    todo = {d: c if c.train.threads else c.model_copy(update={"train": c.train.model_copy(update={"threads": threads})})
            for d, c in todo.items()}
    t0 = time.time()
    if workers > 1 and len(todo) > 1:
        run_in_processes([(f"day {d}", _train_day, (c,)) for d, c in todo.items()], workers, log)
    else:
        for d, c in todo.items():
            log(f"day {d}: finished in {_train_day(c):.0f}s")
    seconds = time.time() - t0
    before = out_dir / DISTDNAS_REPORT  # an earlier call's searching time counts too
    if before.is_file():
        seconds += json.loads(before.read_text())["context"].get("search_seconds", 0.0)

    per_day, weights = [], []
    for d, c in cfgs.items():
        run = load_run(c.resolved_run_dir())
        w = run.model.architecture_weights().detach().double()
        metrics = json.loads((c.resolved_run_dir() / METRICS_FILE).read_text())
        weights.append(w.numpy())
        per_day.append({"day": d, "run_dir": str(c.resolved_run_dir()), "valid_auc": metrics["valid"].get("auc"),
                        "best_step": metrics.get("best_step"), "steps": metrics.get("steps"),
                        "weights": w.tolist(), "expected_flops": float(run.model.expected_flops(w))})
    mean = np.mean(weights, axis=0)
    blocks = derive_blocks(net_cfg, mean, keep)
    derived = {"name": "searched", "embedding_dim": net_cfg.embedding_dim, "blocks": blocks,
               **({"head_hidden": net_cfg.head_hidden} if net_cfg.head_hidden else {})}
    report = {
        "context": {"config": str(path), "overrides": overrides, "space": str(space.file or space.where),
                    "machine": machine_info(), "days": len(days), "day_ids": days, "epochs_per_day": epochs,
                    "keep": keep, "workers": workers, "supernet": supernet, "search_seconds": seconds},
        "candidates": [candidate_label(c) for c in net_cfg.candidates],
        "days": per_day,
        "weights": mean.tolist(),
        "kept": selection(net_cfg, mean, keep),
        "derived": {"model": derived, "architecture": describe_blocks(blocks),
                    "train_command": f"rankmixer train -c {config} '{format_override('model', derived)}'"},
    }
    write_json(out_dir / DISTDNAS_REPORT, report, [path], "DistDNAS report")
    return report


def weights_table(report: dict) -> str:
    """The aggregated architecture weights as a markdown table: a row per candidate, a column
    per choice block, the kept candidates starred."""
    w = np.asarray(report["weights"])
    kept = {(i, k) for i, ks in enumerate(report["kept"]) for k in ks}
    rows = ["| candidate | " + " | ".join(f"block {i}" for i in range(w.shape[0])) + " |",
            "|---" * (w.shape[0] + 1) + "|"]
    for k, name in enumerate(report["candidates"]):
        cells = [f"{w[i, k]:.3f}{' *' if (i, k) in kept else ''}" for i in range(w.shape[0])]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def searches_table(reports: list[dict]) -> str:
    """One row per DistDNAS search: its seed and lambda, each day's supernet validation AUC and
    expected FLOPs, the derived architecture and the wall time spent training supernets."""
    lines = ["| seed | lambda | supernet valid AUC per day | expected FLOPs/sample per day | derived architecture "
             "| search wall time |", "|---|---|---|---|---|---|"]
    for r in reports:
        c = r["context"]
        seed = next((o.split("=", 1)[1] for o in c["overrides"] if o.startswith("seed=")), "config's")
        auc = ", ".join(f"{d['valid_auc']:.4f}" for d in r["days"])
        flops = ", ".join(f"{d['expected_flops'] / 1e3:.0f}k" for d in r["days"])
        lines.append(f"| {seed} | {c['supernet'].get('cost_weight', 0):g} | {auc} | {flops} | "
                     f"`{r['derived']['architecture']}` | {c['search_seconds']:.0f} s |")
    return "\n".join(lines) + "\n"
