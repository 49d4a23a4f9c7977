"""FuxiCTR end to end as a peer: one of our experiments' train/valid/test rows trained and
evaluated by FuxiCTR's whole pipeline, read back as one of our runs (``fuxictr-e2e:<model>``).

What is FuxiCTR's: the feature processing (``FeatureProcessor``, ``build_dataset``: its
vocabularies, ``min_categr_count``, normalisers, sequence padding), the Ray data loader
(``RankDataLoader``), the training loop (``BaseModel.fit``: Adam, its embedding and network
regularisers, gradient clipping, reduce-LR-on-plateau, early stopping on its monitor, the best
checkpoint reloaded), its evaluation, and its model-zoo settings (``configs/fuxictr_e2e``: the
zoo's ``<Model>_default`` template, or a dataset's published settings). What is ours: the rows
(:mod:`rankmixer.bench.fuxictr_export`, checked to be our prepared splits), the network (the
composition our ``fuxictr-*`` rows train, :mod:`rankmixer.models.fuxictr.zoo`), and the final
metrics, computed from FuxiCTR's predictions by ``core.metrics`` exactly as for our runs
(FuxiCTR's own numbers are kept beside them).

FuxiCTR runs in a subprocess (``fuxictr_e2e_worker``): it configures logging and Ray for the
whole process. The run directory (written whole into a temporary sibling, then renamed)::

    data/                 the exported splits (fuxictr_export)
    fuxictr_config/       FuxiCTR's dataset_config.yaml and model_config.yaml
    fuxictr_data/         FuxiCTR's processed data (feature_map.json, vocabularies, Parquet)
    fuxictr_checkpoints/  its best weights and its log
    fuxictr_out/          the worker's result.json and predictions
    fuxictr.log           the worker's output
    metrics.json          our run's shape: test, valid, steps, best_step, parameters, ... (below)
    test_predictions.npz  labels [N, T], probs [N, T], group [N] (if any), in test-split order
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import yaml

import rankmixer
from rankmixer import experiment
from rankmixer.bench.fuxictr_export import ROW_ID, dataset_config, export_splits, notes
from rankmixer.config import ExperimentConfig, packaged_configs
from rankmixer.core.files import atomic_directory, check_output, write_text_atomic
from rankmixer.core.hardware import pick_device
from rankmixer.core.metrics import compute_metrics
from rankmixer.core.yamlio import read_yaml_mapping
from rankmixer.data.feature_map import GROUP_COLUMN, FeatureMap
from rankmixer.models.fuxictr.common import require_fuxictr
from rankmixer.models.fuxictr.zoo import TRAINING_KEYS, ZOO

__all__ = ["E2E_KIND", "MODELS", "fuxictr_params", "train_e2e"]

E2E_KIND = "fuxictr-e2e run"  # the run directory's ownership marker (core/files.py)
MODELS = tuple(ZOO)


def _configs() -> Path:
    return packaged_configs() / "fuxictr_e2e"


def fuxictr_params(model: str, dataset: str, overrides: dict | None = None) -> tuple[dict, list[str]]:
    """FuxiCTR's parameters of ``model`` on our dataset ``dataset`` and where they came from:
    ``base.yaml`` (the zoo's Base section), the model's ``default`` (its zoo template), the
    model's entry for ``dataset`` if it has one, then ``overrides``. Every key must be one the
    zoo model or FuxiCTR's training loop takes; a regulariser must be a float or a string
    (FuxiCTR silently ignores an integer)."""
    if model not in ZOO:
        raise ValueError(f"fuxictr-e2e model {model!r} is not one of {', '.join(MODELS)}")
    path = _configs() / f"{model}.yaml"
    tree = read_yaml_mapping(path, "fuxictr-e2e config", ("default", "datasets"))
    params = dict(read_yaml_mapping(_configs() / "base.yaml", "fuxictr-e2e config"))
    params.update(tree["default"])
    sources = [f"{_configs().name}/base.yaml", f"{path.name}: default"]
    entry = (tree.get("datasets") or {}).get(dataset)
    if entry is not None:
        if not isinstance(entry, dict) or set(entry) != {"source", "params"}:
            raise ValueError(f"{path}: datasets.{dataset} must have exactly 'source' and 'params'")
        params.update(entry["params"])
        sources.append(f"{path.name}: datasets.{dataset} ({entry['source']})")
    if overrides:
        params.update(overrides)
        sources.append(f"overrides {sorted(overrides)}")
    allowed = ZOO[model].keys | TRAINING_KEYS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"fuxictr-e2e:{model}: unknown FuxiCTR parameter(s) {unknown} (from {sources}); "
                         f"known: {sorted(allowed)}")
    for k in ("embedding_regularizer", "net_regularizer"):
        v = params.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v != 0:
            raise ValueError(f"{k}={v}: give a float (FuxiCTR ignores an integer regulariser)")
    return params, sources


def train_e2e(cfg: ExperimentConfig, model: str, run_dir: Path, seed: int, params_overrides: dict | None = None,
              log: Callable[[str], None] = print, *, timeout_s: float | None = 6 * 3600) -> dict:
    """Train and evaluate FuxiCTR's ``model`` (a key of :data:`MODELS`) end to end on the rows of
    ``cfg``'s data, seeded with ``seed``, into ``run_dir``; returns what ``metrics.json`` holds.

    From ``cfg`` only the data section and ``train.threads`` / ``train.device`` are used: the
    model and its training settings are FuxiCTR's (:func:`fuxictr_params`, then
    ``params_overrides``). ``run_dir`` is new, empty, or an earlier run of this kind (replaced).
    The worker is stopped (with its Ray processes) after ``timeout_s`` seconds (None: no limit).
    ``best_step`` and ``steps`` count FuxiCTR's training steps (batches); it validates once per
    epoch unless ``eval_steps`` is set."""
    run_dir = Path(run_dir)
    require_fuxictr()  # without the extra: an ImportError saying what to install, before any work
    params, sources = fuxictr_params(model, cfg.data.name, params_overrides)
    fm = experiment.prepare_data(cfg.data, log=log)
    src = experiment.data_source(cfg.data)
    check_output(run_dir, [fm.root, src.raw_path, *src.inputs, *src.raw.all,
                           *(p for files in src.raw.by_split.values() for p in files)], "run directory")
    expid = f"{ZOO[model].zoo_name}_e2e"
    dataset_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in cfg.data.name)
    params.update(dataset_id=dataset_id, model_root="fuxictr_checkpoints/", seed=seed, verbose=0)
    threads = cfg.train.threads
    gpu = 0 if pick_device(cfg.train.device).type == "cuda" else -1
    t0 = time.time()
    with atomic_directory(run_dir, E2E_KIND, overwrite=True) as tmp:
        rows = export_splits(cfg.data, fm, tmp / "data", log=log)
        conf = tmp / "fuxictr_config"
        conf.mkdir()
        ds = dataset_config(src.schema, data_dir="data", data_root="fuxictr_data/")
        (conf / "dataset_config.yaml").write_text(yaml.safe_dump({dataset_id: ds}, sort_keys=False))
        (conf / "model_config.yaml").write_text(yaml.safe_dump({expid: params}, sort_keys=False))
        log(f"fuxictr-e2e:{model} on {cfg.data.name} (seed {seed}, {rows['train']:,} training rows): FuxiCTR runs "
            f"in a subprocess, its log in {tmp / 'fuxictr.log'} (then {run_dir})")
        _run_worker(tmp, ["--config", "fuxictr_config", "--expid", expid, "--model", model, "--out", "fuxictr_out",
                          "--gpu", str(gpu), *(["--threads", str(threads)] if threads else [])], threads, timeout_s)
        out = json.loads((tmp / "fuxictr_out" / "result.json").read_text())
        metrics, test = {}, None
        for split in ("valid", "test"):
            labels, probs, group = _aligned(tmp / "fuxictr_out" / f"{split}_predictions.npz", fm, split)
            metrics[split] = compute_metrics(labels, probs, group, fm.labels)
            if split == "test":
                test = {"labels": labels, "probs": probs, **({"group": group} if group is not None else {})}
        np.savez(tmp / "test_predictions.npz", **test)
        best = [h for h in out["history"] if h["improved"]]
        result = {
            "model": f"fuxictr-e2e:{model}",
            "test": metrics["test"], "valid": metrics["valid"],
            "steps": out["steps"], "best_step": best[-1]["step"] if best else None,
            "epochs": out["epochs"], "best_epoch": best[-1]["epoch"] if best else None,
            "stopped_early": out["stopped_early"],
            "parameters": out["parameters"], "dense_parameters": out["dense_parameters"], "flops_per_sample": None,
            "bayes": fm.extras.get("bayes"),
            "seconds": round(time.time() - t0, 1),
            "fuxictr_version": out["fuxictr_version"],
            "fuxictr_params": out["params"], "fuxictr_params_sources": sources,
            "fuxictr_metrics": {"valid": out["valid"], "test": out["test"]},
            "fuxictr_history": out["history"],
            "fuxictr_data_notes": notes(src.schema),
        }
        write_text_atomic(tmp / "metrics.json", json.dumps(result, indent=2))
    log(f"fuxictr-e2e:{model}: test auc {result['test']['auc']:.4f} after {result['epochs']} epochs "
        f"({result['seconds']:.0f}s)")
    return result


def _run_worker(cwd: Path, args: list[str], threads: int | None, timeout_s: float | None) -> None:
    """The worker in its own session (so a timeout stops it and every process it started, Ray's
    included); its output goes to ``fuxictr.log``."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    # The worker imports this same rankmixer, wherever it was imported from.
    env["PYTHONPATH"] = os.pathsep.join([str(Path(rankmixer.__file__).parents[1]), env.get("PYTHONPATH", "")])
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "rankmixer.bench.fuxictr_e2e_worker", *args]
    with open(cwd / "fuxictr.log", "w") as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"the FuxiCTR worker ran longer than {timeout_s:.0f}s and was stopped") from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        tail = (cwd / "fuxictr.log").read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"the FuxiCTR worker failed (exit code {rc}); the end of its log:\n" + "\n".join(tail))


def _aligned(path: Path, fm: FeatureMap, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels [N, T], FuxiCTR's probs [N, T], group ids [N] or None) in the prepared split's row
    order; FuxiCTR's labels must equal ours row by row (the rows are matched by ``__split_row``)."""
    pred = np.load(path)
    cols = [*fm.labels, *([GROUP_COLUMN] if fm.has_group else [])]
    ours = pl.scan_parquet(fm.split_files(split)).select(cols).collect()
    n = ours.height
    row = pred["row"]
    if row.shape[0] != n or not np.array_equal(np.sort(row), np.arange(n)):
        raise RuntimeError(f"{split}: FuxiCTR predicted {row.shape[0]:,} rows, not each of the split's {n:,} once "
                           f"(by {ROW_ID})")
    order = np.argsort(row)
    probs = pred["probs"][order]
    labels = ours.select(fm.labels).to_numpy().astype(np.float32)
    if not np.array_equal(pred["labels"][order], labels):
        raise RuntimeError(f"{split}: FuxiCTR's labels differ from the prepared split's at matched rows")
    group = ours[GROUP_COLUMN].to_numpy() if fm.has_group else None
    return labels, probs, group
