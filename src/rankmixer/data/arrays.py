"""Prepared rows (a pyarrow table in the prepared layout) -> numpy arrays, per Batch field.

Shared by the training loader and the serving preprocessor, and free of torch so a serving
process that runs ONNX Runtime need not import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rankmixer.data.feature_map import GROUP_COLUMN, TIME_COLUMN, FeatureMap, teacher_column


def pad_lists(col: pa.Array | pa.ChunkedArray, max_len: int) -> np.ndarray:
    """list<int> column -> [n, max_len] int64, left-aligned, zero padded (0 is the pad id)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    out = np.zeros((n, max_len), dtype=np.int64)
    if n == 0:
        return out
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    lens = np.minimum(np.diff(offsets), max_len)
    rows = np.repeat(np.arange(n), lens)
    pos = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    out[rows, pos] = values[np.repeat(offsets[:-1], lens) + pos]
    return out


@dataclass
class Columns:
    """Which Parquet columns go into which Batch field."""

    sparse: list[str]
    dense: list[str]
    bags: dict[str, int]  # name -> max_len
    sequences: dict[str, int]
    labels: list[str]
    group: bool
    time: bool
    # behaviour name -> (max_len, its field columns in tensor order)
    behaviours: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    # Labels with a teacher prediction column (the others read as NaN in ``teacher``).
    teacher: list[str] = field(default_factory=list)

    @classmethod
    def from_feature_map(cls, fm: FeatureMap) -> "Columns":
        return cls(
            sparse=[f.name for f in fm.sparse],
            dense=[f.name for f in fm.dense],
            bags={f.name: f.max_len for f in fm.bags},
            sequences={f.name: f.max_len for f in fm.sequences},
            labels=list(fm.labels),
            group=fm.has_group,
            time=fm.has_time,
            behaviours={f.name: (f.max_len, f.columns[:-1]) for f in fm.behaviours},
            teacher=list(fm.teacher_labels),
        )

    def names(self) -> list[str]:
        cols = self.sparse + self.dense + list(self.bags) + list(self.sequences) + self.labels
        cols += [c for _, fields in self.behaviours.values() for c in fields]
        cols += [teacher_column(t) for t in self.teacher]
        return cols + ([GROUP_COLUMN] if self.group else []) + ([TIME_COLUMN] if self.time else [])


def _stack(table: pa.Table, names: list[str], dtype) -> np.ndarray:
    if not names:
        return np.zeros((table.num_rows, 0), dtype=dtype)
    return np.stack([table.column(n).to_numpy().astype(dtype, copy=False) for n in names], axis=1)


def table_to_arrays(table: pa.Table, cols: Columns) -> dict[str, np.ndarray]:
    """Arrays keyed by Batch field: ``sparse``, ``dense``, ``labels``, ``bag:<name>``,
    ``seq:<name>``, ``beh:<name>`` ([n, max_len, n_fields]), ``group`` and ``timestamp``."""
    arrays = {
        "sparse": _stack(table, cols.sparse, np.int64),
        "dense": _stack(table, cols.dense, np.float32),
        "labels": _stack(table, cols.labels, np.float32),
    }
    for name, max_len in cols.bags.items():
        arrays["bag:" + name] = pad_lists(table.column(name), max_len)
    for name, max_len in cols.sequences.items():
        arrays["seq:" + name] = pad_lists(table.column(name), max_len)
    for name, (max_len, fields) in cols.behaviours.items():
        # [n, max_len, n_fields]: the fields of a row have equal lengths, so their pads line up.
        arrays["beh:" + name] = np.stack([pad_lists(table.column(c), max_len) for c in fields], axis=2)
    if cols.group:
        arrays["group"] = table.column(GROUP_COLUMN).to_numpy().astype(np.int64, copy=False)
    if cols.time:
        arrays["timestamp"] = table.column(TIME_COLUMN).to_numpy().astype(np.int64, copy=False)
    if cols.teacher:  # [n, n_tasks], NaN where a row (or a task) has no teacher prediction
        arrays["teacher"] = np.stack([table.column(teacher_column(t)).to_numpy().astype(np.float32, copy=False)
                                      if t in cols.teacher else np.full(table.num_rows, np.nan, np.float32)
                                      for t in cols.labels], axis=1)
    return arrays
