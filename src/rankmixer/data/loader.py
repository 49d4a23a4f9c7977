"""Streaming batches from prepared Parquet shards.

Order of work, chosen so that memory is bounded and every step is vectorised:

1. The unit of reading is a Parquet row group (preparation writes small ones). The list of
   (file, row group) units is shuffled per epoch with a seeded generator, then dealt out to
   distributed ranks (balanced by row count, see ``_rank_units``) and to DataLoader workers
   round-robin, so no two readers read the same rows.
2. Each reader fills a window of ``shuffle_buffer`` rows, permutes it and emits full batches;
   the remainder (less than one batch) rolls into the next window. Columns stay numpy arrays
   the whole time: a permutation is one fancy-index per column, not a Python loop over rows.
3. Bags, sequences and behaviours are padded to their ``max_len`` once, when the row group is
   read.

Exact resume: for a given (seed, epoch, rank, world size, worker count) the batch stream is a
pure function of the data, so a resumed run re-reads the epoch and drops the batches it had
already consumed (in the consumer, so it stays exact whatever order workers finish in).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rankmixer.data.arrays import Columns, table_to_arrays
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap


def _arrays_to_batch(a: dict[str, np.ndarray]) -> Batch:
    t = torch.from_numpy
    return Batch(
        dense=t(a["dense"]),
        sparse=t(a["sparse"]),
        labels=t(a["labels"]),
        bags={k[4:]: t(v) for k, v in a.items() if k.startswith("bag:")},
        sequences={k[4:]: t(v) for k, v in a.items() if k.startswith("seq:")},
        group=t(a["group"]) if "group" in a else None,
        timestamp=t(a["timestamp"]) if "timestamp" in a else None,
        behaviours={k[4:]: t(v) for k, v in a.items() if k.startswith("beh:")},
        teacher=t(a["teacher"]) if "teacher" in a else None,
    )


class ParquetBatches(IterableDataset):
    """An iterable of :class:`Batch` over one split. Use with ``DataLoader(batch_size=None)``
    (see :func:`make_loader`); batching happens here, in numpy."""

    def __init__(
        self,
        feature_map: FeatureMap,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 65_536,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        day: int | None = None,
    ):
        # day: only that day's rows of the training split (data prepared by day, schema days).
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if day is not None and split != "train":
            raise ValueError(f"day partitions are of the train split, not {split!r}")
        self.files = [Path(p) for p in (feature_map.split_files(split) if day is None else feature_map.day_files(day))]
        self.cols = Columns.from_feature_map(feature_map)
        self.rows = feature_map.splits[split].rows if day is None else feature_map.day(day).rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._units = []
        self._unit_rows: dict[tuple[int, int], int] = {}
        for i, f in enumerate(self.files):
            meta = pq.ParquetFile(f).metadata
            for g in range(meta.num_row_groups):
                self._units.append((i, g))
                self._unit_rows[(i, g)] = meta.row_group(g).num_rows

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffled order to produce."""
        self.epoch = epoch

    def batches_per_epoch(self) -> int:
        """Approximate for several readers (each drops or keeps its own tail)."""
        rows = self.rows // self.world_size
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def rows_per_rank(self, num_workers: int = 0) -> list[int]:
        """Rows each rank reads in the current epoch (all its workers together), from the
        Parquet metadata alone. Distributed training cuts every rank to the same number of
        batches (see docs/distributed.md), which needs every rank's count up front."""
        readers = max(1, num_workers)
        out = []
        for rank in range(self.world_size):
            n = 0
            for worker in range(readers):
                units, rows = self._plan(worker, readers, rank=rank)
                n += sum(len(range(self._unit_rows[u])[rows]) for u in units)
            out.append(n)
        return out

    def _plan(self, worker: int, num_workers: int, rank: int | None = None) -> tuple[list[tuple[int, int]], slice]:
        """This reader's row groups, and which of their rows it keeps.

        Readers are (rank, worker) pairs. With at least as many row groups as readers each
        reader takes whole row groups; otherwise (small splits) every reader reads every row
        group and keeps every n-th row, so no reader is left idle.
        """
        units = list(self._units)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            units = [units[i] for i in rng.permutation(len(units))]
        if self.world_size > 1 and len(units) >= self.world_size:
            units = self._rank_units(units)[self.rank if rank is None else rank]
            if len(units) >= num_workers:
                return units[worker::num_workers], slice(None)
            return units, slice(worker, None, num_workers)
        readers = self.world_size * num_workers
        reader = (self.rank if rank is None else rank) * num_workers + worker
        if len(units) >= readers:
            return units[reader::readers], slice(None)
        return units, slice(reader, None, readers)

    def _rank_units(self, units: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Row groups per rank, balanced by rows: largest first, each to the rank with the fewest
        rows so far (ties: lowest rank). Distributed training runs every rank for the smallest
        rank's batch count, so the imbalance (at most about one row group) is what an epoch leaves
        out; round-robin dealing left out up to a row group per rank. Each rank keeps the epoch's
        shuffled order among its own row groups."""
        order = sorted(range(len(units)), key=lambda i: -self._unit_rows[units[i]])  # stable
        load = [0] * self.world_size
        owner = [0] * len(units)
        for i in order:
            r = min(range(self.world_size), key=lambda k: load[k])
            owner[i] = r
            load[r] += self._unit_rows[units[i]]
        return [[u for i, u in enumerate(units) if owner[i] == r] for r in range(self.world_size)]

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        units, rows = self._plan(worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        handles: dict[int, pq.ParquetFile] = {}
        pool: list[dict[str, np.ndarray]] = []
        pool_rows = 0
        for file_idx, group in units:
            pf = handles.get(file_idx) or handles.setdefault(file_idx, pq.ParquetFile(self.files[file_idx]))
            arrays = table_to_arrays(pf.read_row_group(group, columns=self.cols.names()), self.cols)
            if rows != slice(None):
                arrays = {k: v[rows] for k, v in arrays.items()}
            pool.append(arrays)
            pool_rows += len(arrays["labels"])
            if pool_rows >= self.shuffle_buffer:
                yield from self._drain(pool, rng, final=False)
                pool_rows = sum(len(p["labels"]) for p in pool)
        yield from self._drain(pool, rng, final=True)

    def _drain(self, pool: list[dict[str, np.ndarray]], rng: np.random.Generator, final: bool):
        """Emit the pool's full batches (all rows when ``final`` and not drop_last), leaving
        the remainder in ``pool``."""
        if not pool:
            return
        merged = {k: np.concatenate([p[k] for p in pool]) for k in pool[0]}
        n = len(merged["labels"])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        full = n // self.batch_size * self.batch_size
        pool.clear()
        if not final and full < n:
            pool.append({k: v[order[full:]] for k, v in merged.items()})
        stop = n if final and not self.drop_last else full
        for start in range(0, stop, self.batch_size):
            idx = order[start : min(start + self.batch_size, stop)]
            yield _arrays_to_batch({k: v[idx] for k, v in merged.items()})


def make_loader(dataset: ParquetBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader that runs the dataset in ``num_workers`` processes (0 = in this process)
    and prefetches, so reading overlaps training."""
    return DataLoader(
        dataset,
        batch_size=None,
        # DataLoader draws a base seed for every new iterator; from the global RNG that would
        # shift the model's dropout stream whenever an iterator starts (e.g. after a resume).
        # Our dataset seeds itself, so a private, fixed generator keeps the global RNG untouched.
        generator=torch.Generator().manual_seed(0),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
