"""``rankmixer bench gts``: triplet and pair F1 of GTS and its baseline on the ASTE-Data-V2 test
sets, over seeds, beside the published numbers; and the effect of the inference rounds k.

A spec (``configs/bench/gts.yaml``) names the data directory, the datasets, the models (each a
set of ``model`` keys of the GTS config: tagger, encoder, ...), the rounds k run for the grid
models, optionally ``train`` keys for every run (none by default: the packaged recipe) and the
published scores to print beside. Every cell (dataset x model x k x seed) is one ``text
train-gts`` run with the packaged config plus the model's and the spec's keys, written as a model
directory under ``OUT/runs/``; a run whose directory is complete is not trained again, so an
interrupted benchmark resumes where it stopped. ``processes`` > 1 trains runs in that many
worker processes, each with ``cores // processes`` torch threads.

The report (``OUT/NAME.json``) holds the machine, the spec, every run's dev and test scores,
and one row per dataset x model x k: test triplet F1 and pair F1 (mean and sample standard
deviation over seeds), triplet precision and recall, dev triplet F1, epochs and training time.
The pair F1 of a triplet model ignores the predicted sentiment (the paper trains its pair
results on separate pair datasets; these are the triplet runs scored on pairs).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rankmixer.bench.accuracy import read_yaml_keys
from rankmixer.core.processes import run_in_processes
from rankmixer.config import ConfigError, config_path
from rankmixer.core.files import check_output, write_json, write_text_atomic
from rankmixer.core.hardware import machine_info
from rankmixer.text.artifact import FILES
from rankmixer.text.config import GTSConfig, ModelSection, TrainSection, default_config

__all__ = ["GTSCell", "load_gts_spec", "markdown_table", "run_gts_bench", "summarise"]

SPEC_KEYS = ("data_dir", "datasets", "models", "rounds", "train", "published")


@dataclass(frozen=True)
class GTSCell:
    """One training run: a dataset, a model (its name and ``model`` keys), k and a seed."""

    dataset: str
    model: str
    keys: tuple[tuple[str, object], ...]
    rounds: int | None  # None for a model without inference rounds (the BIO baseline)
    seed: int
    train: tuple[tuple[str, object], ...] = ()

    @property
    def run_name(self) -> str:
        k = f"-k{self.rounds}" if self.rounds is not None else ""
        return f"{self.dataset}-{self.model}{k}-seed{self.seed}"

    def config(self) -> GTSConfig:
        base = default_config()
        model = {**base.model.model_dump(), **dict(self.keys)}
        if self.rounds is not None:
            model["rounds"] = self.rounds
        train = {**base.train.model_dump(), **dict(self.train), "seed": self.seed}
        return GTSConfig.model_validate({"model": model, "train": train})


def load_gts_spec(path: Path | str) -> dict:
    """A validated spec (a file, or a packaged name such as ``gts``): every model's keys must
    be ``model`` keys of the GTS config and ``train`` keys its train keys; rounds are
    non-negative integers."""
    path = config_path(path, "bench", "GTS benchmark spec")
    spec = read_yaml_keys(path, "GTS benchmark spec", SPEC_KEYS)
    for key in ("data_dir", "datasets", "models", "rounds"):
        if key not in spec:
            raise ConfigError(f"GTS benchmark spec {path}: {key!r} is missing")
    if not isinstance(spec["datasets"], list) or not spec["datasets"]:
        raise ConfigError(f"GTS benchmark spec {path}: datasets must be a non-empty list")
    if not isinstance(spec["models"], dict) or not spec["models"]:
        raise ConfigError(f"GTS benchmark spec {path}: models must map names to model keys")
    for name, keys in spec["models"].items():
        try:
            ModelSection.model_validate(keys or {})
        except ValueError as e:
            raise ConfigError(f"GTS benchmark spec {path}: model {name!r}: {e}") from None
    try:
        TrainSection.model_validate(spec.setdefault("train", {}) or {})
    except ValueError as e:
        raise ConfigError(f"GTS benchmark spec {path}: train: {e}") from None
    if not isinstance(spec["rounds"], list) or not all(isinstance(k, int) and k >= 0 for k in spec["rounds"]):
        raise ConfigError(f"GTS benchmark spec {path}: rounds must be a list of integers >= 0")
    spec.setdefault("published", {})
    for model, source in spec["published"].items():
        if not isinstance(source, dict) or not isinstance(source.get("triplet_f1"), dict) or "data" not in source:
            raise ConfigError(f"GTS benchmark spec {path}: published {model!r} needs data (its data version) "
                              f"and triplet_f1 (dataset -> F1 in percent)")
    return spec


def cells(spec: dict, seeds: list[int], datasets: list[str] | None = None, models: list[str] | None = None,
          rounds: list[int] | None = None) -> list[GTSCell]:
    """The spec's runs, datasets outer, then models, k and seeds; ``datasets``/``models``
    select (unknown names are errors), ``rounds`` replaces the spec's k."""
    for given, known, what in ((datasets, spec["datasets"], "dataset"), (models, list(spec["models"]), "model")):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise ConfigError(f"unknown {what}(s) {', '.join(unknown)}; the spec has {', '.join(known)}")
    out = []
    for dataset in datasets or spec["datasets"]:
        for name in models or list(spec["models"]):
            keys = dict(spec["models"][name] or {})
            ks: list[int | None] = list(rounds if rounds is not None else spec["rounds"])
            if keys.get("tagger", "grid") != "grid":
                ks = [None]
            train = tuple(sorted((spec.get("train") or {}).items()))
            out += [GTSCell(dataset, name, tuple(sorted(keys.items())), k, s, train) for k in ks for s in seeds]
    return out


