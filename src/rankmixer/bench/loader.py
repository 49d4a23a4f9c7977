"""Loader throughput: samples/s of reading, shuffling and batching alone, no model."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable

import torch

from rankmixer.core.hardware import device_name
from rankmixer.data.config import DataConfig
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches, make_loader


def run_loader_bench(
    dataset: str,
    prepared: Path | None,
    batch_size: int,
    workers: list[int],
    max_batches: int,
    log: Callable[[str], None] = print,
) -> list[dict]:
    if prepared is not None:
        fm = FeatureMap.load(prepared)
    else:
        from rankmixer.experiment import prepare_data

        fm = prepare_data(DataConfig(dataset=dataset), log=log)
    rows = []
    for w in workers:
        data = ParquetBatches(fm, "train", batch_size, shuffle=True, seed=0)
        loader = make_loader(data, num_workers=w)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0, n, b = time.perf_counter(), 0, 0
        for batch in itertools.islice(it, max_batches):
            n += len(batch)
            b += 1
        dt = time.perf_counter() - t0
        rows.append({"dataset": fm.dataset, "workers": w, "batch_size": batch_size, "batches": b,
                     "samples": n, "seconds": round(dt, 3), "samples_per_s": round(n / dt, 1),
                     "torch_threads": torch.get_num_threads(), "machine": device_name(torch.device("cpu"))})
    return rows
