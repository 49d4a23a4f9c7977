"""Accuracy benchmark: every (experiment config, seed) trained the same way, summarised as
mean and spread of the test metrics. Resumable: a cell whose run directory already has its
final ``metrics.json`` is read, not rerun; an interrupted cell resumes from its checkpoint."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from rankmixer import experiment
from rankmixer.config import load_config

METRICS = ("auc", "gauc", "logloss", "ne")


def run_accuracy(
    configs: list[Path],
    seeds: list[int],
    out_dir: Path,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = []
    total = len(configs) * len(seeds)
    for i, (config, seed) in enumerate(((c, s) for c in configs for s in seeds), start=1):
        run_dir = out_dir / "runs" / f"{Path(config).stem}-s{seed}"
        done = run_dir / "metrics.json"
        cfg = load_config(config, list(overrides or []) + [f"seed={seed}", f"run_dir={run_dir}",
                                                           "train.progress=false"])
        if done.exists() and "test" in json.loads(done.read_text()):
            log(f"[{i}/{total}] {config} seed {seed}: done before, reading {done}")
        else:
            log(f"[{i}/{total}] {config} seed {seed}: training")
            t0 = time.time()
            experiment.train(cfg, resume=(run_dir / "checkpoints").exists(), log=lambda *_: None)
            log(f"[{i}/{total}] finished in {time.time() - t0:.0f}s")
        result = json.loads(done.read_text())
        cells.append({
            "config": str(config), "dataset": cfg.data.dataset, "model": cfg.model_name, "seed": seed,
            "parameters": result.get("parameters"), "steps": result["steps"], "best_step": result["best_step"],
            "test": result["test"], "valid": result["valid"], "bayes": result.get("bayes"),
        })
    summary = summarise(cells)
    report = {"machine": platform.processor() or platform.machine(), "seeds": seeds,
              "overrides": overrides or [], "cells": cells, "summary": summary}
    (out_dir / "accuracy.json").write_text(json.dumps(report, indent=2))
    (out_dir / "accuracy.md").write_text(markdown_table(summary))
    return report


def summarise(cells: list[dict]) -> list[dict]:
    rows = []
    for config in dict.fromkeys(c["config"] for c in cells):
        group = [c for c in cells if c["config"] == config]
        row = {"config": config, "dataset": group[0]["dataset"], "model": group[0]["model"],
               "seeds": len(group), "parameters": group[0]["parameters"]}
        for m in METRICS:
            vals = np.array([c["test"].get(m, np.nan) for c in group], dtype=float)
            row[m] = float(np.mean(vals))
            row[m + "_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        bayes = group[0].get("bayes") or {}
        row["bayes_auc"] = (bayes.get("test") or {}).get("auc")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = "| dataset | model | params | seeds | test AUC | test gAUC | test logloss | NE |\n|---|---|---:|---:|---|---|---|---|\n"
    lines = []
    for r in rows:
        cells = [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in METRICS]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['parameters']:,} | {r['seeds']} | " + " | ".join(cells) + " |")
        if r.get("bayes_auc"):
            lines.append(f"| {r['dataset']} | Bayes-optimal (planted model) | - | - | {r['bayes_auc']:.4f} | | | |")
    return head + "\n".join(lines) + "\n"