def _finished(run_dir: Path) -> bool:
    return (run_dir / FILES["metrics"]).is_file()


def _train(cell: GTSCell, data_dir: str, run_dir: Path, threads: int) -> float:
    """One run in this process (or a worker): train and write the model directory."""
    from rankmixer.text.train import train_gts

    torch.set_num_threads(threads)
    metrics = train_gts(cell.config(), Path(data_dir) / cell.dataset, run_dir, log=lambda _: None)
    return float(metrics["train_seconds"])


def run_gts_bench(
    spec_path: Path | str,
    seeds: list[int],
    out: Path,
    name: str = "gts",
    datasets: list[str] | None = None,
    models: list[str] | None = None,
    rounds: list[int] | None = None,
    processes: int = 1,
    report_only: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the unfinished runs (unless ``report_only``), then write and return the report.
    ``device`` replaces ``train.device`` (cpu, cuda, ...) for the runs trained now; where a run
    trained is recorded in its metrics."""
    spec = load_gts_spec(spec_path)
    if device is not None:
        spec["train"] = {**(spec.get("train") or {}), "device": device}
        TrainSection.model_validate(spec["train"])
    jobs = cells(spec, seeds, datasets, models, rounds)
    data_dirs = sorted({Path(spec["data_dir"]) / c.dataset for c in jobs})
    for data_dir in data_dirs:
        if not (data_dir / "train.json").is_file():
            raise FileNotFoundError(f"{data_dir}: no ASTE-Data-V2 train.json "
                                    f"(data_dir is relative to the working directory)")
    check_output(out, [config_path(spec_path, "bench", "GTS benchmark spec"), *data_dirs], "benchmark output")
    runs = out / "runs"
    todo = [c for c in jobs if not _finished(runs / c.run_name)]
    if report_only:
        if len(todo) == len(jobs):
            raise ValueError(f"no finished run in {runs} to report")
        if todo:
            log(f"reporting {len(jobs) - len(todo)} of {len(jobs)} runs; not finished: "
                f"{', '.join(c.run_name for c in todo)}")
        jobs = [c for c in jobs if c not in todo]
    elif todo and processes == 1:
        log(f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; training {len(todo)}")
        for n, c in enumerate(todo, start=1):
            seconds = _train(c, spec["data_dir"], runs / c.run_name, torch.get_num_threads())
            log(f"[{n}/{len(todo)}] {c.run_name}: finished in {seconds:.0f}s")
    elif todo:
        threads = max(1, (os.cpu_count() or 1) // processes)
        log(f"{len(jobs) - len(todo)} of {len(jobs)} runs done before; training {len(todo)} "
            f"in {processes} processes of {threads} thread(s)")
        run_in_processes([(c.run_name, _train, (c, spec["data_dir"], runs / c.run_name, threads)) for c in todo],
                         processes, log)
    results = []
    for c in jobs:
        m = json.loads((runs / c.run_name / FILES["metrics"]).read_text())
        results.append({"dataset": c.dataset, "model": c.model, "rounds": c.rounds, "seed": c.seed,
                        "run": c.run_name, "device": m["device"], "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
                        "train_seconds": m["train_seconds"],
                        "dev": {k: m["dev"][k] for k in ("triplet", "pair", "aspect", "opinion")},
                        "test": {k: m["test"][k] for k in ("triplet", "pair", "aspect", "opinion")}})
    report = {"machine": machine_info(torch.device(device) if device else None), "spec": {k: spec[k] for k in SPEC_KEYS}, "seeds": seeds,
              "runs": results, "rows": summarise(results, spec["published"])}
    write_json(out / f"{name}.json", report)
    write_text_atomic(out / f"{name}.md", markdown_table(report) + "\n")
    return report


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(results: list[dict], published: dict | None = None) -> list[dict]:
    """One row per dataset x model x k, in the order first seen: the test scores' mean and
    sample standard deviation over the seeds, and the published triplet F1 for that model and
    dataset where the spec gives one (``published[model]``: ``data``, the data version it was
    measured on, and ``triplet_f1[dataset]`` in percent)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["model"], r["rounds"]), []).append(r)
    rows = []
    for (dataset, model, rounds), rs in groups.items():
        row: dict = {"dataset": dataset, "model": model, "rounds": rounds, "seeds": len(rs)}
        for split, score in (("test", "triplet"), ("test", "pair"), ("dev", "triplet")):
            mean, sd = _mean_sd([r[split][score]["f1"] for r in rs])
            row[f"{split}_{score}_f1"], row[f"{split}_{score}_f1_sd"] = mean, sd
        row["test_triplet_precision"] = statistics.fmean(r["test"]["triplet"]["precision"] for r in rs)
        row["test_triplet_recall"] = statistics.fmean(r["test"]["triplet"]["recall"] for r in rs)
        row["epochs"] = statistics.fmean(r["epochs_run"] for r in rs)
        row["train_seconds"] = statistics.fmean(r["train_seconds"] for r in rs)
        source = (published or {}).get(model) or {}
        row["published_triplet_f1"] = (source.get("triplet_f1") or {}).get(dataset)
        row["published_data"] = source.get("data")
        rows.append(row)
    return rows


