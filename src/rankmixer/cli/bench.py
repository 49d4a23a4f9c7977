"""``bench`` commands: each runs a benchmark of ``rankmixer.bench``, prints its table and writes
JSON. Suites and specs are packaged names (``peers``, ``scaling``) or YAML files."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, user_errors
from rankmixer.core.files import check_output, write_json

__all__ = ["accuracy", "distributed", "gts", "loader", "moe", "scaling", "sequence_length", "serve", "speed", "tables"]


def loader(
    dataset: str = typer.Option("synthetic"),
    prepared: Optional[Path] = typer.Option(None, help="Prepared directory (default: prepare the preset)."),
    batch_size: int = typer.Option(4096, min=1),
    workers: List[int] = typer.Option([0, 1, 2]),
    max_batches: int = typer.Option(200, min=1),
    json_out: Path = typer.Option(Path("bench_loader.json")),
) -> None:
    """Samples/s of the streaming loader alone (no model)."""
    from rankmixer.bench.loader import run_loader_bench

    with user_errors():
        check_output(json_out, [prepared], "--json-out")
        rows = run_loader_bench(dataset, prepared, batch_size, workers, max_batches, log=console.print)
    table = Table(title=f"loader throughput, batch {batch_size}")
    for c in ("workers", "batches", "samples/s"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), str(r["batches"]), f"{r['samples_per_s']:,.0f}")
    console.print(table)
    console.print(f"wrote {write_json(json_out, rows, inputs=[prepared])}")


def distributed(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment to train: a packaged name or a YAML file."),
    procs: List[int] = typer.Option([1, 2], help="Process counts to compare."),
    embeddings: List[str] = typer.Option(["ddp", "torchrec"], help="Embedding modes for N > 1."),
    max_steps: int = typer.Option(300, min=1),
    log_every: int = typer.Option(25, min=1),
    out: Path = typer.Option(Path("bench_out/distributed"), help="Run directories and JSON go here."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides for every case"),
) -> None:
    """Training samples/s of 1 vs N processes under torchrun (same config, same global batch)."""
    from rankmixer.bench.distributed import markdown_table, run_distributed_bench

    with user_errors():
        report = run_distributed_bench(config, procs, embeddings, max_steps, log_every, out,
                                       overrides=list(overrides or []), log=console.print)
    console.print(f"training throughput, {config.name}, {max_steps} steps, {report['rows'][0]['cores']} cores")
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    console.print(f"wrote {write_json(out / 'distributed.json', report)}")


def _names(s: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None or empty: no filter."""
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def accuracy(
    config: List[Path] = typer.Option([], "--config", "-c", help="Experiment, a packaged name or a YAML file "
                                      "(repeatable): one table row each."),
    suite: Optional[Path] = typer.Option(None, help="Suite crossing datasets with models: a packaged name (peers, "
                                         "rankmixer, ...) or a YAML file (see docs/benchmarks.md). "
                                         "Default with --models/--datasets: peers."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model labels of the suite to run (default: all)."),
    datasets: Optional[str] = typer.Option(None, help="Comma-separated dataset names of the suite to run (default: all)."),
    budget: Optional[str] = typer.Option(None, help="Same budget for every cell: epochs=N, steps=N or samples=N "
                                         "(default: each config's own epochs)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per config (0 .. seeds-1)."),
    out: Path = typer.Option(Path("bench_out/accuracy"), help="Output directory (runs, JSON, Markdown)."),
    name: Optional[str] = typer.Option(None, help="Stem of the report files (default: the suite's name, or "
                                       "accuracy): several selections of one suite can share --out and its runs."),
    processes: int = typer.Option(1, min=1, help="Runs trained at once, each in its own process (many cores, or "
                                  "one GPU that a small model leaves idle)."),
    report_only: bool = typer.Option(False, help="Train nothing: report the runs finished so far."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every config."),
) -> None:
    """Train each config with several seeds; table of test metrics (mean ± std). Resumable."""
    from rankmixer.bench.accuracy import (cells_from_configs, load_suite, markdown_table, run_accuracy, select,
                                          suite_differences)

    if suite is None and (models or datasets):
        suite = Path("peers")
    name = name or (suite.stem if suite and not config else "accuracy")
    with user_errors():
        cells = cells_from_configs(list(config)) + (select(load_suite(suite), _names(datasets), _names(models)) if suite else [])
        if not cells:
            raise ValueError("give --config/-c experiments or a --suite (or --models/--datasets)")
        report = run_accuracy(cells, list(range(seeds)), out, list(overrides or []), log=console.print, name=name,
                              budget=budget, differences=suite_differences(suite) if suite else (),
                              processes=processes, report_only=report_only)
    console.print(markdown_table(report["summary"]), markup=False)
    console.print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def scaling(
    spec: Path = typer.Option(Path("scaling"), help="Scaling spec (dataset, budget, families): a packaged name or a YAML file."),
    seeds: int = typer.Option(1, min=1, help="Seeds per point (0 .. seeds-1)."),
    budget: Optional[str] = typer.Option(None, help="Replace the spec's budget: epochs=N, steps=N or samples=N."),
    out: Path = typer.Option(Path("bench_out/scaling"), help="Output directory (runs, JSON, Markdown, PNG)."),
    families: Optional[str] = typer.Option(None, help="Comma-separated families of the spec to run, in this order "
                                           "(`oracle` for the spec's oracle; default: all, in the spec's order)."),
    processes: int = typer.Option(1, min=1, help="Runs trained at once, each in its own process."),
    report_only: bool = typer.Option(False, help="Train nothing: report the runs finished so far."),
    earlier: Optional[Path] = typer.Option(None, help="An earlier scaling.json of the same spec: its runs join the "
                                           "report where no run of the same point is here (points trained on "
                                           "another machine or in another session)."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every run."),
) -> None:
    """Test AUC against dense parameters and FLOPs per sample, per model family. Resumable."""
    from rankmixer.bench.scaling import run_scaling

    with user_errors():
        run_scaling(spec, list(range(seeds)), out, list(overrides or []), log=console.print, budget=budget,
                    families=_names(families), processes=processes, report_only=report_only, earlier=earlier)
    console.print((out / "scaling.md").read_text(), markup=False)
    console.print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'} and {out / 'scaling.png'}")


def gts(
    spec: Path = typer.Option(Path("gts"), help="Spec (data directory, datasets, models, rounds, published scores): "
                                                 "a packaged name or a YAML file."),
    seeds: int = typer.Option(3, min=1, help="Seeds per cell (0 .. seeds-1)."),
    datasets: Optional[str] = typer.Option(None, help="Comma-separated datasets of the spec (default: all)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated models of the spec (default: all)."),
    rounds: Optional[str] = typer.Option(None, help="Comma-separated inference rounds k for the grid models "
                                                    "(default: the spec's)."),
    out: Path = typer.Option(Path("bench_out/gts"), help="Output directory (runs, JSON, Markdown)."),
    name: str = typer.Option("gts", help="Stem of the report files: several selections can share --out and its runs."),
    processes: int = typer.Option(1, min=1, help="Runs trained at once, each in its own process."),
    report_only: bool = typer.Option(False, help="Train nothing: report the runs finished so far."),
    device: Optional[str] = typer.Option(None, help="Torch device to train on, e.g. cuda (default: the spec's, cpu)."),
) -> None:
    """Triplet and pair F1 of GTS and the BIO baseline on the ASTE-Data-V2 test sets (mean ± sd over
    seeds), beside the published numbers. Resumable."""
    from rankmixer.bench.gts import markdown_table, run_gts_bench

    with user_errors():
        report = run_gts_bench(spec, list(range(seeds)), out, name, _names(datasets), _names(models),
                               _ints([rounds]) if rounds else None, processes, report_only, device,
                               log=console.print)
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def sigeo(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment whose data and recipe every run uses."),
    space: Path = typer.Option(Path("default"), "--space", help="Architecture space with the supernet (docs/search.md)."),
    warmups: str = typer.Option("0,0.01,0.1", help="Comma-separated shares of the training rows to warm up on."),
    subnets: int = typer.Option(32, min=2, help="Paths of the supernet scored and trained from scratch."),
    seeds: int = typer.Option(1, min=1, help="From-scratch seeds per path (0 .. seeds-1)."),
    proxy_batches: int = typer.Option(8, min=2, help="Training batches the proxies are computed on."),
    search_seed: int = typer.Option(0, help="Seed that draws the paths."),
    out: Path = typer.Option(Path("bench_out/sigeo"), help="Output directory (searches, runs, JSON, Markdown)."),
    name: str = typer.Option("sigeo", help="Stem of the report files."),
    processes: int = typer.Option(1, min=1, help="From-scratch runs trained at once, each in its own process."),
    scratch: Optional[Path] = typer.Option(None, help="Folder of the from-scratch runs (default OUT/scratch); "
                                           "another bench's, to score its subnets with another space's supernet "
                                           "without training them again."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides applied to every run (not model.*)."),
) -> None:
    """Rank correlation (Spearman, Kendall) between SiGeo's proxy (and each of its terms) and the test
    AUC of the same subnets trained from scratch, at each warm-up. Resumable."""
    from rankmixer.bench.sigeo import markdown_table, run_sigeo_bench

    with user_errors():
        shares = [float(x) for x in warmups.split(",") if x.strip()]
        report = run_sigeo_bench(config, space, out, list(overrides or []), warmups=shares, subnets=subnets,
                                 seeds=list(range(seeds)), batches=proxy_batches, search_seed=search_seed,
                                 processes=processes, name=name, scratch_dir=scratch, log=console.print)
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def search_budget(
    root: Path = typer.Option(..., "--root", help="Folder of rankmixer search outputs named <strategy>-s<seed>."),
    out: Path = typer.Option(Path("bench_out/search_budget_report"), help="Output directory (JSON, Markdown, PNG)."),
    name: str = typer.Option("search_budget", help="Stem of the report files."),
    checkpoints: str = typer.Option("10,25,50,100", help="Comma-separated trial counts to compare at."),
    flops_target: Optional[float] = typer.Option(None, min=0.0, help="FLOPs per sample: also compare the best "
                                                 "trial at or below it."),
    baseline: str = typer.Option("random", help="The strategy every other one is compared with."),
    folds: int = typer.Option(5, min=2, help="Folds of the predictor's cross-validation."),
    earlier: Optional[List[Path]] = typer.Option(None, "--earlier", help="An earlier report of this command (its "
                                                 "JSON) whose searches join the comparison; repeatable."),
    earlier_override: Optional[List[str]] = typer.Option(
        None, "--earlier-override", help="'OLD NEW' (two overrides, shell-quoted as one argument): an override of "
        "the earlier reports' searches and the one that trains the same trials with today's trainer, read for OLD "
        "when comparing them; repeatable."),
) -> None:
    """Search strategies at an equal trial budget: best-so-far over search seeds, the difference to
    random search against the seed spread, the AutoML predictor's held-out Kendall tau and its
    ablations, and NE against FLOPs of every trial (plot)."""
    from rankmixer.bench.search_budget import markdown_tables, run_search_budget

    with user_errors():
        ks = [int(x) for x in checkpoints.split(",") if x.strip()]
        renamed = {}
        for pair in earlier_override or []:
            words = shlex.split(pair)
            if len(words) != 2 or not all("=" in w for w in words):
                raise ValueError(f"--earlier-override {pair!r}: expected two key=value overrides, OLD then NEW "
                                 "(e.g. 'train.one_pass_evals=5 train.eval_every_steps=12')")
            renamed[words[0]] = words[1]
        report = run_search_budget(root, out, name, checkpoints=ks, flops_target=flops_target, baseline=baseline,
                                   folds=folds, earlier=earlier or [], earlier_overrides=renamed, log=console.print)
    console.print(markdown_tables(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out / (name + '.json')}, {out / (name + '.md')} and {out / (name + '.png')}")


def pareto(
    study: str = typer.Option("multitask", help="A study of the suite (configs/bench/pareto.yaml)."),
    suite: Path = typer.Option(Path("pareto"), help="Suite of studies: a packaged name or a YAML file."),
    seeds: int = typer.Option(3, min=1, help="Seeds 1..N for every setting."),
    out: Path = typer.Option(Path("bench_out/pareto"), help="Output directory (runs, JSON, Markdown, PNG)."),
    name: str = typer.Option("pareto", help="Stem of the report files."),
    processes: int = typer.Option(1, min=1, help="Runs trained at once."),
) -> None:
    """Pareto front of per-task test NE: WC-MHGD (learned task weights under each preference)
    against a grid of fixed linear scalarisations and equal weights, with hypervolumes."""
    from rankmixer.bench.pareto import markdown_tables, run_pareto

    with user_errors():
        report = run_pareto(study, out, list(range(1, seeds + 1)), suite=suite,
                            processes=processes, name=name, log=console.print)
    console.print(markdown_tables(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out / (name + '.json')}, {out / (name + '.md')} and {out / (name + '.png')}")


def exfm(
    study: Path = typer.Option(Path("exfm"), help="The study: a packaged name (configs/bench/exfm.yaml) or a YAML file."),
    seeds: int = typer.Option(3, min=1, help="Seeds 1..N (a teacher and every student per seed)."),
    out: Path = typer.Option(Path("bench_out/exfm"), help="Output directory (runs, logs, data, JSON, Markdown)."),
    name: str = typer.Option("exfm", help="Stem of the report files."),
    processes: int = typer.Option(1, min=1, help="Runs trained at once."),
    verticals: Optional[int] = typer.Option(None, help="Verticals instead of the study's count (a new --out)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides for the teacher and every student."),
) -> None:
    """ExFM: students alone, with plain distillation, with the auxiliary head and with the student
    adapter, under a teacher 0 or more days stale; progressive NE and AUC per day."""
    from rankmixer.bench.exfm import markdown, run_exfm

    with user_errors():
        report = run_exfm(out, list(range(1, seeds + 1)), study=study, processes=processes, name=name,
                          overrides=list(overrides or []), verticals=verticals, log=console.print)
    console.print(markdown(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")


def cubicml(
    history: Path = typer.Option(Path("bench_out/cubicml/history.parquet"), help="History file (Parquet): measured "
                                 "settings are kept there and reused by a rerun."),
    out: Path = typer.Option(Path("bench_out/cubicml.json"), help="Report JSON."),
    space: str = typer.Option("cpu", help="Space: a packaged name under configs/system or a YAML file."),
    random_settings: int = typer.Option(120, min=10, help="Random settings in the history."),
    model_size: str = typer.Option("large", help="The model size the search speeds up."),
    budget: int = typer.Option(5, min=1, help="Real runs for the search and for random search each."),
    rounds: int = typer.Option(1, min=1, help="Predict-measure-refit rounds of the search."),
    seeds: int = typer.Option(3, min=1, help="Seeds 0..N-1."),
    confirm: int = typer.Option(2, min=1, help="Interleaved re-measurements of each winner."),
    memory_limit_mb: Optional[float] = typer.Option(None, help="Memory limit of the search and of every run."),
) -> None:
    """CubicML: predictor Spearman on held-out settings; the searcher's pick vs the default vs the
    best of random settings at equal real runs; the runs it saved."""
    from rankmixer.bench.cubicml import run_cubicml_bench

    with user_errors():
        check_output(out, [history], "--out")
        run_cubicml_bench(history, space, random_settings, model_size, budget, rounds, tuple(range(seeds)),
                          confirm=confirm, memory_limit_mb=memory_limit_mb, out=out, log=console.print)


def auto_kernels(
    history: Path = typer.Option(Path("bench_out/cubicml/history.parquet"), help="History file (Parquet) where the "
                                 "runs keep their auto timings."),
    out: Path = typer.Option(Path("bench_out/cubicml_auto.json"), help="Report JSON."),
    space: str = typer.Option("cpu", help="Space: a packaged name under configs/system or a YAML file."),
    model_sizes: str = typer.Option("large", help="Comma-separated model sizes of the space."),
    precisions: str = typer.Option("fp32", help="Comma-separated precisions."),
    rounds: int = typer.Option(3, min=1, help="Interleaved rounds."),
) -> None:
    """Whole training runs with the measured `auto` kernels (per-token FFN implementation,
    optimizer kernel) against each alternative we ship, interleaved; auto over the best one."""
    from rankmixer.bench.cubicml import run_auto_bench

    with user_errors():
        check_output(out, [history], "--out")
        run_auto_bench(history, space, tuple(_names(model_sizes)), tuple(_names(precisions)), rounds, out=out,
                       log=console.print)


def sequence_length(
    spec: Path = typer.Option(Path("sequence_length"), help="Spec (lengths, batch size, models): a packaged name or a YAML file."),
    out: Path = typer.Option(Path("bench_out/sequence_length.json"), help="Report JSON (a PNG plot is written beside it)."),
    lengths: Optional[str] = typer.Option(None, help="Comma-separated history lengths (default: the spec's)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model labels of the spec (default: all)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Rows per training step (default: the spec's)."),
    rounds: int = typer.Option(3, min=1, help="Interleaved timing rounds."),
    precision: str = typer.Option("fp32", help="fp32, bf16 or fp16."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Training samples/s, peak memory and FLOPs per sample of sequence models against history length."""
    from rankmixer.bench.sequence_length import run_sequence_length_bench

    with user_errors():
        check_output(out, [spec], "--out")
        run_sequence_length_bench(spec, out, _ints(lengths.split(",")) if lengths else None, _names(models),
                                  batch_size, rounds, precision, device, log=console.print)
    console.print(f"wrote {out} and {out.with_suffix('.png')}")


def moe(
    tokens: int = typer.Option(16, "--tokens", "-T", min=1, help="T: tokens."),
    dim: int = typer.Option(256, "--dim", "-D", min=1, help="D: token width."),
    expansion: float = typer.Option(4, "--expansion", "-k", help="k: expert hidden width = k * D."),
    experts: List[int] = typer.Option([4, 8], help="Experts per token (repeatable)."),
    ratios: List[float] = typer.Option([0.5, 0.25, 0.125], help="Active-expert ratios (repeatable)."),
    skews: List[float] = typer.Option([0.0], help="Expert imbalance (0 = balanced; repeatable)."),
    impls: List[str] = typer.Option(["loop", "padded"], help="Sparse implementations (repeatable)."),
    batch_size: int = typer.Option(512, min=1),
    repeats: int = typer.Option(5, min=1, help="Interleaved timing rounds."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: as set)."),
    json_out: Path = typer.Option(Path("bench_moe.json")),
) -> None:
    """Sparse vs dense inference of the per-token MoE FFN (same weights, same inputs)."""
    from rankmixer.bench.moe import run_moe_bench

    with user_errors():
        report = run_moe_bench(T=tokens, D=dim, k=expansion, experts=experts, ratios=ratios, skews=skews,
                               impls=impls, batch_size=batch_size, repeats=repeats, threads=threads,
                               out=json_out, log=console.print)
    console.print(f"wrote {json_out} ({len(report['rows'])} rows)")


def serve(
    model: Path = typer.Option(..., "--model", help="Artifact directory (decodes real rows; served here unless --url)."),
    url: Optional[str] = typer.Option(None, help="A running server of that artifact (default: start one)."),
    prepared: Path = typer.Option(Path("data_cache/movielens-latest"), help="Prepared data: request rows come from its "
                                  "test split (relative to the working directory, where training prepares it)."),
    concurrency: List[int] = typer.Option([1, 8, 32, 128], help="Concurrent clients (repeatable)."),
    requests: int = typer.Option(2000, min=1, help="Requests per level at most."),
    duration: float = typer.Option(20.0, min=0.1, help="Seconds per level at most."),
    candidates: int = typer.Option(32, min=1, help="Candidates (rows) per request at most (one user's)."),
    server_threads: Optional[int] = typer.Option(None, help="Model threads of the started server."),
    json_out: Path = typer.Option(Path("bench_out/serve.json"), help="Where to write the JSON report."),
) -> None:
    """Load-test the scoring server on loopback: QPS, p50/p95/p99 latency, error rate."""
    from rankmixer.bench.serve import markdown_table, run_serve_bench

    with user_errors(RuntimeError):
        check_output(json_out, [model, prepared], "--json-out")  # before the load test, not after
        report = run_serve_bench(model=model, url=url, prepared=prepared, concurrency=list(concurrency),
                                 requests=requests, duration=duration, candidates=candidates,
                                 server_args=["--threads", str(server_threads)] if server_threads else None,
                                 log=console.print)
    console.print(f"serve {report['model']} ({report['format']}), {candidates} candidates/request")
    console.print(markdown_table(report), markup=False, soft_wrap=True)
    with user_errors():
        console.print(f"wrote {write_json(json_out, report, inputs=[model, prepared])}")


def _shape(text: str) -> tuple[int, int, int]:
    """``--peak-shape 512x768x3072``: (M, K, N)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--peak-shape {text!r}: expected MxKxN, e.g. 512x768x3072")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _ints(values: List[str]) -> list[int]:
    """``--batch-sizes 512,64`` or repeated ``--batch-sizes``: ints."""
    return [int(v) for item in values for v in item.split(",") if v.strip()]


def speed(
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
    dcn_vocab: int = typer.Option(10_000, min=1, help="DCNv2 comparison: vocabulary per field."),
    moe: bool = typer.Option(True, help="Sparse vs dense MoE inference (bench/moe.py) at ratio 1/4."),
    profile: bool = typer.Option(False, help="torch.profiler over one training step and one inference call."),
    inference_copy: bool = typer.Option(True, help="Time inference on a copy of the model (off: on the trained one, half the memory)."),
    peak_shape: List[str] = typer.Option([], help="Matmul peak shape MxKxN (repeatable). Default: 2048^3 (CUDA "
                                         "8192^3) and the model's own FFN matmul."),
    json_out: Path = typer.Option(Path("bench_out/speed.json"), "--json", help="Where to write the JSON report."),
) -> None:
    """Throughput, MFU vs the measured matmul peak, latency and memory of RankMixer; peers side by side."""
    from rankmixer.bench.speed import run_speed_bench
    from rankmixer.config import apply_overrides

    with user_errors():
        overrides = apply_overrides({}, list(set_))
        shapes = [_shape(s) for s in peak_shape] or None
        run_speed_bench(model, overrides, _ints(batch_sizes), train_batch, list(precision) or None, device, threads,
                        rounds, optimizer, baseline, ablations, compile_mode, peak_shapes=shapes, dcn=dcn,
                        dcn_options={"vocab_size": dcn_vocab},
                        moe_bench=moe, profile=profile, inference_copy=inference_copy, out=json_out,
                        log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True))


def tables(
    files: List[Path] = typer.Argument(None, help="Markdown files (default: README.md and docs/*.md under --root)."),
    root: Path = typer.Option(Path("."), help="The checkout whose README.md and docs/ to read."),
    check: bool = typer.Option(False, "--check", help="Only report what differs; exit 1 if anything does."),
) -> None:
    """Regenerate the results tables of README.md and docs/*.md from the JSON their markers name
    (docs/results/); --check reports stale tables, missing JSON and unmarked results tables."""
    from rankmixer.bench.doc_tables import doc_files, update

    paths = list(files or []) or doc_files(root)
    if not paths:
        console.print(f"no README.md or docs/*.md under {root}")
        raise typer.Exit(1)
    rewritten, problems = update(paths, root, write=not check)
    for path in rewritten:
        console.print(f"rewrote {path}")
    for p in problems:
        console.print(p, markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(paths)} file(s): every results table matches its JSON")


def conversions(
    seeds: int = typer.Option(3, min=1, help="Seeds 1..N (each its own data and models)."),
    short: float = typer.Option(1.0, help="The short fixed window T_s, days."),
    long: float = typer.Option(7.0, help="The long fixed window T_l, days."),
    windows: str = typer.Option("2,3,5", help="Comma-separated windows T_f (days) strictly between T_s and T_l."),
    rows_train: int = typer.Option(200_000, min=1000, help="Training clicks per seed."),
    prior_conversions: float = typer.Option(5.0, min=0.0, help="Shrinkage toward the global delay rate "
                                            "(pseudo-conversions per advertiser)."),
    work: Path = typer.Option(Path("bench_out/conversions"), help="Data and runs (finished runs are reused)."),
    out: Path = typer.Option(Path("bench_out/production_conversions.json"), help="Report JSON."),
) -> None:
    """Personalized Interpolation of conversion windows vs the T_f oracle, the nearest fixed window
    and one global delay rate, on the synthetic conversion log; delay-rate recovery."""
    from rankmixer.bench.conversions import markdown_tables, run_conversions

    with user_errors():
        ws = [float(w) for w in windows.split(",") if w.strip()]
        report = run_conversions(out, work, list(range(1, seeds + 1)), short=short, long=long, windows=ws,
                                 rows_train=rows_train, prior_conversions=prior_conversions, log=console.print)
    console.print(markdown_tables(report), markup=False, soft_wrap=True)
    console.print(f"wrote {out} ({report['seconds']} s)")
