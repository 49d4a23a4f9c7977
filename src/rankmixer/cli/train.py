"""Training commands: ``quickstart``, ``train``, ``evaluate``, ``predict`` and ``calibrate-exit``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, metrics_table, user_errors
from rankmixer.core.files import write_json

__all__ = ["calibrate_exit", "evaluate", "predict", "quickstart", "quickstart_overrides", "train"]


def quickstart_overrides(rows: int, model: str, epochs: int, run_dir: Path, threads: int | None) -> list[str]:
    """The quickstart options as overrides of the packaged experiment ``quickstart``."""
    held_out = max(rows // 10, 1000)
    return [
        f"data.preset_options={{rows_train: {rows}, rows_valid: {held_out}, rows_test: {held_out}}}",
        f"data.prepared_dir=data_cache/synthetic-{rows}",
        f"model.name={model}",
        f"run_dir={run_dir}",
        f"train.epochs={epochs}",
    ] + ([f"train.threads={threads}"] if threads else [])


def quickstart(
    rows: int = typer.Option(300_000, min=1, help="Training rows of the synthetic set."),
    model: str = typer.Option("dcnv2", help="Model to train (see `rankmixer models`)."),
    run_dir: Path = typer.Option(Path("runs/quickstart"), help="Run directory."),
    epochs: int = typer.Option(2, min=1, help="Training epochs."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: all cores)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics, the Bayes-optimal "
                                            "metrics, the wall time and the machine (CPU flags, load) to this JSON file."),
) -> None:
    """Generate the built-in synthetic set, train a small model, evaluate, print metrics."""
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.core.hardware import machine_info

    load_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    with user_errors():
        cfg = load_config("quickstart", quickstart_overrides(rows, model, epochs, run_dir, threads))
        result = experiment.train(cfg, log=console.print)
    wall_s = time.perf_counter() - t0
    console.print(metrics_table(f"{model} on synthetic ({rows:,} train rows)",
                                {"valid": result["valid"], "test": result["test"]}))
    bayes = result.get("bayes") or {}
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
    console.print(f"run directory: {run_dir}; {wall_s:.0f} s (data generation, preparation, training, evaluation)")
    if json_out is not None:
        report = {"command": {"rows": rows, "model": model, "epochs": epochs, "threads": threads},
                  "wall_s": round(wall_s, 1), "loadavg_start": load_start, "machine": machine_info(),
                  "best_step": result["best_step"], "steps": result.get("steps"),
                  "valid": result["valid"], "test": result["test"], "bayes": bayes or None}
        with user_errors():
            console.print(f"wrote {write_json(json_out, report)}")


def train(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment: a packaged name (movielens_dcnv2) or a YAML file."),
    overrides: List[str] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=3"),
    resume: bool = typer.Option(False, help="Continue from the run directory's last intact checkpoint."),
    overwrite: bool = typer.Option(False, help="Start over in a run directory that holds a run (removes what "
                                   "training wrote, keeps other files)."),
    on_bad_row: Optional[str] = typer.Option(None, help="Override data.on_bad_row (fail|skip)."),
) -> None:
    """Train a model from a config file."""
    from rankmixer import experiment
    from rankmixer.config import load_config

    with user_errors():
        extra = [f"data.on_bad_row={on_bad_row}"] if on_bad_row else []
        cfg = load_config(config, list(overrides or []) + extra)
        result = experiment.train(cfg, resume=resume, overwrite=overwrite, log=console.print)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        if "streaming" in result:  # progressive validation: each day before training on it
            stream = result["streaming"]
            rows = {f"day {r['day']}": r for r in stream["days"]}
            rows.update({"mean": stream["mean"], "mean after day 1": stream["mean_after_first"]})
            console.print(metrics_table(f"{cfg.model_name}: progressive validation", rows))
        console.print(metrics_table(f"{cfg.model_name} (best step {result['best_step']})",
                                    {"valid": result["valid"], "test": result["test"]}))


def evaluate(run: Path = typer.Option(..., "--run", help="Run directory."),
             split: List[str] = typer.Option(["valid", "test"], help="Splits to evaluate.")) -> None:
    """Evaluate a run's best model."""
    from rankmixer import experiment

    with user_errors():
        res = experiment.evaluate(run, tuple(split), log=console.print)
    console.print(metrics_table(f"evaluation of {run}", res))
    print(json.dumps(res))


