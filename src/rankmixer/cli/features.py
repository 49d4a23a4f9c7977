"""Feature commands: ``features reviews`` (per-item review features from a trained GTS model)
and ``features amazon-reviews`` (Amazon review JSON lines -> the reviews table it reads)."""

from __future__ import annotations

from pathlib import Path

import typer

from rankmixer.cli.common import console, user_errors

__all__ = ["amazon_reviews", "reviews"]


def reviews(
    reviews: Path = typer.Option(..., "--reviews", help="Parquet table of reviews, one row per review."),
    model: Path = typer.Option(..., help="A model directory written by `rankmixer text train-gts`."),
    out: Path = typer.Option(..., help="Output .parquet, one row per item; the schema snippet (.schema.yaml) "
                                       "and the report (.json) are written beside it."),
    item_column: str = typer.Option("item", help="The column naming the reviewed item."),
    text_column: str = typer.Option("text", help="The column holding the review text."),
    top_k: int = typer.Option(20, min=0, help="Aspects (most frequent over the input) that get count columns."),
    max_terms: int = typer.Option(8, min=1, help="Most aspect and opinion terms kept per item in the "
                                                 "multi-categorical columns."),
    on_bad_row: str = typer.Option("fail", help="fail: stop at a text that is not UTF-8; skip: drop it and count."),
    batch_size: int = typer.Option(64, min=1, help="Reviews per forward pass."),
) -> None:
    """Per-item review features (aspect-sentiment counts, mean sentiment, top aspects, opinion
    terms) from the triplets a GTS model extracts."""
    from rankmixer.text.review_features import review_features

    with user_errors():
        if on_bad_row not in ("fail", "skip"):
            raise ValueError(f"--on-bad-row must be fail or skip, not {on_bad_row!r}")
        report = review_features(model, reviews, out, item_column, text_column, top_k, max_terms,
                                 on_bad_row, batch_size)  # type: ignore[arg-type]
    console.print(f"wrote {report['items']:,} items from {report['reviews_extracted']:,} reviews "
                  f"({report['triplets']:,} triplets) to {out}; skipped {report['skipped']}, "
                  f"truncated {report['truncated']}", soft_wrap=True)
    rate = report["reviews_per_second"]
    console.print(f"extraction: {report['extraction_seconds']:.2f} s, "
                  f"{'-' if rate is None else f'{rate:,.1f}'} reviews/s on {report['device']}", soft_wrap=True)


def amazon_reviews(
    input: Path = typer.Option(..., "--input", help="Amazon reviews as JSON lines (reviewerID, asin, reviewText, "
                                                    "overall, unixReviewTime); .gz is read compressed."),
    out: Path = typer.Option(..., help="Output .parquet: the reviews table (item, text, user, rating, time)."),
    on_bad_row: str = typer.Option("fail", help="fail: stop at a bad line, naming it; skip: drop it and count."),
) -> None:
    """Amazon review JSON lines -> the reviews table `features reviews` reads."""
    from rankmixer.data.datasets.reviews import write_amazon_reviews

    with user_errors():
        if on_bad_row not in ("fail", "skip"):
            raise ValueError(f"--on-bad-row must be fail or skip, not {on_bad_row!r}")
        report = write_amazon_reviews(input, out, on_bad_row)  # type: ignore[arg-type]
    skipped = report["skipped"]
    console.print(f"wrote {report['reviews']:,} reviews of {report['items']:,} items to {out}; "
                  f"skipped {skipped['bad_lines']} bad lines" + (f" (first: {skipped['first']})" if skipped["first"] else ""), soft_wrap=True)
