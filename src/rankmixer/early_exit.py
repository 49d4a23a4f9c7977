"""Early-exit calibration: thresholds for a target AUC loss, and the latency/AUC trade-off.

A RankMixer trained with ``model.early_exit`` has one exit per block (see
``models/rankmixer.py``). At inference a row leaves at the first exit ``i`` whose confidence
``|logit_i[confidence_task]|`` reaches ``thresholds[i]``. Which exit a row takes depends only on
its own exit logits, so one full forward over a split (every exit's logits for every row) lets
us evaluate any threshold setting exactly, offline: :func:`simulate_exits`. The latency of a
setting is then measured for real with :meth:`RankMixer.forward_early_exit` on a few batches.

Threshold family (the paper, arXiv 2501.02173, compares a head's confidence to a threshold but
gives no search procedure): one shared threshold ``t`` for every intermediate exit, since
``|logit|`` has the same meaning at every head. The grid is the quantiles of the intermediate
exits' confidences, plus ``inf`` (never exit: the full model). :func:`calibrate` keeps the grid
point with the lowest expected FLOPs whose AUC loss relative to the full model (the same
network, every row through the final head) is at most ``max_auc_loss`` on the calibration split.
``inf`` always qualifies, so a setting is always found.

Files written to the run directory: ``early_exit.json`` (the chosen thresholds, for serving;
read it back with :func:`load_thresholds`) and ``early_exit_curve.json`` (the whole curve).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rankmixer.core import metrics as M
from rankmixer.core.files import write_json
from rankmixer.core.hardware import machine_info
from rankmixer.data.batch import Batch
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.runs import load_run

THRESHOLDS_FILE = "early_exit.json"
CURVE_FILE = "early_exit_curve.json"


# ------------------------------------------------------------------------------------------
# offline evaluation of a threshold setting
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def collect_exit_logits(model: torch.nn.Module, batches) -> tuple[np.ndarray, np.ndarray]:
    """Every exit's logits for every row: ``([E, N, n_tasks] float64, labels [N, n_tasks])``."""
    model.eval()
    exits, labels = [], []
    for batch in batches:
        out = model(batch)
        if out.exit_logits is None:
            raise ValueError("the model has no exit heads (train it with model.early_exit)")
        exits.append(torch.stack([z.float() for z in out.exit_logits]).double().numpy())
        labels.append(batch.labels.numpy())
    if not exits:
        raise ValueError("no rows to calibrate on")
    return np.concatenate(exits, axis=1), np.concatenate(labels)


