"""Writing a review-ranking set: impressions per split, the reviews table, schema and meta.

Files written into ``out_dir`` by :func:`generate`:

* ``train.parquet``, ``valid.parquet``, ``test.parquet``: the impressions (above
  ``rows_per_file`` rows, ``<split>-00000.parquet``, ...), written by
  :mod:`rankmixer.data.datasets.generated`: a file appears under its final name only when complete.
* ``reviews.parquet``: the reviews (item, text, source), written atomically before the splits.
* ``schema.yaml``: the impressions' schema (without review features).
* ``reviews_meta.json``: the config, the files and rows of each split, the label mean, the exact
  Bayes-optimal AUC / logloss of ``bayes_p``, the planted model's summary (its taste aspects,
  in the order of the ``taste_*`` columns). Written last: its presence marks a complete set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from rankmixer.core.files import atomic_file, write_text_atomic
from rankmixer.data.datasets.generated import read_meta, split_file_names, write_dataset
from rankmixer.data.datasets.reviews.columns import arrow_schema, column_names, reviews_schema, schema_dict
from rankmixer.data.datasets.reviews.config import BLOCK_ROWS, META_FILE, REVIEWS_FILE, SCHEMA_FILE, ReviewsConfig
from rankmixer.data.datasets.reviews.generator import Generator

OUTPUT_KIND = "reviews-data"  # the marker kind of a folder this generator wrote


def split_files(cfg: ReviewsConfig, split: str) -> list[str]:
    return split_file_names(split, cfg.rows(split), cfg.rows_per_file)


def blocks(gen: Generator, split: str):
    """The split's ``(record batch, p, click)`` blocks, ``BLOCK_ROWS`` rows each (the last shorter)."""
    rows, schema = gen.cfg.rows(split), arrow_schema(gen.cfg.n_aspects)
    for index, start in enumerate(range(0, rows, BLOCK_ROWS)):
        users, items, p, y = gen.impressions(split, index, min(BLOCK_ROWS, rows - start))
        taste = gen.taste[users]
        arrays = [pa.array(y.astype(np.int8)), pa.array(users.astype(str)), pa.array(items.astype(str)),
                  *(pa.array(taste[:, k]) for k in range(taste.shape[1])), pa.array(p)]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema), p, y


def write_reviews(gen: Generator, path: Path) -> None:
    table = pa.table({"item": gen.review_item.astype(str),
                      "text": [gen.corpus[j].text for j in gen.review_sentence],
                      "source": [gen.corpus[j].source for j in gen.review_sentence]}, schema=reviews_schema())
    compression = None if gen.cfg.compression == "none" else gen.cfg.compression
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression=compression)


def generate(cfg: ReviewsConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the files above into ``out_dir`` and return the meta. ``out_dir`` is new, empty or
    an earlier output of this generator (an OutputError otherwise). Memory: the reviews and
    profiles (small), one chunk of impressions and about 9 bytes per row of a split for the
    exact Bayes AUC."""
    cfg = ReviewsConfig.model_validate(cfg or {}) if not isinstance(cfg, ReviewsConfig) else cfg
    out_dir = Path(out_dir)
    gen: list[Generator] = []

    def make_generator() -> Generator:
        gen.append(Generator(cfg))
        return gen[0]

    def write_schema_and_reviews() -> None:  # called after make_generator, before the splits
        write_text_atomic(out_dir / SCHEMA_FILE, yaml.safe_dump(schema_dict(cfg.n_aspects), sort_keys=False))
        write_reviews(gen[0], out_dir / REVIEWS_FILE)

    return write_dataset(
        out_dir, cfg, name="reviews", kind=OUTPUT_KIND, meta_file=META_FILE, columns=column_names(cfg.n_aspects),
        schema=arrow_schema(cfg.n_aspects), make_generator=make_generator, blocks_of=blocks,
        write_schema=write_schema_and_reviews, progress=progress,
    )


def load_meta(out_dir: str | Path) -> dict:
    """The ``reviews_meta.json`` of a generated directory (see :func:`generate`)."""
    return read_meta(out_dir, META_FILE, "rankmixer.data.datasets.reviews.generate(cfg, out_dir)")
