"""Accuracy benchmark: every (cell, seed) trained the same way, summarised as mean and spread
of the test metrics, with parameters and forward FLOPs per sample beside them (FLOPs too are a
mean over seeds: a sparse MoE's count follows its routing).

A *cell* is one row of the table: an experiment config plus overrides, under a label. Cells
come from plain configs (``-c movielens_lr -c b.yaml``: one cell each, labelled by the name or
file stem) or from a *suite* (a packaged name such as ``peers``, or a file) that crosses
datasets with models::

    # rankmixer bench accuracy --suite rankmixer --seeds 3
    datasets:                 # name -> base experiment: data section + training budget
      movielens-latest: movielens_dcnv2
      synthetic: {config: synthetic_dcnv2, overrides: [train.epochs=2]}
    models:                   # label -> model section that replaces the base config's
      dcnv2: model/dcnv2                                   # a part
      dcnv2-wide: {defaults: model/dcnv2, dnn_hidden: [400, 400]}
      rankmixer-no-mixing: {name: rankmixer, token_mixing: none}
      fuxictr-e2e:dcnv2: {fuxictr_e2e: dcnv2}               # FuxiCTR's whole pipeline
      oracle: {model: model/planted, datasets: [synthetic]}  # only on the datasets listed
    overrides: [train.epochs=5]   # optional, applied to every cell
    differences: [[dcnv2, "fuxictr-e2e:dcnv2"]]   # optional: model A minus model B per dataset,
                                                  # paired bootstrap interval (bench/intervals.py);
                                                  # DATASET/MODEL pairs rows across datasets

A ``{fuxictr_e2e: MODEL, params: {...}}`` entry is trained by FuxiCTR's own pipeline on the
same splits (bench/fuxictr_e2e.py): its feature processing, training loop and config (its
``params`` override FuxiCTR's), with only the base experiment's data section and seed from us.
Every (dataset, model) pair is a cell; configs are packaged names or paths relative to the
working directory, like ``rankmixer train -c``; model parts are looked up beside the suite,
then in the package. Resumable: a (cell, seed) whose run directory already has its final
``metrics.json`` is read, not rerun, if it was trained with the config this command would train
it with (else an error names the keys); an interrupted one resumes from its checkpoint.

Intervals: each row's seed-mean test AUC gets a 95% bootstrap interval over the test rows, from
its runs' ``test_predictions.npz`` (:mod:`rankmixer.core.bootstrap`; None for runs that saved
none), and :func:`rankmixer.bench.intervals.paired_difference` gives the interval of the
difference between two rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rankmixer import experiment
from rankmixer.config import ConfigError, config_path, load_config, section
from rankmixer.core.files import check_replaceable, write_json, write_marker, write_text_atomic
from rankmixer.core.hardware import machine_info, pick_device
from rankmixer.bench.intervals import BOOTSTRAP, INTERVAL_KEYS, seed_mean_interval
from rankmixer.core.predictions import MIN_POSITIVES
from rankmixer.core.processes import run_in_processes
from rankmixer.core.rundir import CONFIG_FILE
from rankmixer.core.yamlio import YamlError, read_yaml_mapping
from rankmixer.bench.intervals import dataset_differences, differences_table, run_dir_name

METRICS = ("auc", "gauc", "logloss", "ne")
BENCH_KIND = "benchmark"  # the ownership marker of an output folder (core/files.py)


@dataclass(frozen=True)
class Cell:
    label: str  # unique; names the run directories
    config: str
    overrides: tuple[str, ...] = ()
    model_label: str | None = None  # table's model column (default: the registered model name)
    dataset_label: str | None = None  # table's dataset column (default: the config's data.dataset)
    fuxictr_e2e: str | None = None  # trained by FuxiCTR's own pipeline: its model name
    fuxictr_params: str = "{}"  # JSON of FuxiCTR params that replace its config's


def cells_from_configs(configs: list[Path | str]) -> list[Cell]:
    return [Cell(Path(c).stem, str(c)) for c in configs]


def read_yaml_keys(path: Path | str, what: str, keys: tuple[str, ...]) -> dict:
    """A benchmark file's YAML mapping, read by the one reader (``core.yamlio``): a key outside
    ``keys`` is an error (a typo must not silently drop a part of the benchmark), as a
    :class:`ConfigError` like every other problem of a suite or spec."""
    try:
        return read_yaml_mapping(path, what, keys, allow_empty=True)
    except YamlError as e:
        raise ConfigError(str(e)) from None


def load_suite(path: Path | str) -> list[Cell]:
    """The cells of a suite (a file, or a packaged suite's name such as ``peers``; see the
    module docstring), datasets outer, models inner."""
    path = config_path(path, kind="bench", what="suite")
    tree = read_yaml_keys(path, "suite", ("datasets", "models", "overrides", "differences"))
    datasets, models = tree.get("datasets") or {}, tree.get("models") or {}
    if not isinstance(datasets, dict) or not datasets or not isinstance(models, dict) or not models:
        raise ConfigError(f"suite {path}: 'datasets' and 'models' must be non-empty mappings")
    common = tuple(str(o) for o in tree.get("overrides") or [])
    sections, only = {}, {}
    for label, entry in models.items():
        where = f"suite {path}: model {label!r}"
        if isinstance(entry, dict) and "datasets" in entry:
            entry, only[label] = _restricted_entry(entry, set(datasets), where)
        sections[label] = _model_entry(entry, [path.parent], where)
    cells = []
    for ds, entry in datasets.items():
        config, ds_overrides = entry, ()
        if isinstance(entry, dict):
            if set(entry) - {"config", "overrides"} or "config" not in entry:
                raise ConfigError(f"suite {path}: dataset {ds!r} must be a config (name or path) or {{config, overrides}}")
            config, ds_overrides = entry["config"], tuple(str(o) for o in entry.get("overrides") or [])
        for label, sec in sections.items():
            if label in only and ds not in only[label]:
                continue
            cell_label = f"{ds}-{label.replace(':', '-')}"
            if "fuxictr_e2e" in sec:
                cells.append(Cell(cell_label, str(config), (*ds_overrides, *common), label, ds,
                                  fuxictr_e2e=sec["fuxictr_e2e"], fuxictr_params=json.dumps(sec["params"])))
                continue
            # JSON is YAML: the override replaces the whole model section of the base config.
            model = f"model={json.dumps(sec)}"
            cells.append(Cell(cell_label, str(config), (model, *ds_overrides, *common), label, ds))
    return cells


def suite_differences(path: Path | str) -> list[tuple[str, str]]:
    """A suite's ``differences``: pairs of its model labels, (A, B) for A minus B."""
    path = config_path(path, kind="bench", what="suite")
    tree = read_yaml_keys(path, "suite", ("datasets", "models", "overrides", "differences"))
    pairs = tree.get("differences") or []
    models = set(tree.get("models") or {})
    # a side is a model label, or DATASET/MODEL: one dataset's row (a pair across datasets)
    known = models | {f"{d}/{m}" for d in (tree.get("datasets") or {}) for m in models}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and set(map(str, pair)) <= known):
            raise ConfigError(f"suite {path}: each of 'differences' must be [A, B], two of its model labels "
                              f"(or DATASET/MODEL); got {pair!r}")
    return [(str(a), str(b)) for a, b in pairs]


