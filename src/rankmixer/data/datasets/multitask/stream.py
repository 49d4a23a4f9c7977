"""Rows as Arrow record batches, one seeded block of ``BLOCK_ROWS`` rows at a time: block
``index`` of a split draws from its own stream (``SPLIT_KEY[split], index``), so the rows never
depend on the file layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankmixer.data.datasets.multitask.columns import arrow_schema
from rankmixer.data.datasets.multitask.generator import Generator
from rankmixer.data.datasets.synthetic.sampling import SPLIT_KEY, seeded_rng


def block(gen: Generator, split: str, index: int, n: int) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Rows ``index * BLOCK_ROWS ..`` of ``split``: (record batch, p [n, T] float64, labels [n, T] uint8)."""
    rng = seeded_rng(gen.cfg.seed, SPLIT_KEY[split], index)
    ids = gen.sample(rng, n)
    p = gen.prob(ids)
    labels = (rng.random(p.shape) < p).astype(np.uint8)
    T = len(gen.cfg.tasks)
    arrays = ([pa.array(labels[:, t].astype(np.int8)) for t in range(T)]
              + [pc.cast(pa.array(ids[:, f]), pa.string()) for f in range(gen.cfg.n_fields)]
              + [pa.array(p[:, t]) for t in range(T)])
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(gen.cfg)), p, labels
