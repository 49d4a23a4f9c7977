"""The ``rankmixer`` command line. Thin: every command calls a library function."""

from __future__ import annotations

import os

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, evaluate and serve ranking models.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print a table and write JSON.")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
console = Console()

# Errors a user can fix get one clear line, not a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def _fail(e: Exception) -> None:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _metrics_table(title: str, rows: dict[str, dict], keys=("auc", "gauc", "logloss", "ne", "calibration")) -> Table:
    table = Table(title=title)
    table.add_column("split")
    present = [k for k in keys if any(k in r for r in rows.values())]
    for k in present:
        table.add_column(k, justify="right")
    for name, r in rows.items():
        table.add_row(name, *(f"{r[k]:.4f}" if k in r and r[k] == r[k] else "-" for k in present))
    return table


@app.command()
def quickstart(
    rows: int = typer.Option(300_000, help="Training rows of the synthetic set."),
    model: str = typer.Option("dcnv2", help="Model to train (see `rankmixer models`)."),
    run_dir: Path = typer.Option(Path("runs/quickstart"), help="Run directory."),
    epochs: int = typer.Option(2, help="Training epochs."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: all cores)."),
) -> None:
    """Generate the built-in synthetic set, train a small model, evaluate, print metrics."""
    from rankmixer import experiment
    from rankmixer.config import load_config

    overrides = [
        "data.dataset=synthetic",
        f"data.preset_options={{rows_train: {rows}, rows_valid: {max(rows // 10, 1000)}, rows_test: {max(rows // 10, 1000)}}}",
        f"data.prepared_dir=data_cache/synthetic-{rows}",
        f"model.name={model}",
        f"run_dir={run_dir}",
        f"train.epochs={epochs}",
        "train.batch_size=2048",
        "train.dense_optimizer={name: adamw, lr: 0.001}",
        "train.sparse_optimizer={name: adagrad, lr: 0.05}",
        "train.sparse_gradients=true",
        "train.checkpoint_every_steps=200",
    ] + ([f"train.threads={threads}"] if threads else [])
    try:
        cfg = load_config(None, overrides)
        result = experiment.train(cfg, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    bayes = result.get("bayes") or {}
    table = _metrics_table(f"{model} on synthetic ({rows:,} train rows)", {"valid": result["valid"], "test": result["test"]})
    console.print(table)
    if bayes:
        t = Table(title="model vs Bayes-optimal (the planted model's own probabilities)")
        for c in ("split", "model AUC", "Bayes AUC", "model logloss", "Bayes logloss"):
            t.add_column(c, justify="right")
        for split in ("valid", "test"):
            b = bayes.get(split, {})
            m = result[split]
            t.add_row(split, f"{m['auc']:.4f}", f"{b.get('auc', float('nan')):.4f}",
                      f"{m['logloss']:.4f}", f"{b.get('logloss', float('nan')):.4f}")
        console.print(t)
    console.print(f"run directory: {run_dir}")


@data_app.command("prepare")
def data_prepare(
    dataset: Optional[str] = typer.Option(None, help="Preset name (see `rankmixer data presets`)."),
    schema: Optional[Path] = typer.Option(None, help="Schema YAML for your own data."),
    raw: Optional[Path] = typer.Option(None, help="Raw file or directory."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default data_cache/<name>)."),
    on_bad_row: str = typer.Option("fail", help="fail: stop at the first bad row; skip: skip and count."),
    option: List[str] = typer.Option([], "--option", "-o", help="Preset option key=value (repeatable)."),
    force: bool = typer.Option(False, help="Prepare again even if the output is up to date."),
) -> None:
    """Raw CSV/TSV/Parquet -> Parquet shards + feature map."""
    import yaml

    from rankmixer.data.config import DataConfig
    from rankmixer.experiment import prepare_data

    try:
        opts = {}
        for item in option:
            if "=" not in item:
                raise ValueError(f"--option {item!r} must look like key=value")
            k, v = item.split("=", 1)
            opts[k] = yaml.safe_load(v)
        data = DataConfig(dataset=None if schema else (dataset or "synthetic"), schema_file=str(schema) if schema else None,
                          raw=str(raw) if raw else None, prepared_dir=str(out) if out else None,
                          on_bad_row=on_bad_row, preset_options=opts)
        fm = prepare_data(data, log=console.print, force=force)
    except _USER_ERRORS as e:
        _fail(e)
    table = Table(title=f"prepared {fm.dataset} in {fm.root}")
    for c in ("split", "rows", "label means"):
        table.add_column(c)
    for name, s in fm.splits.items():
        table.add_row(name, f"{s.rows:,}", ", ".join(f"{m:.4f}" for m in s.label_means))
    console.print(table)
    bad = fm.report.get("bad_rows", {})
    if bad.get("rows_skipped"):
        console.print(f"skipped {bad['rows_skipped']:,} of {bad['rows_read']:,} rows: {bad['by_reason']}")
    console.print(f"features: {len(fm.features)} ({len(fm.sparse)} sparse, {len(fm.dense)} dense, "
                  f"{len(fm.bags)} bags, {len(fm.sequences)} sequences)")


@data_app.command("presets")
def data_presets() -> None:
    """List dataset presets."""
    from rankmixer.data.datasets.base import available_presets, get_preset

    table = Table(title="dataset presets")
    table.add_column("name")
    table.add_column("description")
    for name in available_presets():
        table.add_row(name, get_preset(name).description)
    console.print(table)


@data_app.command("download")
def data_download(dataset: str, dest: Path = typer.Option(Path("data_raw"), help="Where to put the files.")) -> None:
    """Download a preset's official files (where a public URL exists) and verify checksums."""
    from rankmixer.data.datasets.base import get_preset

    try:
        path = get_preset(dataset).download(dest / dataset)
    except (RuntimeError, *_USER_ERRORS) as e:
        _fail(e)
    console.print(f"downloaded to {path}")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=3"),
    resume: bool = typer.Option(False, help="Continue from the run directory's last checkpoint."),
    on_bad_row: Optional[str] = typer.Option(None, help="Override data.on_bad_row (fail|skip)."),
) -> None:
    """Train a model from a config file."""
    from rankmixer import experiment
    from rankmixer.config import load_config

    try:
        extra = [f"data.on_bad_row={on_bad_row}"] if on_bad_row else []
        cfg = load_config(config, list(overrides or []) + extra)
        result = experiment.train(cfg, resume=resume, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        console.print(_metrics_table(f"{cfg.model_name} (best step {result['best_step']})",
                                     {"valid": result["valid"], "test": result["test"]}))


@app.command()
def evaluate(run: Path = typer.Option(..., "--run", help="Run directory."),
             split: List[str] = typer.Option(["valid", "test"], help="Splits to evaluate.")) -> None:
    """Evaluate a run's best model."""
    from rankmixer import experiment

    try:
        res = experiment.evaluate(run, tuple(split), log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(_metrics_table(f"evaluation of {run}", res))
    print(json.dumps(res))


@app.command()
def predict(
    run: Path = typer.Option(..., "--run"),
    input: Path = typer.Option(..., "--input", help="Raw rows (the dataset's source format) or a prepared Parquet file."),
    output: Path = typer.Option(..., "--output", help="Output .parquet or .csv"),
    batch_size: int = typer.Option(8192),
    input_format: str = typer.Option("auto", help="auto | raw | prepared"),
    on_bad_row: str = typer.Option("fail", help="fail | skip (raw input)"),
) -> None:
    """Batch scoring to Parquet or CSV."""
    from rankmixer import experiment

    try:
        n = experiment.predict(run, input, output, batch_size, input_format, on_bad_row)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(f"scored {n:,} rows -> {output}")


@app.command("calibrate-exit")
def calibrate_exit(
    run: Path = typer.Option(..., "--run", help="Run directory of a RankMixer trained with model.early_exit."),
    split: str = typer.Option("valid", help="Split to calibrate on."),
    max_auc_loss: float = typer.Option(0.001, help="Largest AUC loss allowed relative to the full model."),
    points: int = typer.Option(20, help="Shared-threshold grid points (quantiles of the exits' confidences)."),
    batch_size: int = typer.Option(4096, help="Rows per batch (logits and latency)."),
    latency_batches: int = typer.Option(10, help="Batches timed per setting."),
    latency_points: int = typer.Option(8, help="Curve points timed (plus the full model and the chosen one)."),
    repeats: int = typer.Option(3, help="Timing repeats (median)."),
    max_rows: Optional[int] = typer.Option(None, help="Use only the first N rows of the split."),
    check_split: str = typer.Option("test", help="Also evaluate every setting on this split ('none': skip)."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: torch's)."),
) -> None:
    """Pick early-exit thresholds for a target AUC loss; print the latency/AUC trade-off curve.
    Writes early_exit.json (thresholds) and early_exit_curve.json into the run directory."""
    import torch

    from rankmixer.early_exit import calibrate_run

    if threads:
        torch.set_num_threads(threads)
    try:
        rep = calibrate_run(run, split, max_auc_loss, points, batch_size, latency_batches, latency_points,
                            repeats, max_rows, None if check_split == "none" else check_split, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    n_exits = len(rep["curve"][0]["exit_share"])
    table = Table(title=f"early exit on {rep['split']} ({rep['rows']:,} rows, task {rep['task']}): "
                        f"full-model AUC {rep['auc_full']:.5f}")
    for c in ["threshold |logit|", "max(p,1-p) >=", *[f"exit {i + 1}" for i in range(n_exits)],
              "AUC", "AUC loss", "logloss", "FLOPs/sample", "FLOPs ratio", "ms/batch (median)", "ms/batch (min)",
              "latency ratio (min)"] + ([f"{rep['check_split']} AUC loss"] if rep["check_split"] else []):
        table.add_column(c, justify="right")
    for k, p in enumerate(rep["curve"]):
        mark = " *" if k == rep["chosen_index"] else ""
        table.add_row(
            "inf (full)" if p["threshold"] is None else f"{p['threshold']:.3f}{mark}",
            "-" if p["min_confidence_prob"] is None else f"{p['min_confidence_prob']:.3f}",
            *[f"{s:.1%}" for s in p["exit_share"]],
            f"{p['auc']:.5f}", f"{p['auc_loss']:+.5f}", f"{p['logloss']:.5f}",
            f"{p['flops_per_sample']:,.0f}", f"{p['flops_ratio']:.3f}",
            f"{p['ms_per_batch']:.2f}" if "ms_per_batch" in p else "-",
            f"{p['ms_per_batch_min']:.2f}" if "ms_per_batch" in p else "-",
            f"{p['latency_ratio_min']:.3f}" if "ms_per_batch" in p else "-",
            *([f"{p['check']['auc_loss']:+.5f}"] if "check" in p else []),
        )
    console.print(table)
    console.print("each exit alone on every row, AUC: " + ", ".join(
        f"exit {i + 1} {a:.5f}" for i, a in enumerate(rep["exit_auc"])))
    ch = rep["curve"][rep["chosen_index"]]
    console.print(f"chosen (*): thresholds {ch['thresholds']}, AUC loss {ch['auc_loss']:+.5f} "
                  f"(target <= {rep['max_auc_loss']}), FLOPs ratio {ch['flops_ratio']:.3f}"
                  + (f", latency ratio (min) {ch['latency_ratio_min']:.3f}" if "latency_ratio" in ch else ""))
    if "check" in ch:
        console.print(f"the chosen setting on {rep['check_split']} ({rep['check_rows']:,} rows): AUC {ch['check']['auc']:.5f} "
                      f"vs full {rep['check_auc_full']:.5f} (loss {ch['check']['auc_loss']:+.5f}), "
                      f"exit shares {', '.join(f'{s:.1%}' for s in ch['check']['exit_share'])}")
    console.print(f"wrote {rep['thresholds_file']} and the curve next to it")


@app.command()
def models(
    describe: Optional[str] = typer.Option(
        None, "--describe", help="Print a model's config, parameter count and FLOPs/sample (built on the meta device)."),
    feature_map: Optional[Path] = typer.Option(
        None, "--feature-map", help="With --describe: a prepared feature map (file or directory) to count the "
        "embedding, tokenizer and heads too; without it only the backbone is counted."),
    option: List[str] = typer.Option([], "--option", "-o", help="With --describe: config override key=value (repeatable)."),
) -> None:
    """List registered models and variants, or describe one (--describe NAME)."""
    from rankmixer.models import registry

    if describe is None:
        table = Table(title="models")
        table.add_column("name")
        table.add_column("summary")
        table.add_column("config fields")
        for name, entry in registry.available().items():
            fields = ", ".join(entry.config_cls.model_fields)
            if entry.base is not None:
                fields = f"variant of {entry.base}: " + ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
            table.add_row(name, entry.summary, fields)
        console.print(table)
        return
    try:
        _describe_model(describe, feature_map, option)
    except _USER_ERRORS as e:
        _fail(e)


def _describe_model(name: str, feature_map: Optional[Path], option: List[str]) -> None:
    import torch
    import yaml

    from rankmixer.data.feature_map import FeatureMap
    from rankmixer.models import registry
    from rankmixer.models.rankmixer import RankMixerConfig, describe

    overrides = {}
    for item in option:
        if "=" not in item:
            raise ValueError(f"--option {item!r} must look like key=value")
        k, v = item.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    fm = FeatureMap.load(feature_map) if feature_map is not None else None
    cfg = registry.parse_config(name, overrides)
    console.print(f"[bold]{name}[/] ({registry.get(name).summary})", highlight=False)
    cfg_table = Table(title="config")
    cfg_table.add_column("field")
    cfg_table.add_column("value")
    for k, v in cfg.model_dump(mode="json").items():
        cfg_table.add_row(k, json.dumps(v))
    console.print(cfg_table)

    def human(n: float) -> str:
        for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(n) >= div:
                return f"{n / div:.2f}{unit}"
        return str(int(n))

    if not isinstance(cfg, RankMixerConfig):
        if fm is None:
            console.print("parameter count: give --feature-map to build this model on the meta device")
            return
        with torch.device("meta"):
            model = registry.build_model(name, fm, cfg)
        n = sum(p.numel() for p in model.parameters())
        console.print(f"parameters: {n:,} ({human(n)})")
        return
    info = describe(name, overrides, fm)
    p, f = info["params"], info["flops"]
    t = Table(title="parameters" + ("" if fm else " (backbone only; --feature-map for the rest)"))
    t.add_column("part")
    t.add_column("count", justify="right")
    t.add_column("", justify="right")
    parts = ["embedding", "sequence_pooling", "tokenizer", "blocks", "heads", "dense", "total"] if fm else ["blocks"]
    for k in parts:
        t.add_row("blocks (dense backbone)" if k == "blocks" else k, f"{p[k]:,}", human(p[k]))
    t.add_row("paper 2kLTD^2", f"{p['paper_estimate']:,}", human(p["paper_estimate"]))
    console.print(t)
    t = Table(title="FLOPs per sample (matmul, 2 per multiply-add)")
    t.add_column("part")
    t.add_column("FLOPs", justify="right")
    t.add_column("", justify="right")
    keys = ["sequence_pooling", "tokenizer", "blocks", "heads", "forward"] if fm else ["blocks"]
    if "blocks_active" in f:
        keys += ["blocks_active"] + (["forward_active"] if fm else [])
    for k in keys:
        t.add_row(k + (" (forward)" if k == "blocks" else ""), f"{f[k]:,}", human(f[k]))
    train = f["train"] if fm else 3 * f["blocks"]
    t.add_row("training step (~3x forward)", f"{train:,}", human(train))
    t.add_row("paper 4kLTD^2", f"{f['paper_estimate']:,}", human(f["paper_estimate"]))
    console.print(t)
    console.print(f"built on the meta device: {info['meta_module_params']:,} parameters (matches the count)")


@bench_app.command("loader")
def bench_loader(
    dataset: str = typer.Option("synthetic"),
    prepared: Optional[Path] = typer.Option(None, help="Prepared directory (default: prepare the preset)."),
    batch_size: int = typer.Option(4096),
    workers: List[int] = typer.Option([0, 1, 2]),
    max_batches: int = typer.Option(200),
    json_out: Path = typer.Option(Path("bench_loader.json")),
) -> None:
    """Samples/s of the streaming loader alone (no model)."""
    from rankmixer.bench.loader import run_loader_bench

    try:
        rows = run_loader_bench(dataset, prepared, batch_size, workers, max_batches, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    table = Table(title=f"loader throughput, batch {batch_size}")
    for c in ("workers", "batches", "samples/s"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), str(r["batches"]), f"{r['samples_per_s']:,.0f}")
    console.print(table)
    json_out.write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {json_out}")


@bench_app.command("distributed")
def bench_distributed(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML to train."),
    procs: List[int] = typer.Option([1, 2], help="Process counts to compare."),
    embeddings: List[str] = typer.Option(["ddp", "torchrec"], help="Embedding modes for N > 1."),
    max_steps: int = typer.Option(300),
    log_every: int = typer.Option(25),
    out: Path = typer.Option(Path("bench_out/distributed"), help="Run directories and JSON go here."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides for every case"),
) -> None:
    """Training samples/s of 1 vs N processes under torchrun (same config, same global batch)."""
    from rankmixer.bench.distributed import run_distributed_bench

    try:
        rows = run_distributed_bench(config, procs, embeddings, max_steps, log_every, out,
                                     overrides=list(overrides or []), log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    table = Table(title=f"training throughput, {config.name}, {max_steps} steps, {rows[0]['cores']} cores")
    for c in ("procs", "embeddings", "threads", "samples/s", "vs 1 proc", "valid auc", "wall s", "load"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(str(r["processes"]), r["embeddings"], str(r["threads_per_process"]), f"{r['samples_per_s']:,.0f}",
                      str(r["speedup_vs_1"]), f"{r['valid_auc']:.4f}", str(r["wall_s"]), str(r["load_avg_before"]))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {out / 'distributed.json'}")


@bench_app.command("accuracy")
def bench_accuracy(
    config: List[Path] = typer.Option([], "--config", "-c", help="Experiment YAML (repeatable): one table row each."),
    suite: Optional[Path] = typer.Option(None, help="Suite YAML crossing datasets with models (see docs/benchmarks.md). "
                                         "Default with --models/--datasets: configs/bench/peers.yaml."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model labels of the suite to run (default: all)."),
    datasets: Optional[str] = typer.Option(None, help="Comma-separated dataset names of the suite to run (default: all)."),
    budget: Optional[str] = typer.Option(None, help="Same budget for every cell: epochs=N, steps=N or samples=N "
                                         "(default: each config's own epochs)."),
    seeds: int = typer.Option(3, help="Seeds per config (0 .. seeds-1)."),
    out: Path = typer.Option(Path("bench_out/accuracy"), help="Output directory (runs, JSON, Markdown)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every config."),
) -> None:
    """Train each config with several seeds; table of test metrics (mean ± std). Resumable."""
    from rankmixer.bench.accuracy import cells_from_configs, load_suite, markdown_table, run_accuracy, select

    def _names(s: str | None) -> list[str] | None:
        return [x.strip() for x in s.split(",") if x.strip()] if s else None

    try:
        if suite is None and (models or datasets):
            suite = Path("configs/bench/peers.yaml")
        cells = cells_from_configs(list(config)) + (select(load_suite(suite), _names(datasets), _names(models)) if suite else [])
        if not cells:
            raise ValueError("give --config/-c files or a --suite (or --models/--datasets)")
        name = suite.stem if suite and not config else "accuracy"
        report = run_accuracy(cells, list(range(seeds)), out, list(overrides or []), log=console.print, name=name,
                              budget=budget)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(markdown_table(report["summary"]), markup=False)
    console.print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


@bench_app.command("scaling")
def bench_scaling(
    spec: Path = typer.Option(Path("configs/bench/scaling.yaml"), help="Scaling spec YAML: dataset, budget, families."),
    seeds: int = typer.Option(1, help="Seeds per point (0 .. seeds-1)."),
    budget: Optional[str] = typer.Option(None, help="Replace the spec's budget: epochs=N, steps=N or samples=N."),
    out: Path = typer.Option(Path("bench_out/scaling"), help="Output directory (runs, JSON, Markdown, PNG)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every run."),
) -> None:
    """Test AUC against dense parameters and FLOPs per sample, per model family. Resumable."""
    from rankmixer.bench.scaling import run_scaling

    try:
        run_scaling(spec, list(range(seeds)), out, list(overrides or []), log=console.print, budget=budget)
    except _USER_ERRORS as e:
        _fail(e)
    console.print((out / "scaling.md").read_text(), markup=False)
    console.print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'} and {out / 'scaling.png'}")


@bench_app.command("moe")
def bench_moe(
    tokens: int = typer.Option(16, "--tokens", "-T", help="T: tokens."),
    dim: int = typer.Option(256, "--dim", "-D", help="D: token width."),
    expansion: float = typer.Option(4, "--expansion", "-k", help="k: expert hidden width = k * D."),
    experts: List[int] = typer.Option([4, 8], help="Experts per token (repeatable)."),
    ratios: List[float] = typer.Option([0.5, 0.25, 0.125], help="Active-expert ratios (repeatable)."),
    skews: List[float] = typer.Option([0.0], help="Expert imbalance (0 = balanced; repeatable)."),
    impls: List[str] = typer.Option(["loop", "padded"], help="Sparse implementations (repeatable)."),
    batch_size: int = typer.Option(512),
    repeats: int = typer.Option(5, help="Interleaved timing rounds."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: as set)."),
    json_out: Path = typer.Option(Path("bench_moe.json")),
) -> None:
    """Sparse vs dense inference of the per-token MoE FFN (same weights, same inputs)."""
    from rankmixer.bench.moe import run_moe_bench

    try:
        report = run_moe_bench(T=tokens, D=dim, k=expansion, experts=experts, ratios=ratios, skews=skews,
                               impls=impls, batch_size=batch_size, repeats=repeats, threads=threads,
                               out=json_out, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(f"wrote {json_out} ({len(report['rows'])} rows)")


@app.command()
def export(
    run: Path = typer.Option(..., "--run", help="Run directory (its best model)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript | pt2 | eager (MoE: eager)."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (replaced if it exists)."),
    version: Optional[str] = typer.Option(None, help="Model version (default: run name + weights hash)."),
) -> None:
    """Export a run as a self-contained serving artifact (graph, vocabularies, manifest)."""
    from rankmixer.serve.export import export_run

    try:
        export_run(run, format, out, version=version, log=console.print)
    except _USER_ERRORS as e:
        _fail(e)


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="Artifact directory (rankmixer export)."),
    port: int = typer.Option(8000, help="TCP port."),
    host: str = typer.Option("127.0.0.1", help="Interface (0.0.0.0 for all)."),
    max_batch_rows: int = typer.Option(1024, help="Rows per model call."),
    max_wait_ms: float = typer.Option(2.0, help="Micro-batching wait after the first queued request."),
    max_candidates: int = typer.Option(1000, help="Rows one request may carry."),
    max_body_bytes: int = typer.Option(4 << 20, help="Request body limit."),
    threads: Optional[int] = typer.Option(None, help="Model threads."),
) -> None:
    """Serve an artifact over HTTP (POST /v1/score; /healthz, /readyz, /metrics, /docs)."""
    try:
        from rankmixer.serve.server import ServeSettings, serve as run_server
    except ImportError as e:
        _fail(ValueError(f"serving needs the serve extra ({e}): pip install -c constraints/cpu.txt -e '.[serve]'"))
    settings = ServeSettings(max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms, max_candidates=max_candidates,
                             max_body_bytes=max_body_bytes, threads=threads)
    console.print(f"serving {model} on http://{host}:{port} (docs at /docs)")
    run_server(str(model), host, port, settings)


@bench_app.command("serve")
def bench_serve(
    model: Path = typer.Option(..., "--model", help="Artifact directory (decodes real rows; served here unless --url)."),
    url: Optional[str] = typer.Option(None, help="A running server of that artifact (default: start one)."),
    prepared: Path = typer.Option(Path("data_cache/movielens-latest"), help="Prepared data: request rows come from its test split."),
    concurrency: List[int] = typer.Option([1, 8, 32, 128], help="Concurrent clients (repeatable)."),
    requests: int = typer.Option(2000, help="Requests per level at most."),
    duration: float = typer.Option(20.0, help="Seconds per level at most."),
    candidates: int = typer.Option(32, help="Candidates (rows) per request at most (one user's)."),
    server_threads: Optional[int] = typer.Option(None, help="Model threads of the started server."),
    json_out: Path = typer.Option(Path("bench_out/serve.json"), help="Where to write the JSON report."),
) -> None:
    """Load-test the scoring server on loopback: QPS, p50/p95/p99 latency, error rate."""
    from rankmixer.bench.serve import run_serve_bench

    try:
        report = run_serve_bench(model=model, url=url, prepared=prepared, concurrency=list(concurrency),
                                 requests=requests, duration=duration, candidates=candidates,
                                 server_args=["--threads", str(server_threads)] if server_threads else None,
                                 log=console.print)
    except (RuntimeError, *_USER_ERRORS) as e:
        _fail(e)
    table = Table(title=f"serve {report['model']} ({report['format']}), {candidates} candidates/request")
    for c in ("clients", "reqs", "QPS", "rows/s", "p50 ms", "p95 ms", "p99 ms", "err", "rows/call", "load"):
        table.add_column(c, justify="right")
    for r in report["levels"]:
        rows = f"{r['mean_batch_rows']:.0f}" if r.get("mean_batch_rows") else "-"
        table.add_row(str(r["concurrency"]), str(r["requests"]), f"{r['qps']:.1f}", f"{r['rows_per_s']:,.0f}",
                      f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['error_rate']:.1%}",
                      rows, f"{r['load_average_1m']:.1f}")
    console.print(table)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {json_out}")


def _shape(text: str) -> tuple[int, int, int]:
    """``--peak-shape 512x768x3072``: (M, K, N)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--peak-shape {text!r}: expected MxKxN, e.g. 512x768x3072")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _ints(values: List[str]) -> list[int]:
    """``--batch-sizes 512,64`` or repeated ``--batch-sizes``: ints."""
    return [int(v) for item in values for v in item.split(",") if v.strip()]


@bench_app.command("speed")
def bench_speed(
    model: str = typer.Option("rankmixer-100m", help="A registered RankMixer model or variant."),
    set_: List[str] = typer.Option([], "--set", help="Model config override key=value (repeatable), e.g. expansion=4."),
    batch_sizes: List[str] = typer.Option(["512"], help="Inference batch sizes (comma-separated or repeated)."),
    train_batch: Optional[int] = typer.Option(None, help="Training batch (default: the first batch size)."),
    precision: List[str] = typer.Option([], help="fp32 | bf16 | fp16 (repeatable). Default: fp32, and bf16 where "
                                        "the device runs it natively (not emulated)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    threads: Optional[int] = typer.Option(None, help="torch intra-op threads."),
    rounds: int = typer.Option(3, min=1, help="Interleaved rounds."),
    optimizer: str = typer.Option("adamw", help="Dense optimizer (the trainer's names, e.g. adamw, rmsprop)."),
    baseline: bool = typer.Option(True, help="Time the public-style per-token loop baseline alongside."),
    ablations: bool = typer.Option(True, help="Time the 'before' of each speed change alongside."),
    compile_mode: Optional[str] = typer.Option(None, "--compile", help="torch.compile mode: default | reduce-overhead | max-autotune."),
    dcn: bool = typer.Option(True, help="Our DCNv2 vs FuxiCTR's (skipped with a note without fuxictr)."),
    dcn_vocab: int = typer.Option(10_000, help="DCNv2 comparison: vocabulary per field."),
    moe: bool = typer.Option(True, help="Sparse vs dense MoE inference (bench/moe.py) at ratio 1/4."),
    profile: bool = typer.Option(False, help="torch.profiler over one training step and one inference call."),
    inference_copy: bool = typer.Option(True, help="Time inference on a copy of the model (off: on the trained one, half the memory)."),
    peak_shape: List[str] = typer.Option([], help="Matmul peak shape MxKxN (repeatable). Default: 2048^3 (CUDA "
                                         "8192^3) and the model's own FFN matmul."),
    json_out: Path = typer.Option(Path("bench_out/speed.json"), "--json", help="Where to write the JSON report."),
) -> None:
    """Throughput, MFU vs the measured matmul peak, latency and memory of RankMixer; peers side by side."""
    from rankmixer.bench.speed import run_speed_bench
    from rankmixer.config import ConfigError, apply_overrides

    try:
        overrides = apply_overrides({}, list(set_))
        shapes = [_shape(s) for s in peak_shape] or None
        run_speed_bench(model, overrides, _ints(batch_sizes), train_batch, list(precision) or None, device, threads,
                        rounds, optimizer, baseline, ablations, compile_mode, peak_shapes=shapes, dcn=dcn,
                        dcn_options={"vocab_size": dcn_vocab},
                        moe_bench=moe, profile=profile, inference_copy=inference_copy, out=json_out, log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True))
    except (*_USER_ERRORS, ConfigError) as e:
        _fail(e)


def main() -> None:  # pragma: no cover
    sys.exit(app())