def _restricted_entry(entry: dict, datasets: set[str], where: str) -> tuple[object, list[str]]:
    """``{model: ENTRY, datasets: [...]}``: a model that runs on the listed datasets only (e.g.
    the synthetic sets' oracle, ``model/planted``): (ENTRY, the datasets)."""
    only = entry["datasets"]
    if set(entry) != {"model", "datasets"} or not isinstance(only, list) or not only:
        raise ConfigError(f"{where}: expected {{model: ENTRY, datasets: [NAME, ...]}}, got keys {sorted(entry)}")
    unknown = sorted(set(map(str, only)) - datasets)
    if unknown:
        raise ConfigError(f"{where}: datasets {unknown} are not datasets of the suite ({sorted(datasets)})")
    return entry["model"], [str(d) for d in only]


def _model_entry(entry: object, search: list[Path], where: str) -> dict:
    """A suite's model entry: ``{fuxictr_e2e: MODEL, params: {...}}`` for FuxiCTR's own
    pipeline, else a model section (:func:`model_section`)."""
    if isinstance(entry, dict) and "fuxictr_e2e" in entry:
        if set(entry) - {"fuxictr_e2e", "params"} or not isinstance(entry["fuxictr_e2e"], str):
            raise ConfigError(f"{where}: expected {{fuxictr_e2e: MODEL, params: {{...}}}}, got keys {sorted(entry)}")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: params must be a mapping of FuxiCTR parameters")
        return {"fuxictr_e2e": entry["fuxictr_e2e"], "params": params}
    return model_section(entry, search, where)


