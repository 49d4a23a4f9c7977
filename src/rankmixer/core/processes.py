"""Jobs in spawned worker processes (``concurrent.futures``): the one way benchmarks and searches
run independent trainings at once; and a process's memory as Linux reports it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

__all__ = ["process_memory_mb", "run_in_processes"]


def process_memory_mb(key: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A memory line of ``/proc/PID/status`` in MB (``VmRSS``: resident now, ``VmHWM``: its
    peak); None where it cannot be read (not Linux, or the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_in_processes(jobs: list[tuple[str, Callable[..., float], tuple]], processes: int,
                     log: Callable[[str], None]) -> None:
    """Run ``(label, function, args)`` jobs in ``processes`` spawned worker processes, in order
    of the list, logging each label with the seconds its function returns. A failed job stops
    the rest (after the jobs in flight end) and its error is raised here."""
    # spawn, not fork: CUDA and torch's thread pools do not survive a fork.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        running = {pool.submit(fn, *args): label for label, fn, args in jobs}
        for n, fut in enumerate(as_completed(running), start=1):
            if fut.exception() is not None:
                log(f"[{n}/{len(jobs)}] {running[fut]}: failed; stopping after the runs in flight")
                pool.shutdown(wait=True, cancel_futures=True)
                raise fut.exception()  # type: ignore[misc]
            log(f"[{n}/{len(jobs)}] {running[fut]}: finished in {fut.result():.0f}s")
