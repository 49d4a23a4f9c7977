"""Rows as a stream of Arrow record batches, one seeded block of ``BLOCK_ROWS`` rows at a time.

Block ``index`` of a split draws from its own random stream (``SPLIT_KEY[split], index``), so
the rows never depend on how they are written (``chunk_rows``, ``rows_per_file``), and a larger
split keeps every full block of a smaller one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankmixer.data.datasets.behaviour.columns import arrow_schema
from rankmixer.data.datasets.behaviour.config import BLOCK_ROWS, BehaviourConfig
from rankmixer.data.datasets.behaviour.generator import Generator, Rows
from rankmixer.data.datasets.generated import blocks
from rankmixer.data.datasets.synthetic.sampling import SPLIT_KEY, seeded_rng


def block(gen: Generator, split: str, index: int, n: int) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Rows ``index * BLOCK_ROWS ..`` of ``split``: (record batch, p float64, label uint8)."""
    rng = seeded_rng(gen.cfg.seed, SPLIT_KEY[split], index)
    rows = gen.sample(rng, n)
    p = gen.prob(rows)
    label = (rng.random(n) < p).astype(np.uint8)
    return record_batch(gen, rows, p, label), p, label


def _joined(offsets: pa.Array, empty: pa.Array, values: np.ndarray) -> pa.Array:
    """Per row, its slice of ``values`` as one "|"-joined string (null when empty)."""
    lists = pa.ListArray.from_arrays(offsets, pc.cast(pa.array(values), pa.string()), mask=empty)
    return pc.binary_join(lists, "|")


def record_batch(gen: Generator, rows: Rows, p: np.ndarray, label: np.ndarray) -> pa.RecordBatch:
    """The columns of :mod:`.columns` for sampled rows, their probabilities and labels."""
    h, cat = rows.hist, gen.catalog
    offsets = pa.array(h.offsets.astype(np.int32))
    empty = pa.array(np.diff(h.offsets) == 0)
    arrays = [
        pa.array(label.astype(np.int8)),
        pc.cast(pa.array(rows.user), pa.string()),
        pc.cast(pa.array(rows.item), pa.string()),
        pc.cast(pa.array(cat.category_of(rows.item)), pa.string()),
        _joined(offsets, empty, h.item),
        _joined(offsets, empty, cat.category_of(h.item)),
        _joined(offsets, empty, h.type),
        _joined(offsets, empty, h.dt),
        pa.array(p),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema())


def iter_batches(cfg: BehaviourConfig, split: str) -> Iterator[pa.RecordBatch]:
    """The rows of one split as Arrow record batches of ``BLOCK_ROWS`` rows, without files.

    Exactly the rows ``generate`` writes (same columns, same order).
    """
    gen = Generator(cfg)
    for index, n in blocks(cfg.rows(split), BLOCK_ROWS):
        yield block(gen, split, index, n)[0]