def model_section(entry: object, search: list[Path], where: str) -> dict:
    """A suite's (or scaling spec's) model entry as the model section it stands for: a mapping
    with a ``name``, a part name (``model/dcnv2`` or ``dcnv2``), or a mapping naming its part in
    ``defaults`` plus the keys that differ. Parts in ``search`` (the suite's folder) come first."""
    if isinstance(entry, (str, dict)):
        try:
            resolved = section("model", entry, search)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if "name" in resolved:
            return resolved
    raise ConfigError(f"{where} must be a mapping with a 'name', or a model part (model/<name>)")


def select(cells: list[Cell], datasets: list[str] | None = None, models: list[str] | None = None) -> list[Cell]:
    """The cells whose dataset / model label is in the given lists (None: no filter). A name that
    matches no cell is an error, so a typo does not silently shrink the table."""
    for wanted, key, what in ((datasets, "dataset_label", "dataset"), (models, "model_label", "model")):
        if wanted is None:
            continue
        have = [getattr(c, key) or (c.label if key == "model_label" else None) for c in cells]
        missing = [w for w in wanted if w not in have]
        if missing:
            raise ConfigError(f"unknown {what}(s) {missing}; the suite has {sorted(set(h for h in have if h))}")
        cells = [c for c, h in zip(cells, have) if h in wanted]
    return cells