def _pct(mean: float, sd: float | None) -> str:
    return f"{100 * mean:.2f} ± {100 * sd:.2f}" if sd is not None else f"{100 * mean:.2f}"


def markdown_table(report: dict, datasets: list[str] | None = None, models: list[str] | None = None) -> str:
    """The report's rows as Markdown: F1 in percent (mean ± sd over seeds), the published
    triplet F1 and its data version beside (— where the spec has none), then the published
    models that were not run."""
    lines = ["| dataset | model | k | seeds | triplet F1 (test) | P | R | pair F1 (test) | dev triplet F1 "
             "| epochs | published triplet F1 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        if (datasets and r["dataset"] not in datasets) or (models and r["model"] not in models):
            continue
        published = r["published_triplet_f1"]
        published_cell = "—" if published is None else f"{published:.2f} ({r['published_data']})"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {'—' if r['rounds'] is None else r['rounds']} | {r['seeds']} "
            f"| {_pct(r['test_triplet_f1'], r['test_triplet_f1_sd'])} | {100 * r['test_triplet_precision']:.2f} "
            f"| {100 * r['test_triplet_recall']:.2f} | {_pct(r['test_pair_f1'], r['test_pair_f1_sd'])} "
            f"| {_pct(r['dev_triplet_f1'], r['dev_triplet_f1_sd'])} | {r['epochs']:.0f} "
            f"| {published_cell} |")
    run = {r["model"] for r in report["rows"]}
    for model, source in report["spec"]["published"].items():
        if model in run or (models and model not in models):
            continue
        for dataset, f1 in source["triplet_f1"].items():
            if not datasets or dataset in datasets:
                lines.append(f"| {dataset} | {model} (published only) | | | | | | | | | {f1:.2f} ({source['data']}) |")
    return "\n".join(lines)
