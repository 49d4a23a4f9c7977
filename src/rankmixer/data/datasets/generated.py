"""Writing a generated data set: seeded blocks streamed into Parquet, with exact Bayes-optimal
metrics. Shared by the synthetic generators (``synthetic``, ``behaviour``, ``multitask``): :func:`write_dataset`
writes a whole set (schema, splits, meta), :func:`read_meta` reads its meta back, and
:class:`GeneratedPreset` is the dataset preset both put in front of their generator.

A split of ``rows`` rows is ``split.parquet``, or, above ``rows_per_file`` rows,
``split-00000.parquet``, ``split-00001.parquet``, ... (each at most ``rows_per_file`` rows, in
row order). Files of an earlier run with the same split name are removed first; a file appears
under its final name only when complete (written as ``.<name>.tmp``, then renamed).

:func:`write_split` consumes ``(record batch, p, label)`` blocks and returns the split's meta:
files, rows, label mean, mean of the true probability and the Bayes AUC / logloss of the true
probability against the realised labels. The AUC is exact over the whole split: it keeps p as
float32 and the labels (about 9 bytes per row and task with the AUC's sorted copy), so the
meta's AUC ranks float32 p (ties count 1/2). A multi-task set's blocks carry ``p`` and
``label`` as ``[n, T]``: the split's plain keys are then the first task's, and ``tasks`` holds
every task's.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankmixer.core.files import check_replaceable, output_lock, write_marker, write_text_atomic
from rankmixer.core.metrics import auc, logloss
from rankmixer.data.datasets.base import DatasetPreset, RawFiles

SPLITS = ("train", "valid", "test")

MAX_ROW_GROUP = 100_000
Compression = Literal["zstd", "snappy", "none"]


def blocks(split_rows: int, block_rows: int) -> Iterator[tuple[int, int]]:
    """(block index, rows in the block) covering ``split_rows`` rows in blocks of ``block_rows``:
    a generator draws block ``index`` of a split from a random stream of its own."""
    for index, start in enumerate(range(0, split_rows, block_rows)):
        yield index, min(block_rows, split_rows - start)


def split_file_names(split: str, rows: int, rows_per_file: int) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    n_files = -(-rows // rows_per_file)
    if n_files == 1:
        return [f"{split}.parquet"]
    return [f"{split}-{i:05d}.parquet" for i in range(n_files)]


def remove_split_files(out_dir: Path, split: str) -> None:
    """Remove the files of ``split`` that any earlier run may have left (either layout)."""
    for path in [out_dir / f"{split}.parquet", *out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet")]:
        path.unlink(missing_ok=True)


class SplitWriter:
    """Buffers record batches and writes them in chunks of ``chunk_rows`` rows, rolling over to
    a new file every ``rows_per_file`` rows. Files are written under a temporary name and
    renamed when complete; :meth:`abort` removes the temporaries."""

    def __init__(self, out_dir: Path, names: list[str], schema: pa.Schema, *, chunk_rows: int,
                 rows_per_file: int, compression: Compression):
        self.out_dir, self.names, self.schema = out_dir, names, schema
        self.chunk_rows, self.rows_per_file = chunk_rows, rows_per_file
        self.compression = None if compression == "none" else compression
        self.file_idx = 0
        self.in_file = 0
        self.buf: list[pa.RecordBatch] = []
        self.buf_rows = 0
        self.writer: pq.ParquetWriter | None = None

    def _tmp(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def _open(self) -> None:
        self.writer = pq.ParquetWriter(self._tmp(self.names[self.file_idx]), self.schema,
                                       compression=self.compression)

    def _flush(self) -> None:
        if not self.buf_rows:
            return
        assert self.writer is not None
        table = pa.Table.from_batches(self.buf, schema=self.schema)
        n_groups = -(-self.buf_rows // MAX_ROW_GROUP)
        self.writer.write_table(table, row_group_size=-(-self.buf_rows // n_groups))
        self.in_file += self.buf_rows
        self.buf, self.buf_rows = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            name = self.names[self.file_idx]
            self._tmp(name).replace(self.out_dir / name)
            self.file_idx += 1
            self.in_file = 0

    def add(self, batch: pa.RecordBatch) -> None:
        off = 0
        while off < batch.num_rows:
            if self.writer is None:
                self._open()
            room = min(self.rows_per_file - self.in_file, self.chunk_rows) - self.buf_rows
            piece = batch.slice(off, min(room, batch.num_rows - off))
            self.buf.append(piece)
            self.buf_rows += piece.num_rows
            off += piece.num_rows
            if self.in_file + self.buf_rows >= self.rows_per_file:
                self._close_file()
            elif self.buf_rows >= self.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for name in self.names:
            self._tmp(name).unlink(missing_ok=True)


def write_split(
    out_dir: Path,
    split: str,
    rows: int,
    blocks: Iterable[tuple[pa.RecordBatch, np.ndarray, np.ndarray]],
    schema: pa.Schema,
    *,
    chunk_rows: int,
    rows_per_file: int,
    compression: Compression,
    bar=None,
    tasks: list[str] | None = None,
) -> dict:
    """Write ``blocks`` (record batch, float64 p, 0/1 label; ``rows`` rows in all, in order)
    as the files of ``split`` and return the split's meta (see the module docstring). ``bar``:
    an optional tqdm bar, advanced by each block's rows. ``tasks``: the label names of a
    multi-task set, whose blocks carry ``p`` and ``label`` as ``[n, len(tasks)]``."""
    remove_split_files(out_dir, split)
    n_tasks = len(tasks) if tasks else 1
    p32 = np.empty((rows, n_tasks), dtype=np.float32)
    labels = np.empty((rows, n_tasks), dtype=bool)
    ll_sum, p_sum, n_pos = np.zeros(n_tasks), np.zeros(n_tasks), np.zeros(n_tasks, dtype=np.int64)
    start = 0
    writer = SplitWriter(out_dir, split_file_names(split, rows, rows_per_file), schema,
                         chunk_rows=chunk_rows, rows_per_file=rows_per_file, compression=compression)
    try:
        for batch, p, y in blocks:
            n = batch.num_rows
            p, y = p.reshape(n, n_tasks), y.reshape(n, n_tasks)
            p32[start : start + n] = p
            labels[start : start + n] = y
            for t in range(n_tasks):
                ll_sum[t] += logloss(y[:, t], p[:, t]) * n  # float64 p, the metrics module's clipping
                p_sum[t] += float(p[:, t].sum())
                n_pos[t] += int(y[:, t].sum())
            writer.add(batch)
            start += n
            if bar is not None:
                bar.update(n)
    except BaseException:
        writer.abort()  # never leave a partial file under a final name
        raise
    if start != rows:
        writer.abort()
        raise ValueError(f"split {split}: the blocks held {start} rows, expected {rows}")
    writer.close()
    per_task = []
    for t in range(n_tasks):
        bayes_auc = auc(labels[:, t], p32[:, t])
        per_task.append({
            "label_mean": float(n_pos[t]) / rows,
            "bayes_p_mean": float(p_sum[t]) / rows,
            "bayes_auc": None if math.isnan(bayes_auc) else bayes_auc,
            "bayes_logloss": float(ll_sum[t]) / rows,
        })
    meta = {"files": writer.names, "rows": rows, **per_task[0]}
    if tasks:
        meta["tasks"] = dict(zip(tasks, per_task, strict=True))
    return meta


Block = tuple[pa.RecordBatch, np.ndarray, np.ndarray]


def write_dataset(
    out_dir: Path,
    cfg: Any,
    *,
    name: str,
    kind: str,
    meta_file: str,
    columns: list[str],
    schema: pa.Schema,
    make_generator: Callable[[], Any],
    blocks_of: Callable[[Any, str], Iterable[Block]],
    write_schema: Callable[[], None],
    legacy: Callable[[Path], bool] | None = None,
    progress: bool = True,
    tasks: list[str] | None = None,
) -> dict:
    """Write a generated set into ``out_dir`` and return its meta: the schema
    (``write_schema()``), every split's files (``blocks_of(generator, split)``, sized by
    ``cfg.rows(split)`` and ``cfg``'s ``chunk_rows`` / ``rows_per_file`` / ``compression``) and,
    last, ``meta_file``, whose presence marks a complete set. ``out_dir`` is new, empty or an
    earlier output of this generator (marker ``kind``; ``legacy``: how to recognise one written
    before markers existed); anything else is refused with an OutputError. ``tasks``: the label
    names of a multi-task set (see :func:`write_split`); None = the one label ``click``."""
    check_replaceable(out_dir, kind, overwrite=True, legacy=legacy)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, kind)
    # The meta marks a complete data set: gone until this run has written every file.
    (out_dir / meta_file).unlink(missing_ok=True)
    t0 = time.perf_counter()
    gen = make_generator()
    t_setup = time.perf_counter() - t0
    write_schema()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(cfg.rows(s) for s in SPLITS), unit="rows", unit_scale=True, desc=name, file=sys.stderr)
    splits: dict[str, dict] = {}
    try:
        for split in SPLITS:
            if bar is not None:
                bar.set_description(f"{name} {split}", refresh=False)
            splits[split] = write_split(out_dir, split, cfg.rows(split), blocks_of(gen, split), schema,
                                        chunk_rows=cfg.chunk_rows, rows_per_file=cfg.rows_per_file,
                                        compression=cfg.compression, bar=bar, tasks=tasks)
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - t0
    meta = {
        "dataset": name,
        "format_version": 1,
        "config": cfg.model_dump(mode="json"),
        "columns": columns,
        "label": tasks[0] if tasks else "click",
        **({"labels": list(tasks)} if tasks else {}),
        "prob_column": "bayes_p",
        "splits": splits,
        "planted_model": gen.summary(),
        "generation_seconds": round(seconds, 3),
        "setup_seconds": round(t_setup, 3),
        "rows_per_second": round(sum(s["rows"] for s in splits.values()) / seconds, 1),
    }
    write_text_atomic(out_dir / meta_file, json.dumps(meta, indent=2))
    return meta


def read_meta(out_dir: str | Path, meta_file: str, how: str) -> dict:
    """The meta file of a generated directory; ``how``: how to generate one, for the error."""
    path = Path(out_dir) / meta_file
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the data first ({how})")
    return json.loads(path.read_text())


class GeneratedPreset(DatasetPreset):
    """A generator behind the dataset preset interface. Its raw files are generated on first use
    (into ``<prepared_dir>-raw`` unless ``data.raw`` says otherwise: beside, not inside, the
    prepared directory, which re-preparing empties), again only when the generator config
    changes; the planted model's Bayes-optimal metrics per split go into the feature map's
    ``extras["bayes"]``. A subclass names its config class (with ``rows(split)`` and
    ``rows_per_file``), its meta file, and its writer's ``generate(cfg, path)`` and
    ``load_meta(path)`` (as ``staticmethod``s: ``writer`` and ``meta_reader``)."""

    config_cls: type
    meta_file: str
    writer: Callable[..., Any]
    meta_reader: Callable[[Path], dict]

    def __init__(self, **options):
        self.cfg = self.config_cls.model_validate(options)

    def generate(self, path: Path) -> None:
        self.writer(self.cfg, path)

    def split_files(self, split: str) -> list[str]:
        return split_file_names(split, self.cfg.rows(split), self.cfg.rows_per_file)

    def load_meta(self, path: Path) -> dict:
        return self.meta_reader(path)

    def default_raw_path(self, prepared_dir: Path) -> Path:
        return Path(f"{prepared_dir}-raw")

    def _up_to_date(self, path: Path) -> bool:
        """Whether ``path`` holds this config's set. Compared as configs, so a set written before a
        config field with a default existed still counts as the same set."""
        meta = path / self.meta_file
        if not meta.exists():
            return False
        try:
            return self.config_cls.model_validate(json.loads(meta.read_text()).get("config")) == self.cfg
        except ValueError:  # a config this version cannot read: generate anew
            return False

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if not self._up_to_date(path):
            with output_lock(path):  # parallel first uses (searches on a fresh cache) generate once
                if not self._up_to_date(path):
                    self.generate(path)
        return RawFiles(by_split={s: [path / f for f in self.split_files(s)] for s in SPLITS})

    def extras(self, path: Path) -> dict:
        return self.extras_from(self.load_meta(path))

    def extras_from(self, meta: dict) -> dict:
        """The feature map's extras from the set's meta: the Bayes-optimal metrics per split
        (the first task's as ``auc`` / ``logloss``, and ``<task>/auc``, ``<task>/logloss`` for
        every task of a multi-task set)."""
        bayes = {}
        for s in SPLITS:
            split = meta["splits"][s]
            bayes[s] = {"auc": split["bayes_auc"], "logloss": split["bayes_logloss"]}
            for task, m in split.get("tasks", {}).items():
                bayes[s].update({f"{task}/auc": m["bayes_auc"], f"{task}/logloss": m["bayes_logloss"]})
        return {"bayes": bayes}