def budget_overrides(budget: str | None, batch_size: int) -> list[str]:
    """``epochs=N`` | ``steps=N`` | ``samples=N`` -> config overrides giving every cell the same
    training budget (early stopping on validation still applies inside it). A sample budget
    becomes ``max_steps = ceil(N / batch_size)`` with as many epochs as that needs."""
    if not budget:
        return []
    kind, _, value = budget.partition("=")
    if kind not in ("epochs", "steps", "samples") or not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--budget {budget!r}: expected epochs=N, steps=N or samples=N with N >= 1")
    n = int(value)
    if kind == "epochs":
        return [f"train.epochs={n}"]
    steps = n if kind == "steps" else -(-n // batch_size)
    return [f"train.max_steps={steps}", "train.epochs=1000"]  # max_steps ends the run first


def run_accuracy(
    cells: list[Cell],
    seeds: list[int],
    out_dir: Path,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
    name: str = "accuracy",
    budget: str | None = None,
    differences: Sequence[tuple[str, str]] = (),
    processes: int = 1,
    report_only: bool = False,
) -> dict:
    """Train (or read) every (cell, seed); write ``<name>.json`` and ``<name>.md`` into
    ``out_dir`` (runs go to ``out_dir/runs``, so several suites can share their runs). ``out_dir``
    is new, empty, or a benchmark folder of ours: a folder of other files is refused.
    ``differences``: pairs of model labels, compared per dataset (A minus B, paired bootstrap).
    ``processes`` > 1 trains that many runs at once (:func:`_train_in_parallel`).
    ``report_only``: train nothing; report the runs finished so far (a long study, looked at
    while it runs, or reported where it ran)."""
    check_replaceable(out_dir, BENCH_KIND, overwrite=True, legacy=lambda p: (p / "runs").is_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, BENCH_KIND)
    if len({c.label for c in cells}) != len(cells):
        raise ValueError("benchmark cells must have distinct labels (two configs with the same file name?)")
    jobs = []
    for cell, seed in ((c, s) for c in cells for s in seeds):
        run_dir = out_dir / "runs" / run_dir_name(cell.label, seed)
        extra = [*cell.overrides, *(overrides or []), f"seed={seed}", f"run_dir={run_dir}", "train.progress=false"]
        if budget:
            extra += budget_overrides(budget, load_config(cell.config, extra).train.batch_size)
        jobs.append((cell, seed, run_dir, load_config(cell.config, extra)))
    _check_finished_runs(jobs)
    if report_only:
        finished = [j for j in jobs if _finished(j[2])]
        if not finished:
            raise ValueError(f"no finished run in {out_dir / 'runs'} to report")
        if len(finished) < len(jobs):
            done = {j[2] for j in finished}
            missing = [f"{c.label} seed {s}" for c, s, r, _ in jobs if r not in done]
            log(f"reporting {len(finished)} of {len(jobs)} runs; not finished: {', '.join(missing)}")
        jobs = finished
    elif processes > 1:
        _train_in_parallel(jobs, processes, log)
    else:
        trained_s: list[float] = []
        for i, (cell, seed, run_dir, cfg) in enumerate(jobs, start=1):
            if _finished(run_dir):
                log(f"[{i}/{len(jobs)}] {cell.label} seed {seed}: done before, reading {run_dir / 'metrics.json'}")
                continue
            eta = ""
            if trained_s:  # the mean so far, over the jobs left (all cells may not cost the same)
                eta = f", about {np.mean(trained_s) * (len(jobs) - i + 1) / 60:.0f} min left"
            log(f"[{i}/{len(jobs)}] {cell.label} seed {seed}: training{eta}")
            trained_s.append(_train_one(cell, seed, run_dir, cfg))
            log(f"[{i}/{len(jobs)}] finished in {trained_s[-1]:.0f}s")
    results, machines = [], []
    for cell, seed, run_dir, cfg in jobs:
        result = json.loads((run_dir / "metrics.json").read_text())
        machines.append(result.get("machine"))
        device = (result.get("machine") or {}).get("device") or pick_device(cfg.train.device).type
        results.append({
            "label": cell.label, "config": cell.config, "overrides": list(cell.overrides),
            "dataset": cell.dataset_label or cfg.data.dataset, "model": cell.model_label or cfg.model_name,
            "registered": f"fuxictr-e2e:{cell.fuxictr_e2e}" if cell.fuxictr_e2e else cfg.model_name,
            "seed": seed, "device": device, "parameters": result.get("parameters"),
            "dense_parameters": result.get("dense_parameters"),
            "flops_per_sample": result.get("flops_per_sample"),
            "train_samples_per_s": train_throughput(run_dir),
            "steps": result["steps"], "best_step": result["best_step"],
            "test": result["test"], "valid": result["valid"], "bayes": result.get("bayes"),
            # streamed runs: progressive validation, the mean over the days after the first
            "progressive": (result.get("streaming") or {}).get("mean_after_first"),
        })
    summary = summarise(results, out_dir / "runs")
    report = {"machine": _machine(results, machines), "seeds": seeds,
              "overrides": overrides or [], "budget": budget, "cells": results, "summary": summary}
    report["differences"] = dataset_differences(report, differences, out_dir / "runs")
    write_json(out_dir / f"{name}.json", report)
    write_text_atomic(out_dir / f"{name}.md", markdown_table(summary) + (
        "\n" + differences_table(report["differences"]) if report["differences"] else ""))
    return report


MACHINE_KIND_KEYS = ("device_name", "cpu_flags", "cpus", "torch")  # what tells two machines apart


def machine_kind(machine: dict) -> dict:
    """The part of a machine record (``machine_info``) that tells two machines apart."""
    return {k: machine.get(k) for k in MACHINE_KIND_KEYS}


def _machine(results: list[dict], recorded: list[dict | None]) -> dict:
    """Where the runs trained: the machine their ``metrics.json`` records (``recorded``, one per
    result) when they all name the same device and CPU, else this machine with the runs'
    training device (and ``run_machines``: each distinct one the runs record)."""
    kinds = {json.dumps(machine_kind(m), sort_keys=True) for m in recorded if m}
    if len(kinds) == 1 and all(recorded):
        return recorded[-1]
    devices = sorted({r["device"] for r in results})
    here = machine_info(torch.device("cuda" if "cuda" in devices and torch.cuda.is_available() else "cpu"))
    return {**here, "run_machines": [json.loads(k) for k in sorted(kinds)]} if kinds else here


def _check_finished_runs(jobs: list[tuple]) -> None:
    """A run finished before is reused only if it was trained with the config this command would
    train it with: one trained with another recipe (say another batch size, in the same
    ``--out``) is an error naming it and the keys, never a silent row of the table."""
    for cell, seed, run_dir, cfg in jobs:
        if not (_finished(run_dir) and (run_dir / CONFIG_FILE).is_file()):
            continue
        if diff := experiment.config_differences(cfg, run_dir):
            raise ValueError(f"{run_dir} ({cell.label} seed {seed}) finished with another config than this command's, "
                             f"in {len(diff)} key(s):\n  " + "\n  ".join(diff)
                             + "\n(report it with the command that trained it, or pass another --out)")


def _finished(run_dir: Path) -> bool:
    done = run_dir / "metrics.json"
    return done.exists() and "test" in json.loads(done.read_text())


def _train_one(cell: Cell, seed: int, run_dir: Path, cfg) -> float:
    """Train one (cell, seed) into ``run_dir``; the seconds it took."""
    t0 = time.time()
    if cell.fuxictr_e2e:
        # Imported here: FuxiCTR is an optional extra that only these cells need.
        from rankmixer.bench.fuxictr_e2e import train_e2e

        train_e2e(cfg, cell.fuxictr_e2e, run_dir, seed, json.loads(cell.fuxictr_params), log=lambda *_: None)
    else:
        # Its own run directory: continue a run that got as far as its config, else start over.
        resume = (run_dir / CONFIG_FILE).is_file()
        experiment.train(cfg, resume=resume, overwrite=not resume, log=lambda *_: None)
    return time.time() - t0


def _train_in_parallel(jobs: list[tuple], processes: int, log: Callable[[str], None]) -> None:
    """Train the unfinished jobs in ``processes`` worker processes, in order of the list (a
    many-core machine, or one GPU that a single small model leaves mostly idle). Each prepared
    data set is made first, once, so that no two workers prepare it at the same time; each
    worker gets ``cores // processes`` threads unless the config sets ``train.threads``. A
    failed run stops the benchmark (after the runs in flight end)."""
    todo = [j for j in jobs if not _finished(j[2])]
    log(f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; training {len(todo)} in {processes} processes")
    prepared = set()
    for _, _, _, cfg in todo:
        if cfg.data.prepared_path() not in prepared:
            experiment.prepare_data(cfg.data, log=log)
            prepared.add(cfg.data.prepared_path())
    threads = max(1, (os.cpu_count() or 1) // processes)
    todo = [(c, s, r, cfg if cfg.train.threads else cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"threads": threads})})) for c, s, r, cfg in todo]
    run_in_processes([(f"{job[0].label} seed {job[1]}", _train_one, job) for job in todo], processes, log)


