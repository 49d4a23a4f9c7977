"""Rows as a stream of Arrow record batches, one seeded block of ``BLOCK_ROWS`` rows at a time.

Block ``index`` of a split draws from its own random stream (``SPLIT_KEY[split], index``), so
the rows never depend on how they are written (``chunk_rows``, ``rows_per_file``), and since
the planted model's parameters do not depend on the row counts either, a larger
``rows_train`` keeps the first ``rows_train // BLOCK_ROWS`` blocks of a smaller one (scaling
studies grow a data set without changing what is already there).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankmixer.data.datasets.generated import blocks
from rankmixer.data.datasets.synthetic.config import BLOCK_ROWS, SyntheticConfig
from rankmixer.data.datasets.synthetic.generator import Generator, Rows
from rankmixer.data.datasets.synthetic.sampling import DAY_SHARD_KEY, SPLIT_KEY, seeded_rng, single_thread_blas


def block(gen: Generator, split: str, index: int, n: int) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Rows ``index * BLOCK_ROWS ..`` of ``split``: (record batch, p float64, label uint8). The
    shard of one training day (``train_day``) draws from streams of its own."""
    cfg = gen.cfg
    with single_thread_blas():
        if split == "train" and cfg.train_day is not None:
            rng = seeded_rng(cfg.seed, SPLIT_KEY[split], index, DAY_SHARD_KEY, cfg.train_day)
        else:
            rng = seeded_rng(cfg.seed, SPLIT_KEY[split], index)
        rows = gen.sample(rng, n)
        p = gen.prob(rows, cfg.row_days(split, index * BLOCK_ROWS, n))
        label = (rng.random(n) < p).astype(np.uint8)
        start = index * BLOCK_ROWS
        stamps = (cfg.row_times(split, start, n), cfg.request_ids(split, start, n)) if cfg.timestamps else None
        return record_batch(gen, rows, p, label, stamps), p, label


def record_batch(gen: Generator, rows: Rows, p: np.ndarray, label: np.ndarray,
                 stamps: tuple[np.ndarray, np.ndarray] | None = None) -> pa.RecordBatch:
    """The columns of :mod:`.columns` for sampled rows, their probabilities and labels (and
    (times, request ids), when the config writes them)."""
    cfg = gen.cfg
    arrays: list[pa.Array] = [pa.array(label.astype(np.int8))]
    for f in gen.fields:
        ids = pa.array(rows.ids[f.name])
        if cfg.id_type == "int":
            arrays.append(ids)
        elif f.name in gen.id_str:
            arrays.append(gen.id_str[f.name].take(ids))
        else:
            arrays.append(pc.cast(ids, pa.string()))
    for j in range(cfg.n_dense):
        arrays.append(pa.array(rows.dense[:, j], mask=rows.missing[:, j]))
    arrays.append(gen.item_tags_str.take(pa.array(rows.ids["item"])))
    lengths = np.diff(rows.hist_offsets)
    hist = pa.ListArray.from_arrays(
        pa.array(rows.hist_offsets.astype(np.int32)),
        gen.id_str["item"].take(pa.array(rows.hist)),
        mask=pa.array(lengths == 0),
    )
    arrays.append(pc.binary_join(hist, "|"))
    arrays.append(pa.array(p))
    if stamps is not None:
        arrays += [pa.array(stamps[0]), pa.array(stamps[1])]
    return pa.RecordBatch.from_arrays(arrays, schema=gen.arrow_schema)


def iter_batches(cfg: SyntheticConfig, split: str) -> Iterator[pa.RecordBatch]:
    """The rows of one split as Arrow record batches of ``BLOCK_ROWS`` rows, without files.

    Exactly the rows ``generate`` writes (same columns, same order).
    """
    gen = Generator(cfg)
    for index, n in blocks(cfg.rows(split), BLOCK_ROWS):
        yield block(gen, split, index, n)[0]