def predict(
    run: Path = typer.Option(..., "--run"),
    input: Path = typer.Option(..., "--input", help="Raw rows (the dataset's source format) or a prepared Parquet file."),
    output: Path = typer.Option(..., "--output", help="Output .parquet or .csv (the suffix picks the format)."),
    batch_size: int = typer.Option(8192, min=1),
    input_format: str = typer.Option("auto", help="auto | raw | prepared"),
    on_bad_row: str = typer.Option("fail", help="fail | skip (raw input)"),
    overwrite: bool = typer.Option(False, help="Replace --output if it is a score file rankmixer wrote."),
) -> None:
    """Batch scoring to Parquet or CSV."""
    from rankmixer import experiment

    with user_errors():
        n = experiment.predict(run, input, output, batch_size, input_format, on_bad_row, overwrite=overwrite)
    console.print(f"scored {n:,} rows -> {output}")


def calibrate_exit(
    run: Path = typer.Option(..., "--run", help="Run directory of a RankMixer trained with model.early_exit."),
    split: str = typer.Option("valid", help="Split to calibrate on."),
    max_auc_loss: float = typer.Option(0.001, help="Largest AUC loss allowed relative to the full model."),
    points: int = typer.Option(20, min=1, help="Shared-threshold grid points (quantiles of the exits' confidences)."),
    batch_size: int = typer.Option(4096, min=1, help="Rows per batch (logits and latency)."),
    latency_batches: int = typer.Option(10, min=1, help="Batches timed per setting."),
    latency_points: int = typer.Option(8, min=1, help="Curve points timed (plus the full model and the chosen one)."),
    repeats: int = typer.Option(3, min=1, help="Timing repeats (median)."),
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
    with user_errors():
        rep = calibrate_run(run, split, max_auc_loss, points, batch_size, latency_batches, latency_points,
                            repeats, max_rows, None if check_split == "none" else check_split, log=console.print)
    n_exits = len(rep["curve"][0]["exit_share"])
    table = Table(title=f"early exit on {rep['split']} ({rep['rows']:,} rows, task {rep['task']}): "
                        f"full-model AUC {rep['auc_full']:.5f}")
    for c in ["threshold |logit|", "max(p,1-p) >=", *[f"exit {i + 1}" for i in range(n_exits)],
              "AUC", "AUC loss", "logloss", "FLOPs/sample", "FLOPs ratio", "ms/batch (median)", "ms/batch (min)",
              "latency ratio (min)"] + ([f"{rep['check_split']} AUC loss"] if rep["check_split"] else []):
        table.add_column(c, justify="right")
    for k, p in enumerate(rep["curve"]):
        mark = " *" if k == rep["chosen_index"] else ""
        timed = "ms_per_batch" in p
        table.add_row(
            "inf (full)" if p["threshold"] is None else f"{p['threshold']:.3f}{mark}",
            "-" if p["min_confidence_prob"] is None else f"{p['min_confidence_prob']:.3f}",
            *[f"{s:.1%}" for s in p["exit_share"]],
            f"{p['auc']:.5f}", f"{p['auc_loss']:+.5f}", f"{p['logloss']:.5f}",
            f"{p['flops_per_sample']:,.0f}", f"{p['flops_ratio']:.3f}",
            f"{p['ms_per_batch']:.2f}" if timed else "-",
            f"{p['ms_per_batch_min']:.2f}" if timed else "-",
            f"{p['latency_ratio_min']:.3f}" if timed else "-",
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