def train_throughput(run_dir: Path) -> float | None:
    """Training samples/s of a run: the median over the trainer's logged windows
    (``metrics.jsonl``, ``split: train``), so a window that also held an evaluation or a
    checkpoint moves it little; None without such records (e.g. FuxiCTR's own pipeline)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rates = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        if rec.get("split") == "train" and rec.get("samples_per_s"):
            rates.append(float(rec["samples_per_s"]))
    return float(np.median(rates)) if rates else None


def summarise(results: list[dict], runs_dir: Path | None = None, stored: Sequence[dict] = ()) -> list[dict]:
    """One row per cell: mean and sample std over seeds of every test metric, of the validation
    AUC (``valid_auc``: the best step's, the one a selection by validation compares), and of the
    forward FLOPs per sample (constant over seeds for most models; a sparse MoE's count follows
    its routing, so it varies: ``flops_per_sample`` is the mean, ``flops_per_sample_std`` the
    spread, with ``_min`` / ``_max``; None where no run counted FLOPs).

    From the runs' saved test predictions (:func:`rankmixer.bench.intervals.run_predictions`): ``auc_ci_low`` /
    ``auc_ci_high``, the 95% bootstrap interval of the seed-mean test AUC (test rows resampled,
    the same draws for every seed; :data:`BOOTSTRAP`), and ``positives``, the test split's
    positives of the task the AUC reports. None where a run saved no predictions (older runs)
    or the seeds' test rows differ, unless ``stored`` (summary rows of an earlier report, e.g.
    a JSON a doc table reads) has them for the label."""
    stored_by_label = {r["label"]: r for r in stored if "label" in r}  # old reports lack labels
    rows = []
    for label in dict.fromkeys(r["label"] for r in results):
        group = [r for r in results if r["label"] == label]
        first = group[0]
        row = {k: first[k] for k in ("label", "config", "dataset", "model", "parameters", "dense_parameters")}
        row.update(_flops_over_seeds([r.get("flops_per_sample") for r in group]))
        row["seeds"] = len(group)
        rates = [r["train_samples_per_s"] for r in group if r.get("train_samples_per_s") is not None]
        row["train_samples_per_s"] = float(np.mean(rates)) if rates else None
        row["best_step_per_seed"] = [r.get("best_step") for r in group]
        row["steps_per_seed"] = [r.get("steps") for r in group]
        for m in METRICS:
            vals = np.array([r["test"].get(m, np.nan) for r in group], dtype=float)
            row[m] = float(np.mean(vals))
            row[m + "_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        valid = [(r.get("valid") or {}).get("auc") for r in group]  # what a selection by validation sees
        row["valid_auc"] = float(np.mean(valid)) if None not in valid else None
        row["valid_auc_std"] = float(np.std(valid, ddof=1)) if None not in valid and len(valid) > 1 else 0.0
        for m in ("auc", "ne"):  # progressive validation of streamed runs (None: not streamed)
            prog = [r["progressive"][m] for r in group if r.get("progressive")]
            row[f"progressive_{m}"] = float(np.mean(prog)) if len(prog) == len(group) else None
            row[f"progressive_{m}_std"] = float(np.std(prog, ddof=1)) if len(prog) == len(group) > 1 else None
        bayes = first.get("bayes") or {}
        row["bayes_auc"] = (bayes.get("test") or {}).get("auc")
        row.update(seed_mean_interval(group, runs_dir))
        if row["auc_ci_low"] is None and label in stored_by_label:
            row.update({k: stored_by_label[label].get(k) for k in INTERVAL_KEYS})
        rows.append(row)
    return rows


def _flops_over_seeds(values: list[float | None]) -> dict:
    counted = np.array([v for v in values if v is not None], dtype=float)
    if counted.size == 0:
        return {"flops_per_sample": None, "flops_per_sample_std": None,
                "flops_per_sample_min": None, "flops_per_sample_max": None}
    return {"flops_per_sample": float(counted.mean()),
            "flops_per_sample_std": float(counted.std(ddof=1)) if counted.size > 1 else 0.0,
            "flops_per_sample_min": float(counted.min()), "flops_per_sample_max": float(counted.max())}


def format_si(x: float | None) -> str:
    """``1234567 -> "1.23M"`` (k, M, G; "-" for None): the tables' count format."""
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def _flops_cell(row: dict) -> str:
    """Mean FLOPs/sample over seeds, with the spread where routing makes it vary."""
    std = row.get("flops_per_sample_std")
    return format_si(row.get("flops_per_sample")) + (f" ± {format_si(std)}" if std else "")


