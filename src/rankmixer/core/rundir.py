"""The run directory: its layout, its one owner (a lock), and a reader for what training left.

A run directory holds everything needed to understand and reuse a run::

    config.yaml          the resolved experiment config (parts merged, overrides applied)
    feature_map.json     the prepared data's feature map (vocab sizes, stats)
    checkpoints/         periodic checkpoints (safetensors) for --resume
    best.safetensors     weights with the best validation metric
    metrics.jsonl        training / validation log; metrics.json: final valid + test metrics
    test_predictions.npz the best model's test predictions (core/predictions.py)
    train.log            the console log
    tensorboard/         TensorBoard event files
    .lock                the lock of the process training it (see below)

Training writes it; evaluation, prediction, export and serving only read it, through here.

One owner: a training process holds an OS file lock (``flock``) on ``.lock`` for its whole
life, with its pid, host and start time written inside. A second writer fails at once with an
error naming the holder. The OS drops the lock when the holder dies, however it dies, so a lock
is never stuck; a ``.lock`` that still names a holder (it died without cleaning up) is reported
as stale and taken over. Under ``torchrun`` only rank 0 writes the directory, so only it locks.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rankmixer.core.files import MARKER_FILE
from rankmixer.core.yamlio import read_yaml_mapping

try:  # POSIX; elsewhere runs are not locked (documented in docs/reliability.md)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BEST_WEIGHTS", "CHECKPOINTS_DIR", "CONFIG_FILE", "DAY_WEIGHTS_DIR", "FEATURE_MAP_FILE", "LOCK_FILE",
    "MEASURED_AUTO_FILE", "METRICS_FILE", "METRICS_LOG", "RUN_KIND", "RUN_OUTPUTS", "RunDirError", "RunLock", "TEST_PREDICTIONS", "TRAIN_LOG", "clear_run", "foreign_entries",
    "lock_holder", "read_run_config", "run_entries",
]

CONFIG_FILE = "config.yaml"
FEATURE_MAP_FILE = "feature_map.json"
BEST_WEIGHTS = "best.safetensors"
METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"
TEST_PREDICTIONS = "test_predictions.npz"
TRAIN_LOG = "train.log"
MEASURED_AUTO_FILE = "measured_auto.json"  # the auto kernels the run's checkpoints were written under
DAY_WEIGHTS_DIR = "day_weights"  # streaming: the model after each day (train.streaming.keep_day_weights)
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = ".lock"
RUN_KIND = "run"  # the ownership marker's kind (core/files.py)
# Everything training writes: what --overwrite removes (and nothing else).
RUN_OUTPUTS = (CONFIG_FILE, FEATURE_MAP_FILE, CHECKPOINTS_DIR, BEST_WEIGHTS, METRICS_FILE, METRICS_LOG, TRAIN_LOG,
               TEST_PREDICTIONS, MEASURED_AUTO_FILE, DAY_WEIGHTS_DIR, "tensorboard", "sharding_plan.json", "sharding_plan.txt",
               "early_exit.json", "early_exit_curve.json")  # calibrate-exit (early_exit.py)


class RunDirError(ValueError):
    """A directory is not a (complete) run directory, or is in use; the message says why."""


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The raw config mapping a run was trained with (validated by whoever uses it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return read_yaml_mapping(run_dir / CONFIG_FILE, "run config")


# ---- contents ---------------------------------------------------------------------------------


def _ours(name: str) -> bool:
    # .tmp-* are the leftovers of an interrupted atomic write (core/files.py, core/weights.py).
    return name in RUN_OUTPUTS or name.startswith(".tmp-")


def run_entries(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` other than the lock and the ownership marker (empty if missing)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in (LOCK_FILE, MARKER_FILE))


def foreign_entries(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` that training does not write (left alone by :func:`clear_run`)."""
    return [n for n in run_entries(run_dir) if not _ours(n)]


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove what training wrote into ``run_dir`` (checkpoints, weights, logs, config ...),
    nothing else; returns the names removed. Call it holding the run's lock."""
    removed = []
    for name in run_entries(run_dir):
        if not _ours(name):
            continue
        p = Path(run_dir) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(name)
    return removed


# ---- the lock ---------------------------------------------------------------------------------


def _describe(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {when})"


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.strip():
        return None  # released cleanly
    try:
        info = json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "note": "unreadable lock file"}
    return info if isinstance(info, dict) else {"pid": "?", "host": "?"}


def _pid_alive(pid: Any) -> bool | None:
    """True/False for a pid on this host; None when it cannot be told."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


@dataclass
class RunLock:
    """The lock of one run directory, held until :meth:`release` (or the process ends).

    ``stale``: a description of the previous holder when it died without releasing (its pid
    and host, and whether that pid still runs here), for the caller to report; else None.
    """

    path: Path
    fd: int | None
    stale: str | None = None

    @classmethod
    def acquire(cls, run_dir: str | Path, command: str = "train") -> "RunLock":
        """Take the lock of ``run_dir`` (created if missing) or fail at once naming the holder."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        if fcntl is None:  # pragma: no cover
            return cls(path, None)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            info = _read_info(path) or {}
            what = info.get("command", "process")
            raise RunDirError(f"run directory {run_dir} is in use by another rankmixer {what}: {_describe(info)}; "
                              "wait for it to finish or choose another run_dir") from None
        stale = None
        previous = _read_info(path)
        if previous is not None:
            here = previous.get("host") == socket.gethostname()
            alive = _pid_alive(previous.get("pid")) if here else None
            state = {False: "no longer running", True: "that pid now belongs to another process",
                     None: "on another host"}
            stale = f"{_describe(previous)}, {state[alive]}"
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(path, fd, stale)

    def report_stale(self, log: Callable[[str], None]) -> None:
        if self.stale:
            log(f"warning: {self.path} was left by a process that did not finish ({self.stale}); taking it over")

    def release(self) -> None:
        """Empty the lock file (a clean release leaves no holder behind) and unlock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(run_dir: str | Path) -> str | None:
    """Who is training ``run_dir`` right now (a description), or None when nobody is."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _describe(_read_info(path) or {})
    finally:
        os.close(fd)
    return None
