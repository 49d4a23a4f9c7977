"""Training throughput of 1 vs N processes: real ``rankmixer train`` runs under torchrun.

Each case is a full training run of the same config for ``max_steps`` optimizer steps (global
batch = ``train.batch_size`` in every case, split across the ranks). Its samples/s is the median
of the trainer's logged windows after the first (start-up, first-touch of the tables). The
machine's cores are split between the processes (``train.threads = cores // N``), so a case never
oversubscribes the CPU: on a 2-core box, 2 processes have one core each. One process runs twice,
with one thread and with every core, so the N-process cases can be read against both. The load
average before each case is recorded: on a shared machine it says how much the numbers mean.
The report (``distributed.json``) holds the rows and the machine (CPU flags, load);
:func:`markdown_table` is its printed table.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from rankmixer.bench.accuracy import BENCH_KIND
from rankmixer.core.files import check_replaceable, write_marker
from rankmixer.core.hardware import device_name, machine_info


def _cases(procs: list[int], embeddings: list[str], cores: int) -> list[tuple[int, str, int]]:
    out: list[tuple[int, str, int]] = []
    for n in procs:
        if n == 1:
            out += [(1, "single", t) for t in sorted({1, cores})]
        else:
            out += [(n, mode, max(1, cores // n)) for mode in embeddings]
    return out


def run_distributed_bench(
    config: Path,
    procs: list[int],
    embeddings: list[str],
    max_steps: int,
    log_every: int,
    out_dir: Path,
    cores: int | None = None,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every case; return ``{"machine", "config", "max_steps", "log_every", "overrides", "rows"}``."""
    # Its own folder only (run directories and distributed.json): a folder of other files is refused.
    check_replaceable(out_dir, BENCH_KIND, overwrite=True, legacy=lambda p: (p / "distributed.json").is_file())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, BENCH_KIND)
    cores = cores or os.cpu_count() or 1
    machine = machine_info()
    rows = []
    for n, mode, threads in _cases(procs, embeddings, cores):
        run_dir = out_dir / f"p{n}-{mode}-t{threads}"
        # Each case is timed afresh: --overwrite replaces the case's own run of an earlier call.
        args = ["train", "-c", str(config), "--overwrite", f"run_dir={run_dir}", f"train.max_steps={max_steps}",
                f"train.log_every_steps={log_every}", f"train.threads={threads}",
                "train.progress=false", "train.tensorboard=false", *(overrides or [])]
        if n > 1:
            args.append(f"train.distributed.embeddings={mode}")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "rankmixer", *args]
        else:
            cmd = [sys.executable, "-m", "rankmixer", *args]
        log(f"+ {' '.join(cmd)}")
        load = round(os.getloadavg()[0], 1)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"case {n} process(es) / {mode} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
        recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train = [x for x in recs if x["split"] == "train"]
        if len(train) < 2:
            raise RuntimeError(f"{run_dir}: fewer than 2 logged windows; raise max_steps or lower log_every")
        sps = [x["samples_per_s"] for x in train[1:]]
        result = json.loads((run_dir / "metrics.json").read_text())
        rows.append({
            "processes": n, "embeddings": mode, "threads_per_process": threads, "load_avg_before": load,
            "samples_per_s": round(statistics.median(sps), 1), "windows": len(sps),
            "steps": result["steps"], "samples": result["samples"], "wall_s": round(wall, 1),
            "valid_auc": round(result["valid"]["auc"], 5), "cores": cores,
            "machine": device_name(torch.device("cpu")),
        })
    base = next((x["samples_per_s"] for x in reversed(rows) if x["processes"] == 1), None)  # all cores
    for x in rows:
        x["speedup_vs_1"] = None if base is None else round(x["samples_per_s"] / base, 2)
    return {"machine": machine, "loadavg_end": [round(v, 2) for v in os.getloadavg()], "config": str(config),
            "max_steps": max_steps, "log_every": log_every, "overrides": list(overrides or []), "rows": rows}


def markdown_table(report: dict) -> str:
    """The cases side by side; ``vs 1 proc`` is against one process with every core."""
    rows = report["rows"]
    base = next((x for x in reversed(rows) if x["processes"] == 1), None)
    vs = "vs 1 proc" + (f", {base['threads_per_process']} threads" if base else "")
    lines = [f"| procs | embeddings | threads / proc | samples/s | {vs} | valid AUC after {report['max_steps']} steps "
             "| wall s | load avg before |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mode = "single process" if r["embeddings"] == "single" else r["embeddings"]
        speed = "-" if r["speedup_vs_1"] is None else f"{r['speedup_vs_1']:.2f}"
        lines.append(f"| {r['processes']} | {mode} | {r['threads_per_process']} | {r['samples_per_s']:,.0f} | {speed} | "
                     f"{r['valid_auc']:.4f} | {r['wall_s']:.1f} | {r['load_avg_before']:.1f} |")
    return "\n".join(lines) + "\n"