def _metric_cell(row: dict, m: str) -> str:
    """Mean ± sd over seeds; the value alone for one seed (no spread to show)."""
    return f"{row[m]:.4f} ± {row[m + '_std']:.4f}" if row["seeds"] > 1 else f"{row[m]:.4f}"


def _few_positives(row: dict) -> bool:
    return row.get("positives") is not None and row["positives"] < MIN_POSITIVES


def _auc_cell(row: dict) -> str:
    """Mean ± sd, marked † when the test split has too few positives to rank models."""
    return _metric_cell(row, "auc") + (" †" if _few_positives(row) else "")


def _ci_cell(row: dict) -> str:
    low, high = row.get("auc_ci_low"), row.get("auc_ci_high")
    return "-" if low is None or high is None else f"{low:.4f} – {high:.4f}"


def _steps_cell(row: dict) -> str:
    """Best step / steps trained, per seed."""
    pairs = zip(row.get("best_step_per_seed") or [], row.get("steps_per_seed") or [])
    return ", ".join(f"{b} / {s}" for b, s in pairs) or "-"


# name -> (header, Markdown alignment, cell of a summary row)
COLUMNS: dict[str, tuple[str, str, Callable[[dict], str]]] = {
    "dataset": ("dataset", "---", lambda r: r["dataset"]),
    "model": ("model", "---", lambda r: r["model"]),
    "label": ("label", "---", lambda r: r["label"]),
    "config": ("config", "---", lambda r: f"`{Path(r['config']).stem}`"),
    "params": ("params", "---:", lambda r: f"{r['parameters']:,}"),
    "dense": ("dense params", "---:", lambda r: "-" if r.get("dense_parameters") is None else f"{r['dense_parameters']:,}"),
    "flops": ("FLOPs/sample", "---:", _flops_cell),
    "seeds": ("seeds", "---:", lambda r: str(r["seeds"])),
    "auc": ("test AUC", "---", _auc_cell),
    "auc_ci": (f"AUC {BOOTSTRAP['level']:.0%} CI", "---", _ci_cell),
    "valid_auc": ("valid AUC", "---", lambda r: "-" if r.get("valid_auc") is None else _metric_cell(r, "valid_auc")),
    "positives": ("test positives", "---:", lambda r: "-" if r.get("positives") is None else f"{r['positives']:,}"),
    "gauc": ("test gAUC", "---", lambda r: _metric_cell(r, "gauc")),
    "logloss": ("test logloss", "---", lambda r: _metric_cell(r, "logloss")),
    "ne": ("NE", "---", lambda r: _metric_cell(r, "ne")),
    "steps": ("best step / steps (per seed)", "---", _steps_cell),
    "progressive_auc": ("progressive AUC (days after the first)", "---", lambda r: _progressive_cell(r, "auc")),
    "progressive_ne": ("progressive NE", "---", lambda r: _progressive_cell(r, "ne")),
    "sps": ("train samples/s", "---:", lambda r: "-" if r.get("train_samples_per_s") is None
            else f"{r['train_samples_per_s']:,.0f}"),
}
DEFAULT_COLUMNS = ("dataset", "model", "params", "dense", "flops", "seeds", "auc", "gauc", "logloss", "ne")


