"""A run directory has one owner: a second writer fails fast naming the holder, a dead
holder's lock is reported as stale, and a fresh run never lands on an old one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import tiny_config


def _hold_lock_in_child(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the run's lock and then waits (until killed)."""
    code = ("import sys, time\nfrom rankmixer.core.rundir import RunLock\n"
            "RunLock.acquire(sys.argv[1], 'train')\nprint('locked', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_fast_naming_the_holder(tmp_path):
    from rankmixer import experiment

    run = tmp_path / "run"
    holder = _hold_lock_in_child(run)
    try:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=rf"in use by .*pid {holder.pid} on host"):
            experiment.train(tiny_config(tmp_path), log=lambda m: None)
        assert time.monotonic() - t0 < 60  # failed at the lock, did not train first
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_reported_as_stale_and_taken_over(tmp_path):
    from rankmixer.core.rundir import RunLock

    run = tmp_path / "run"
    holder = _hold_lock_in_child(run)
    holder.send_signal(signal.SIGKILL)  # dies without releasing: the OS drops the flock
    holder.wait()
    lock = RunLock.acquire(run)
    try:
        assert lock.stale is not None and f"pid {holder.pid}" in lock.stale and "no longer running" in lock.stale
        said = []
        lock.report_stale(said.append)
        assert "did not finish" in said[0]
    finally:
        lock.release()
    assert RunLock.acquire(run).stale is None  # a clean release leaves no holder behind


def test_fresh_run_into_a_used_run_directory(tmp_path):
    from rankmixer import experiment
    from rankmixer.train.checkpoint import list_checkpoints

    cfg = tiny_config(tmp_path)
    experiment.train(cfg, log=lambda m: None)
    run = tmp_path / "run"
    first = json.loads((run / "metrics.json").read_text())
    (run / "notes.md").write_text("my notes on this run")
    with pytest.raises(ValueError, match="--resume .*--overwrite"):
        experiment.train(cfg, log=lambda m: None)
    assert json.loads((run / "metrics.json").read_text()) == first

    # --overwrite with a shorter run: no checkpoint of the old run is left for a later --resume.
    said = []
    short = tiny_config(tmp_path, "run", "train.max_steps=2")
    experiment.train(short, log=said.append, overwrite=True)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002"]
    assert (run / "notes.md").read_text() == "my notes on this run"
    assert any("kept files rankmixer did not write: notes.md" in m for m in said)
    assert experiment.train(short, resume=True, log=lambda m: None)["steps"] == 2


def test_resume_with_a_changed_config_names_the_keys(tmp_path):
    from rankmixer import experiment

    experiment.train(tiny_config(tmp_path), log=lambda m: None)
    changed = tiny_config(tmp_path, "run", "train.max_steps=6", "model.dnn_hidden=[16]")
    with pytest.raises(ValueError) as err:
        experiment.train(changed, resume=True, log=lambda m: None)
    msg = str(err.value)
    assert "train.max_steps: 4 in the run, 6 now" in msg and "model.dnn_hidden: [8] in the run, [16] now" in msg
