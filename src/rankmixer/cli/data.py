"""Data commands: ``data prepare``, ``data presets``, ``data download`` and ``data synthetic``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, user_errors

__all__ = ["download", "prepare", "presets", "synthetic"]


def prepare(
    dataset: Optional[str] = typer.Option(None, help="Preset name (see `rankmixer data presets`)."),
    schema: Optional[Path] = typer.Option(None, help="Schema YAML for your own data."),
    raw: Optional[Path] = typer.Option(None, help="Raw file or directory."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default data_cache/<name>)."),
    on_bad_row: str = typer.Option("fail", help="fail: stop at the first bad row; skip: skip and count."),
    option: List[str] = typer.Option([], "--option", "-o", help="Preset option key=value (repeatable)."),
    force: bool = typer.Option(False, help="Prepare again even if the output is up to date."),
) -> None:
    """Raw CSV/TSV/Parquet -> Parquet shards + feature map."""
    from rankmixer.core.yamlio import parse_key_values
    from rankmixer.data.config import DataConfig
    from rankmixer.experiment import prepare_data

    with user_errors():
        # No --dataset: the synthetic default applies only when no --raw says otherwise.
        source = {"schema_file": str(schema), "dataset": None} if schema else ({"dataset": dataset} if dataset else {})
        data = DataConfig(**source, raw=str(raw) if raw else None, prepared_dir=str(out) if out else None,
                          on_bad_row=on_bad_row, preset_options=parse_key_values(option, "--option"))
        fm = prepare_data(data, log=console.print, force=force)
    table = Table(title=f"prepared {fm.dataset} in {fm.root}")
    for c in ("split", "rows", "label means"):
        table.add_column(c)
    for name, s in fm.splits.items():
        table.add_row(name, f"{s.rows:,}", ", ".join(f"{m:.4f}" for m in s.label_means))
    console.print(table)
    bad = fm.report.get("bad_rows", {})
    if bad.get("rows_skipped"):
        console.print(f"skipped {bad['rows_skipped']:,} of {bad['rows_read']:,} rows: {bad['by_reason']}")
    behaviours = f", {len(fm.behaviours)} behaviours" if fm.behaviours else ""
    console.print(f"features: {len(fm.features)} ({len(fm.sparse)} sparse, {len(fm.dense)} dense, "
                  f"{len(fm.bags)} bags, {len(fm.sequences)} sequences{behaviours})")


def presets() -> None:
    """List dataset presets."""
    from rankmixer.data.datasets.base import available_presets, get_preset

    table = Table(title="dataset presets")
    table.add_column("name")
    table.add_column("description")
    for name in available_presets():
        table.add_row(name, get_preset(name).description)
    console.print(table)


def download(dataset: str, dest: Path = typer.Option(Path("data_raw"), help="Where to put the files.")) -> None:
    """Download a preset's official files (where a public URL exists) and verify checksums."""
    from rankmixer.data.datasets.base import get_preset

    with user_errors(RuntimeError):
        path = get_preset(dataset).download(dest / dataset)
    console.print(f"downloaded to {path}")


def synthetic(
    out_dir: Path = typer.Argument(..., help="Output directory (raw Parquet files per split + synthetic_meta.json)."),
    option: List[str] = typer.Option([], "--option", "-o", help="Generator option key=value (repeatable), e.g. "
                                     "rows_train=1000000 n_users=5000 (the fields of SyntheticConfig)."),
    rows_train: Optional[int] = typer.Option(None, help="Training rows (same as --option rows_train=N)."),
    rows_valid: Optional[int] = typer.Option(None, help="Validation rows."),
    rows_test: Optional[int] = typer.Option(None, help="Test rows."),
    seed: Optional[int] = typer.Option(None, help="Generator seed."),
    chunk_rows: Optional[int] = typer.Option(None, help="Rows generated per chunk."),
    rows_per_file: Optional[int] = typer.Option(None, help="Rows per Parquet file."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Generate the synthetic CTR set (planted model, known Bayes-optimal AUC) into OUT_DIR and
    print a JSON summary per split. `data prepare --dataset synthetic` does this on first use."""
    from rankmixer.core.yamlio import parse_key_values
    from rankmixer.data.datasets.synthetic import generate

    flags = {"rows_train": rows_train, "rows_valid": rows_valid, "rows_test": rows_test, "seed": seed,
             "chunk_rows": chunk_rows, "rows_per_file": rows_per_file}
    with user_errors():
        options = {**parse_key_values(option, "--option"), **{k: v for k, v in flags.items() if v is not None}}
        meta = generate(options, out_dir, progress=not quiet)
    summary = {s: {k: v[k] for k in ("rows", "label_mean", "bayes_auc", "bayes_logloss")} for s, v in meta["splits"].items()}
    print(json.dumps({"out_dir": str(out_dir), "splits": summary, "rows_per_second": meta["rows_per_second"]}, indent=2))