def _progressive_cell(row: dict, m: str) -> str:
    if row.get(f"progressive_{m}") is None:
        return "-"
    sd = row.get(f"progressive_{m}_std")
    return f"{row[f'progressive_{m}']:.4f}" + ("" if sd is None else f" ± {sd:.4f}")


def _bayes_cells(row: dict, columns: Sequence[str]) -> list[str]:
    """The planted model's row: its test AUC under the AUC column, its name in the first name
    column, "-" under the counts, blank under the other metrics."""
    name_col = next((c for c in columns if c in ("model", "label", "config")), None)
    cells = []
    for c in columns:
        if c == "dataset":
            cells.append(row["dataset"])
        elif c == name_col:
            cells.append("Bayes-optimal (planted model)")
        elif c == "auc":
            cells.append(f"{row['bayes_auc']:.4f}")
        elif c in ("gauc", "logloss", "ne"):
            cells.append("")
        else:
            cells.append("-")
    return cells


def markdown_table(rows: list[dict], columns: Sequence[str] | None = None, bayes: bool = True) -> str:
    """The summary rows as a Markdown table (``columns``: names of :data:`COLUMNS`; default
    :data:`DEFAULT_COLUMNS`, with the AUC interval after the AUC when some row has one), with
    the Bayes-optimal AUC after the last row of each dataset that knows it (the synthetic set),
    and a footnote when an AUC is marked † (fewer than ``MIN_POSITIVES`` test positives)."""
    if columns is None:
        columns = list(DEFAULT_COLUMNS)
        if any(r.get("auc_ci_low") is not None for r in rows):
            columns.insert(columns.index("auc") + 1, "auc_ci")
        if any(r.get("progressive_auc") is not None for r in rows):
            columns += ["progressive_auc", "progressive_ne"]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; expected some of {', '.join(COLUMNS)}")
    lines = ["| " + " | ".join(COLUMNS[c][0] for c in columns) + " |",
             "|" + "|".join(COLUMNS[c][1] for c in columns) + "|"]
    bayes_done = set()
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(COLUMNS[c][2](r) for c in columns) + " |")
        last_of_dataset = i == len(rows) - 1 or rows[i + 1]["dataset"] != r["dataset"]
        if bayes and r.get("bayes_auc") and last_of_dataset and r["dataset"] not in bayes_done:
            bayes_done.add(r["dataset"])
            lines.append("| " + " | ".join(_bayes_cells(r, columns)) + " |")
    if "auc" in columns and any(_few_positives(r) for r in rows):
        lines += ["", f"† fewer than {MIN_POSITIVES} test positives: the AUC's standard error is about "
                      "0.3 / sqrt(positives), so differences smaller than that do not rank models."]
    return "\n".join(lines) + "\n"


def seed_table(results: list[dict]) -> str:
    """One row per (cell, seed): best step / steps trained, test AUC, gAUC, logloss, and every
    task's AUC where a dataset has several tasks (``<task>/auc``)."""
    lines = ["| dataset | model | seed | best / steps | AUC | gAUC | logloss | per-task AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["test"]
        tasks = [k[:-len("/auc")] for k in t if k.endswith("/auc")]
        per_task = " / ".join(f"{k} {t[k + '/auc']:.4f}" for k in tasks) if len(tasks) > 1 else "-"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | {r['best_step']} / {r['steps']} | "
                     f"{t['auc']:.4f} | {t['gauc']:.4f} | {t['logloss']:.4f} | {per_task} |")
    return "\n".join(lines) + "\n"
