"""Measure settings: run each in a worker process and turn the outcome into a history record.

A record holds the setting, what was measured (training samples/s, peak resident memory, the
median step time), where (:func:`rankmixer.core.hardware.hardware_features` and its
fingerprint), when, and why a setting failed: an error inside the run (an unsupported precision,
a compile failure), a memory limit crossed (the worker is killed when its resident memory passes
it), a timeout, or an allocator that this machine does not have. Failed records stay in the
history and are left out of fitting.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankmixer.core.processes import process_memory_mb
from rankmixer.system.history import new_record
from rankmixer.system.space import Setting, SystemSpace, resolve_threads, setting_key

__all__ = ["MeasureOptions", "allocator_env", "measure_many", "measure_setting", "record_of"]

# glibc returns freed blocks above mmap_threshold to the kernel at once and trims the heap top
# above trim_threshold: a training step that frees and re-allocates the same large buffers
# then pays page faults every step. Raised thresholds keep them (mmap_threshold's maximum on
# 64-bit is 32 MiB).
_GLIBC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=268435456"


class MeasureOptions(dict):
    """How long a measurement runs: ``warmup`` untimed steps, then at least ``min_steps`` and
    ``min_seconds`` (at most ``max_steps``); ``timeout_s`` and ``memory_limit_mb`` kill it.
    ``auto_history``: where a run on ``auto`` kernels reads and keeps their timings (default:
    the user's, :func:`rankmixer.system.auto.default_history_path`)."""

    def __init__(self, warmup: int = 2, min_steps: int = 3, min_seconds: float = 1.5, max_steps: int = 30,
                 timeout_s: float = 300.0, memory_limit_mb: float | None = None, seed: int = 0,
                 auto_history: str | None = None) -> None:
        super().__init__(warmup=warmup, min_steps=min_steps, min_seconds=min_seconds, max_steps=max_steps,
                         timeout_s=timeout_s, memory_limit_mb=memory_limit_mb, seed=seed, auto_history=auto_history)


def allocator_env(allocator: str) -> tuple[dict[str, str], str | None]:
    """Environment entries that select ``allocator``, or a reason it is not available here."""
    if allocator == "glibc":
        return {}, None
    if allocator == "glibc-tuned":
        return {"GLIBC_TUNABLES": _GLIBC_TUNED}, None
    lib = ctypes.util.find_library(allocator)
    if lib is None:
        return {}, f"allocator {allocator}: lib{allocator} is not installed on this machine"
    return {"LD_PRELOAD": lib}, None


def _run_worker(spec: dict, env: dict[str, str], timeout_s: float, memory_limit_mb: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="rankmixer-measure-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, "-m", "rankmixer.system.worker", str(spec_file), str(out_file)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0, killed = time.monotonic(), None
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout_s:
                killed = f"timeout: still running after {timeout_s:.0f} s"
            rss = process_memory_mb("VmRSS", proc.pid) if memory_limit_mb is not None else None
            if rss is not None and rss > memory_limit_mb:
                killed = f"memory: resident {rss:.0f} MB passed the limit of {memory_limit_mb:.0f} MB"
            if killed:
                proc.kill()
                proc.wait()
                return {"status": "failed", "reason": killed}
            time.sleep(0.05)
        stderr = proc.stderr.read() if proc.stderr else ""
        if out_file.is_file():
            return json.loads(out_file.read_text())
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return {"status": "failed", "reason": f"worker exited with code {proc.returncode} and no result {tail}".strip()}


def measure_setting(space: SystemSpace, setting: Setting, options: MeasureOptions | None = None,
                    origin: str = "manual") -> dict:
    """Run ``setting`` once in a worker process and return its history record."""
    options = options or MeasureOptions()
    env_extra, unavailable = allocator_env(setting["allocator"])
    t0 = time.perf_counter()
    if unavailable:
        result: dict[str, Any] = {"status": "failed", "reason": unavailable}
    else:
        threads = resolve_threads(setting["threads"])
        env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if options.get("auto_history"):
            env["RANKMIXER_SYSTEM_HISTORY"] = str(options["auto_history"])
        spec = {"base": space.base, "overrides": space.overrides(setting), "compile": setting["compile"],
                **{k: options[k] for k in ("warmup", "min_steps", "min_seconds", "max_steps", "seed")}}
        result = _run_worker(spec, env, options["timeout_s"], options["memory_limit_mb"])
    return record_of(setting, result, origin, time.perf_counter() - t0)


def record_of(setting: Setting, result: dict, origin: str, wall_s: float) -> dict:
    """The history record of one measurement of ``setting``."""
    return new_record(setting_key(setting), dict(setting), origin, "train", result, round(wall_s, 2))


def measure_many(space: SystemSpace, settings: list[Setting], options: MeasureOptions | None = None,
                 origin: str = "manual", on_record: Callable[[dict], None] | None = None,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Measure ``settings`` one after another (never two at once: they would share the cores)."""
    out = []
    for i, s in enumerate(settings, 1):
        rec = measure_setting(space, s, options, origin)
        what = (f"{rec['samples_per_s']:.0f} samples/s, {rec['peak_rss_mb']:.0f} MB" if rec["status"] == "ok"
                else f"FAILED: {rec['reason']}")
        log(f"  [{i}/{len(settings)}] {rec['key']}: {what} ({rec['wall_seconds']:.1f} s)")
        if on_record is not None:
            on_record(rec)
        out.append(rec)
    return out
