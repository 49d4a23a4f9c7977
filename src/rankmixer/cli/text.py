"""Text commands: ``text train-gts`` (train GTS on an ASTE-Data-V2 dataset) and ``text
extract`` (aspect-sentiment triplets of the reviews in a CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from rankmixer.cli.common import console, user_errors

__all__ = ["extract", "train_gts"]


def train_gts(
    data: Path = typer.Option(..., help="ASTE-Data-V2 dataset directory with train/dev/test.json "
                                        "(e.g. ../shared/data/aste-v2/res14)."),
    out: Path = typer.Option(..., help="Model directory to write (weights, vocabulary, config, metrics.json)."),
    encoder: Optional[str] = typer.Option(None, help="bilstm or cnn (default: the config's, bilstm)."),
    tagger: Optional[str] = typer.Option(None, help="grid (GTS) or bio (the baseline: BIO tags and nearest-span "
                                                    "pairing) (default: the config's, grid)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="GTS config YAML (default: the packaged "
                                                                       "configs/text/gts.yaml)."),
    seed: Optional[int] = typer.Option(None, help="Seed (default: the config's)."),
    epochs: Optional[int] = typer.Option(None, help="Most epochs (default: the config's)."),
    rounds: Optional[int] = typer.Option(None, help="k, feedback inference rounds (default: the config's)."),
    task: Optional[str] = typer.Option(None, help="triplet or pair: the tag set trained (default: the config's, "
                                                  "triplet)."),
    device: Optional[str] = typer.Option(None, help="Torch device to train on, e.g. cuda (default: the config's, cpu)."),
    overwrite: bool = typer.Option(False, help="Replace an existing GTS model directory."),
) -> None:
    """Train GTS (grid tagging) or the BIO baseline on one ASTE-Data-V2 dataset; print dev/test P/R/F1."""
    from rankmixer.text.config import GTSConfig, default_config, load_gts_config
    from rankmixer.text.train import model_name, train_gts as run

    with user_errors():
        cfg = load_gts_config(config) if config else default_config()
        over = {k: v for k, v in (("encoder", encoder), ("tagger", tagger), ("rounds", rounds), ("task", task))
                if v is not None}
        train_over = {k: v for k, v in (("seed", seed), ("epochs", epochs), ("device", device)) if v is not None}
        cfg = GTSConfig.model_validate({"model": {**cfg.model.model_dump(), **over},
                                        "train": {**cfg.train.model_dump(), **train_over}})
        metrics = run(cfg, data, out, overwrite=overwrite, log=console.print)
    table = Table(title=f"{model_name(cfg)} on {data} (best epoch {metrics['best_epoch']})")
    for c in ("split", "scores", "precision", "recall", "F1"):
        table.add_column(c, justify="right" if c in ("precision", "recall", "F1") else "left")
    for split in ("dev", "test"):
        for name in ("triplet", "pair", "aspect", "opinion"):
            if name in metrics[split]:
                r = metrics[split][name]
                table.add_row(split, name, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}")
    console.print(table)
    console.print(f"wrote {out} (metrics.json)")


def extract(
    model: Path = typer.Option(..., help="A model directory written by `rankmixer text train-gts`."),
    input: Path = typer.Option(..., "--input", help="CSV of reviews with a header."),
    out: Path = typer.Option(..., help="Output .jsonl: one line of triplets per review."),
    column: str = typer.Option("text", help="The CSV column holding the review text."),
    on_bad_row: str = typer.Option("fail", help="fail: stop at a non-UTF-8 line; skip: drop it and count."),
    batch_size: int = typer.Option(64, min=1, help="Reviews per forward pass."),
) -> None:
    """Aspect-sentiment triplets of every review in a CSV (tokenised on whitespace and punctuation)."""
    from rankmixer.text.reviews import extract_triplets

    with user_errors():
        if on_bad_row not in ("fail", "skip"):
            raise ValueError(f"--on-bad-row must be fail or skip, not {on_bad_row!r}")
        report = extract_triplets(model, input, out, column, on_bad_row, batch_size)  # type: ignore[arg-type]
    console.print(f"wrote {report['written']:,} reviews with {report['triplets']:,} triplets to {out}; "
                  f"skipped {report['skipped']}, truncated {report['truncated']}")