def simulate_exits(
    exit_logits: np.ndarray, thresholds: list[float | None], task: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`RankMixer.forward_early_exit` returns for these thresholds, computed from
    the logits of every exit: ``(logits [N, n_tasks], exit index [N])``."""
    E, N, _ = exit_logits.shape
    if len(thresholds) != E - 1:
        raise ValueError(f"need {E - 1} thresholds (one per exit before the final head), got {len(thresholds)}")
    exit_index = np.full(N, E - 1, dtype=np.int64)
    undecided = np.ones(N, dtype=bool)
    for i, t in enumerate(thresholds):
        if t is None or math.isinf(t):
            continue
        leave = undecided & (np.abs(exit_logits[i, :, task]) >= t)
        exit_index[leave] = i
        undecided &= ~leave
    return exit_logits[exit_index, np.arange(N)], exit_index


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def flops_per_exit(flops: dict[str, Any], thresholds: list[float | None]) -> list[float]:
    """FLOPs per sample of a row leaving at each exit, given which exit heads are evaluated
    (those with a threshold); ``flops`` is :func:`rankmixer_exit_flops`'s dict."""
    out, heads = [], 0
    for i, t in enumerate(thresholds):
        heads += t is not None and not math.isinf(t)
        out.append(flops["pre"] + (i + 1) * flops["block"] + heads * flops["exit_head"])
    out.append(flops["pre"] + (len(thresholds) + 1) * flops["block"] + heads * flops["exit_head"] + flops["final_head"])
    return out


def evaluate_setting(
    exit_logits: np.ndarray, labels: np.ndarray, thresholds: list[float | None], task: int,
    flops: dict[str, Any],
) -> dict[str, Any]:
    """AUC, logloss (of ``task``), share of rows at each exit and expected FLOPs per sample."""
    logits, idx = simulate_exits(exit_logits, thresholds, task)
    p = _sigmoid(logits[:, task])
    y = labels[:, task]
    share = np.bincount(idx, minlength=exit_logits.shape[0]) / len(idx)
    return {
        "auc": M.auc(y, p),
        "logloss": M.logloss(y, p),
        "exit_share": [float(s) for s in share],
        "flops_per_sample": float(np.dot(share, flops_per_exit(flops, thresholds))),
    }


def threshold_grid(exit_logits: np.ndarray, task: int, points: int) -> list[float]:
    """``points`` shared thresholds from the quantiles of the intermediate exits' confidences
    (largest first: from few rows exiting to all of them exiting at the first head). The
    quantile levels ``1 - (k / (points - 1))^2`` are densest where few rows exit, the region a
    small AUC-loss budget lands in."""
    conf = np.abs(exit_logits[:-1, :, task]).ravel()
    if conf.size == 0:
        return []
    qs = np.quantile(conf, 1.0 - np.linspace(0.0, 1.0, points) ** 2)
    return sorted({float(q) for q in qs}, reverse=True)


def calibrate(
    exit_logits: np.ndarray,
    labels: np.ndarray,
    max_auc_loss: float,
    flops: dict[str, Any],
    task: int = 0,
    points: int = 20,
) -> dict[str, Any]:
    """The curve over the shared-threshold grid (``inf`` first = the full model) and the chosen
    setting: the lowest expected FLOPs with ``auc_full - auc <= max_auc_loss``. ``flops``:
    :func:`rankmixer.models.rankmixer.rankmixer_exit_flops` of the model."""
    if max_auc_loss < 0:
        raise ValueError(f"max_auc_loss must be >= 0, got {max_auc_loss}")
    n_inner = exit_logits.shape[0] - 1
    full = evaluate_setting(exit_logits, labels, [None] * n_inner, task, flops)
    curve = []
    for t in [math.inf, *threshold_grid(exit_logits, task, points)]:
        thr = [None if math.isinf(t) else t] * n_inner
        point = {"threshold": t, "thresholds": thr,
                 **evaluate_setting(exit_logits, labels, thr, task, flops)}
        point["auc_loss"] = full["auc"] - point["auc"]
        curve.append(point)
    ok = [p for p in curve if p["auc_loss"] <= max_auc_loss]
    chosen = min(ok, key=lambda p: (p["flops_per_sample"], -p["auc"]))
    return {"auc_full": full["auc"], "logloss_full": full["logloss"], "curve": curve, "chosen": chosen}


# ------------------------------------------------------------------------------------------
# measured latency
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def measure_latency(
    model: torch.nn.Module, batches: list[Batch], settings: list[list[float | None]], repeats: int = 3
) -> list[dict[str, Any]]:
    """Wall time per batch of ``forward_early_exit`` for each setting over ``repeats`` x
    batches. Settings are interleaved batch by batch (in a rotating order) so that load from
    other processes hits them alike. Reported: the median, and the minimum (noise on a shared
    machine only ever adds time, so the minimum is the steadier estimate of the compute); and
    the rows that entered each block (summed over the batches, from the first repeat)."""
    model.eval()
    n = len(settings)
    times: list[list[float]] = [[] for _ in settings]
    rows: list[list[int]] = [[0] * len(model.backbone.blocks) for _ in settings]
    for thr in settings:  # warm-up
        model.forward_early_exit(batches[0], thr)
    for r in range(repeats):
        for j, b in enumerate(batches):
            for step in range(n):
                k = (step + r + j) % n
                t0 = time.perf_counter()
                out = model.forward_early_exit(b, settings[k])
                times[k].append(time.perf_counter() - t0)
                if r == 0:
                    rows[k] = [a + c for a, c in zip(rows[k], out.rows_per_block)]
    return [{"ms_per_batch": 1000 * statistics.median(t), "ms_per_batch_min": 1000 * min(t), "rows_per_block": c}
            for t, c in zip(times, rows)]


# ------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------
def _json_thresholds(thr: list[float | None]) -> list[float | None]:
    return [None if t is None or math.isinf(t) else float(t) for t in thr]


def calibrate_run(
    run_dir: str | Path,
    split: str = "valid",
    max_auc_loss: float = 0.001,
    points: int = 20,
    batch_size: int = 4096,
    latency_batches: int = 10,
    latency_points: int = 8,
    repeats: int = 3,
    max_rows: int | None = None,
    check_split: str | None = "test",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Calibrate a trained early-exit run; writes ``early_exit.json`` (thresholds) and
    ``early_exit_curve.json`` into the run directory and returns the report.

    Latency is measured on ``latency_batches`` batches of ``batch_size`` rows for the full
    model, the chosen setting and ``latency_points`` grid points spread over the curve.
    ``check_split`` (if the data has it and it differs from ``split``): every curve point's
    thresholds are also evaluated there (``check`` in each point), to see whether a setting
    calibrated on one split holds on unseen rows."""
    from rankmixer.models.rankmixer import RankMixer, rankmixer_exit_flops

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    fm, model = run.feature_map, run.model
    if not isinstance(model, RankMixer) or model.exit_heads is None:
        raise ValueError(f"{run_dir}: model {run.model_name!r} has no exit heads; train a RankMixer with model.early_exit")
    if split not in fm.splits:
        raise ValueError(f"{run_dir}: no split {split!r}; have {sorted(fm.splits)}")
    task = model.cfg.early_exit.confidence_task
    flops = rankmixer_exit_flops(model.cfg, fm)
    data = make_loader(ParquetBatches(fm, split, batch_size, shuffle=False))
    n_batches = None if max_rows is None else max(1, math.ceil(max_rows / batch_size))
    batches = list(itertools.islice(data, n_batches))
    t0 = time.time()
    exit_logits, labels = collect_exit_logits(model, batches)
    log(f"{split}: {labels.shape[0]:,} rows, {exit_logits.shape[0]} exits, logits in {time.time() - t0:.1f}s")
    result = calibrate(exit_logits, labels, max_auc_loss, flops, task, points)
    if check_split is not None and (check_split == split or check_split not in fm.splits):
        check_split = None
    if check_split is not None:
        check_logits, check_labels = collect_exit_logits(
            model, itertools.islice(make_loader(ParquetBatches(fm, check_split, batch_size, shuffle=False)), n_batches))
        check_full = evaluate_setting(check_logits, check_labels, [None] * (check_logits.shape[0] - 1), task, flops)
        for p in result["curve"]:
            c = evaluate_setting(check_logits, check_labels, p["thresholds"], task, flops)
            p["check"] = {**c, "auc_loss": check_full["auc"] - c["auc"], "flops_ratio": c["flops_per_sample"] / flops["no_exit"]}

    # Latency for the full model, the chosen setting and a spread of the curve.
    curve = result["curve"]
    picks = sorted({0, *np.linspace(0, len(curve) - 1, latency_points).round().astype(int).tolist()})
    chosen_k = curve.index(result["chosen"])
    picks = sorted(set(picks) | {chosen_k})
    timed = measure_latency(model, batches[:latency_batches], [curve[k]["thresholds"] for k in picks], repeats)
    base, base_min = timed[0]["ms_per_batch"], timed[0]["ms_per_batch_min"]
    for k, m in zip(picks, timed):
        curve[k].update(m, latency_ratio=m["ms_per_batch"] / base, latency_ratio_min=m["ms_per_batch_min"] / base_min)
    for p in curve:
        p["flops_ratio"] = p["flops_per_sample"] / flops["no_exit"]
        p["thresholds"] = _json_thresholds(p["thresholds"])
        p["threshold"] = None if math.isinf(p["threshold"]) else p["threshold"]
        p["min_confidence_prob"] = None if p["threshold"] is None else float(_sigmoid(np.array(p["threshold"])))

    chosen = result["chosen"]
    saved = {
        "thresholds": chosen["thresholds"],
        "confidence": "abs_logit",  # exit when |logit| >= threshold, i.e. max(p, 1-p) >= sigmoid(threshold)
        "confidence_task": fm.labels[task],
        "calibrated_on": {"split": split, "rows": int(labels.shape[0]), "max_auc_loss": max_auc_loss},
        "auc_full": result["auc_full"], "auc": chosen["auc"], "auc_loss": chosen["auc_loss"],
        "exit_share": chosen["exit_share"], "flops_per_sample": chosen["flops_per_sample"],
        "flops_no_exit": flops["no_exit"],
    }
    # Each exit alone on every row: how much the later blocks add at all.
    exit_auc = [M.auc(labels[:, task], exit_logits[i, :, task]) for i in range(exit_logits.shape[0])]
    report = {
        "run_dir": str(run_dir), "split": split, "rows": int(labels.shape[0]), "task": fm.labels[task],
        "exit_auc": exit_auc, "check_split": check_split,
        "check_rows": None if check_split is None else int(check_labels.shape[0]),
        "check_auc_full": None if check_split is None else check_full["auc"],
        "max_auc_loss": max_auc_loss, "auc_full": result["auc_full"], "logloss_full": result["logloss_full"],
        "flops": flops, "batch_size": batch_size, "latency_batches": min(latency_batches, len(batches)),
        "repeats": repeats, "threads": torch.get_num_threads(), "chosen_index": chosen_k, "curve": curve,
        "thresholds_file": str(run_dir / THRESHOLDS_FILE), "machine": machine_info(),
    }
    write_json(run_dir / THRESHOLDS_FILE, saved)
    write_json(run_dir / CURVE_FILE, report)
    return report


def load_thresholds(run_dir: str | Path) -> list[float | None]:
    """The calibrated thresholds of a run (``None``: never exit at that head), for
    :meth:`RankMixer.forward_early_exit`."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `rankmixer calibrate-exit --run {run_dir}` first")
    data = json.loads(path.read_text())
    thr = data.get("thresholds")
    if not isinstance(thr, list) or not all(t is None or isinstance(t, (int, float)) for t in thr):
        raise ValueError(f"{path}: 'thresholds' must be a list of numbers or null, got {thr!r}")
    return [None if t is None else float(t) for t in thr]
