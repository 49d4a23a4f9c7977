"""``rankmixer features reviews``: a Parquet table of reviews (item, text) -> per-item features.

Reads the item and text columns (a missing one is an error naming it and the columns found),
extracts triplets with a trained GTS model (rankmixer.text.reviews.triplet_records: the same
tokenisation and ``max_len`` truncation as ``text extract``), aggregates them per item
(rankmixer.text.features) and writes, each atomically and never over an input:

* ``OUT`` (.parquet): one row per item;
* ``OUT`` with ``.schema.yaml``: the columns as schema features (:func:`schema_snippet`);
* ``OUT`` with ``.json``: the report: reviews, items, skips, truncations, triplets and the
  extraction's throughput (reviews/s over tokenising, the model and decoding).

Bad rows: a null item, or a null or blank text, is skipped and counted (the item of a skipped
review still gets a row); a text stored as bytes that are not UTF-8 is an error naming the
row, or with ``on_bad_row="skip"`` a counted skip (as ``text extract`` does for its lines).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from rankmixer.core.files import atomic_file, check_output, output_format, write_json, write_text_atomic
from rankmixer.core.hardware import machine_info
from rankmixer.text.artifact import load_model_dir
from rankmixer.text.features import aggregate, schema_snippet
from rankmixer.text.reviews import OnBadRow, ReviewInputError, triplet_records

__all__ = ["read_reviews_table", "review_features", "side_paths"]


def side_paths(out: Path | str) -> tuple[Path, Path]:
    """The schema snippet and the JSON report written beside ``out``."""
    out = Path(out)
    return out.with_suffix(".schema.yaml"), out.with_suffix(".json")


def read_reviews_table(path: Path | str, item_column: str, text_column: str,
                       on_bad_row: OnBadRow = "fail") -> tuple[list, list[str | None], dict]:
    """Items, texts (``None`` where skipped) and the skip counts of a reviews Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reviews file not found: {path}")
    try:
        names = pq.read_schema(path).names
    except pa.ArrowException as e:
        raise ReviewInputError(f"{path}: not a Parquet file ({e})") from e
    missing = [c for c in (item_column, text_column) if c not in names]
    if missing:
        raise ReviewInputError(f"{path}: no column {', '.join(map(repr, missing))} (found: {', '.join(names)}); "
                               "pass --item-column / --text-column")
    table = pq.read_table(path, columns=[item_column, text_column])
    text_type = table.schema.field(text_column).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
            or pa.types.is_binary(text_type) or pa.types.is_large_binary(text_type)):
        raise ReviewInputError(f"{path}: column {text_column!r} holds {text_type}, expected text")
    items = table.column(item_column).to_pylist()
    texts: list[str | None] = []
    skipped = {"null_item": 0, "empty": 0, "non_utf8": 0}
    for row, (item, text) in enumerate(zip(items, table.column(text_column).to_pylist())):
        if item is None:
            skipped["null_item"] += 1
            texts.append(None)
            continue
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                if on_bad_row == "fail":
                    raise ReviewInputError(f"{path} row {row}: byte {e.start + 1} of column {text_column!r} is not "
                                           "UTF-8 (re-encode it, or pass --on-bad-row skip)") from e
                skipped["non_utf8"] += 1
                texts.append(None)
                continue
        if text is None or not text.strip():
            skipped["empty"] += 1
            text = None
        texts.append(text)
    return items, texts, skipped


def review_features(model_dir: Path | str, reviews: Path | str, out: Path | str, item_column: str = "item",
                    text_column: str = "text", top_k: int = 20, max_terms: int = 8,
                    on_bad_row: OnBadRow = "fail", batch_size: int = 64) -> dict:
    """Write the per-item features of ``reviews`` to ``out`` (and the two files beside it);
    return the report (also the JSON beside ``out``)."""
    output_format(out, {".parquet": "parquet"}, "features output")
    snippet_path, report_path = side_paths(out)
    for target in (out, snippet_path, report_path):
        check_output(target, [reviews, model_dir], "features output")
    model, vocab, cfg = load_model_dir(model_dir)
    items, texts, skipped = read_reviews_table(reviews, item_column, text_column, on_bad_row)
    kept = [k for k, t in enumerate(texts) if t is not None]
    t0 = time.perf_counter()
    records, truncated = triplet_records(model, vocab, cfg.train.max_len, [texts[k] for k in kept], batch_size)
    seconds = time.perf_counter() - t0
    by_review = [(items[k], None) for k, t in enumerate(texts) if t is None and items[k] is not None]
    no_words = 0
    for k, record in zip(kept, records):
        if record is None:  # defensive: a non-blank text always has a token; counted as empty
            no_words += 1
        by_review.append((items[k], None if record is None else
                          [(t["aspect"], t["opinion"], t["sentiment"]) for t in record[1]]))
    skipped["empty"] += no_words
    features = aggregate(by_review, top_k, max_terms, item_column)
    snippet = schema_snippet(features, item_column)
    # explicit types: a column that is null on every row would otherwise be written as type null
    arrow = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    types = {c["name"]: arrow[c["type"]] for c in snippet["columns"]}
    with atomic_file(out) as tmp:
        pq.write_table(pa.table({name: pa.array(values, types.get(name)) for name, values in features.columns.items()}),
                       tmp)
    write_text_atomic(snippet_path, yaml.safe_dump(snippet, sort_keys=False))
    report = {
        "reviews": str(reviews), "model": str(model_dir), "output": str(out), "schema_snippet": str(snippet_path),
        "rows_read": len(items), "reviews_extracted": len(kept) - no_words, "items": len(features.columns[item_column]),
        "skipped": skipped, "truncated": truncated, "max_len": cfg.train.max_len,
        "triplets": sum(features.columns["review_triplets"]), "top_aspects": features.aspects,
        "extraction_seconds": round(seconds, 4), "reviews_per_second": round(len(kept) / seconds, 1) if seconds else None,
        "device": str(next(model.parameters()).device), "torch_threads": torch.get_num_threads(),
        "machine": machine_info(next(model.parameters()).device),
    }
    write_json(report_path, report, inputs=[reviews, model_dir], what="features report")
    return report
