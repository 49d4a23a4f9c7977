"""Distributed training: real torchrun processes on the gloo backend (CPU).

Default suite (about a minute on 2 cores): N ranks == one process on the same global batch,
exactly (DDP and TorchRec-sharded tables, every sharding type CPU offers), tables placed on
both ranks; ``rankmixer train`` under torchrun against a one-process run of the same config.
Marked ``distributed`` (run with ``-m distributed``): kill a rank mid-run, then resume with a
different number of processes (2 -> 1 and 1 -> 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.factories import make_feature_map, random_batch
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.sharded_embedding import torchrec_available

HERE = Path(__file__).resolve().parent
TORCHREC, WHY_NOT = torchrec_available()
needs_torchrec = pytest.mark.skipif(not TORCHREC, reason=f"torchrec not importable ({WHY_NOT}); see docs/install.md")
SMALL = {"rows_train": 4000, "rows_valid": 1500, "rows_test": 1500, "n_users": 300, "n_items": 400,
         "vocab_max": 500, "n_tags": 50, "seq_len": 8}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(n: int, *args: str) -> list[str]:
    # --standalone: a local rendezvous on a free port, so parallel test runs do not collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]


def _config(tmp: Path, run: str, **train) -> Path:
    cfg = {
        "seed": 7,
        "run_dir": str(tmp / run),
        "data": {"dataset": "synthetic", "preset_options": SMALL, "prepared_dir": str(tmp / "prepared")},
        "model": {"name": "dcnv2", "embedding_dim": 8, "dnn_hidden": [64, 64], "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 64, "eval_batch_size": 1024, "checkpoint_every_steps": 20,
                  "log_every_steps": 10, "threads": 1, "progress": False, "tensorboard": False,
                  "distributed": {"timeout_s": 60}, **train},
    }
    path = tmp / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(n: int, cfg: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, "-m", "rankmixer"] if n == 1 else _torchrun(n, "-m", "rankmixer"))
    return subprocess.run([*cmd, "train", "-c", str(cfg), *extra], cwd=cfg.parent, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _train_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


# ---- in one process: the pieces -----------------------------------------------------------
def test_rows_per_rank_matches_what_each_rank_reads(tmp_path):
    """The equal-steps policy rests on rows_per_rank: check it against reading every rank."""
    from rankmixer.data.loader import ParquetBatches
    from rankmixer.experiment import prepare_data
    from rankmixer.config import load_config

    cfg = load_config(_config(tmp_path, "run"))
    fm = prepare_data(cfg.data, log=lambda m: None)
    for world in (2, 3):
        for epoch in (0, 1):
            counted = []
            for rank in range(world):
                data = ParquetBatches(fm, "train", 50, shuffle=True, seed=7, rank=rank, world_size=world)
                data.set_epoch(epoch)
                counted.append(sum(len(b) for b in data))
            data.set_epoch(epoch)
            assert data.rows_per_rank() == counted
            assert sum(counted) == fm.splits["train"].rows  # every row read once


@needs_torchrec
def test_torchrec_embedding_equals_feature_embedding(single_thread):
    """Unsharded (one process), the TorchRec twin gives FeatureEmbedding's values and gradients."""
    from rankmixer.nn.sharded_embedding import TorchRecFeatureEmbedding

    fm = make_feature_map(num_tasks=1)
    for dim in (8, 1):  # 1: stored 4 wide for fbgemm
        torch.manual_seed(0)
        plain = FeatureEmbedding(fm, dim)
        twin = TorchRecFeatureEmbedding(plain)
        batch = random_batch(fm, 32)
        a, b = plain(batch), twin(batch)
        assert a.field_names == b.field_names
        torch.testing.assert_close(b.fields, a.fields, rtol=0, atol=1e-7)
        for name in a.sequences:
            torch.testing.assert_close(b.sequences[name][0], a.sequences[name][0], rtol=0, atol=1e-7)
            assert torch.equal(b.sequences[name][1], a.sequences[name][1])
        w = torch.randn_like(a.fields)
        (a.fields * w).sum().backward()
        (b.fields * w).sum().backward()
        for s in twin.segments():  # table gradient rows == the fused gradient's rows
            g = twin.ec.embeddings[s.table].weight.grad
            torch.testing.assert_close(g[1:, :dim], plain.weight.grad[s.offset + 1 : s.offset + s.rows], rtol=0, atol=1e-6)
            assert float(g[0].abs().max()) == 0.0


# ---- 2 processes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def equivalence(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("eq") / "eq.json"
    r = subprocess.run(_torchrun(2, str(HERE / "distributed_equivalence.py"), str(out)),
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(out.read_text())


def _check_equivalent(r: dict) -> None:
    case = (r["mode"], r["sharding"], r["model"])
    # float32 sums in a different order: equal to ~1e-7, not bitwise.
    assert np.allclose(r["losses"], r["ref_losses"], rtol=0, atol=1e-6), case
    assert r["max_param_diff"] < 1e-5, case
    assert r["max_adagrad_state_diff"] < 1e-6, case
    assert r["resumed_loss_diff"] < 1e-6 and r["resumed_param_diff"] < 1e-5, case


def test_ddp_two_ranks_equal_one_process(equivalence):
    cases = [r for r in equivalence if r["mode"] == "ddp"]
    assert len(cases) == 2
    for r in cases:
        _check_equivalent(r)


@needs_torchrec
def test_torchrec_two_ranks_equal_one_process_tables_on_both_ranks(equivalence):
    cases = [r for r in equivalence if r["mode"] == "torchrec"]
    assert {(tuple(r["sharding"] or ()), r["model"]) for r in cases} >= {
        ((), "deepfm"), (("row_wise",), "dcnv2"), (("column_wise",), "deepfm")}
    for r in cases:
        _check_equivalent(r)
        # The shards each rank really holds after sharding (not the plan's intent): both ranks
        # hold tables, and every table's shards cover it exactly once.
        ranks = {p["rank"] for p in r["placement"]}
        assert ranks == {0, 1}, r["plan"]
        by_key: dict[str, int] = {}
        for p in r["placement"]:
            by_key[p["key"]] = by_key.get(p["key"], 0) + int(np.prod(p["sizes"]))
        assert len(by_key) >= 5
    for kind in ("row_wise", "column_wise"):  # forced: some table really split over both ranks
        r = next(r for r in cases if r["sharding"] == [kind])
        split = [k for k in {p["key"] for p in r["placement"]}
                 if {p["rank"] for p in r["placement"] if p["key"] == k} == {0, 1}]
        assert split, f"{kind} put no table on both ranks"


@pytest.mark.distributed  # two torchrun trainings; the DDP equivalence above stays in the default suite
def test_cli_train_under_torchrun_matches_one_process(tmp_path):
    """`rankmixer train` unchanged under torchrun: same loss curve (within the noise of a
    different row order: each rank reads its own row groups) and final metrics as one process."""
    one = _train(1, _config(tmp_path, "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(2, _config(tmp_path, "two"))
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-5000:]
    a, b = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    common = sorted(set(a) & set(b))
    assert len(common) >= 5
    diffs = np.array([a[s] - b[s] for s in common])
    assert np.abs(diffs).max() < 0.06 and abs(diffs.mean()) < 0.015, list(zip(common, diffs.round(4)))
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert abs(ma[split]["auc"] - mb[split]["auc"]) < 0.015, (split, ma[split], mb[split])
        assert abs(ma[split]["logloss"] - mb[split]["logloss"]) < 0.01, (split, ma[split], mb[split])
    assert mb["distributed"] == {"world_size": 2, "backend": "gloo", "embeddings": "torchrec" if TORCHREC else "ddp"}
    # Positives count the same rows; only one process saves predictions (gathered rows are in rank order).
    assert ma["positives"] == mb["positives"] and abs(ma["pooled"]["auc"] - mb["pooled"]["auc"]) < 0.015
    assert (tmp_path / "one" / "test_predictions.npz").is_file()
    assert not (tmp_path / "two" / "test_predictions.npz").exists()
    # rank 0 alone wrote the run directory, one line per message
    log = (tmp_path / "two" / "train.log").read_text()
    assert log.count("model dcnv2:") == 1 and "left out this epoch" in log
    plan = json.loads((tmp_path / "two" / "sharding_plan.json").read_text())
    if TORCHREC:
        assert {p["rank"] for p in plan["placement"]} == {0, 1}
        assert "sharding type" in (tmp_path / "two" / "sharding_plan.txt").read_text()


# ---- kill a rank, resume with another process count ---------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    ckpts = run_dir / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {ckpts} (process exited: {proc.poll()})")


@pytest.mark.distributed
def test_kill_one_rank_fails_clearly_then_resumes_with_one_process(tmp_path):
    cfg = _config(tmp_path, "run", epochs=2)
    proc = subprocess.Popen(_torchrun(2, "-m", "rankmixer", "train", "-c", str(cfg)), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoint(tmp_path / "run", proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)  # the later-started worker: rank 1
    out, _ = proc.communicate(timeout=90)  # no hang: torchrun stops the survivor (else TimeoutExpired)
    assert proc.returncode != 0
    assert "ChildFailedError" in out and "SIGKILL" in out, out[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists()

    r = _train(1, cfg, "--resume")  # 2 -> 1
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "written by 2 process(es), resuming with 1" in r.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] >= 2 * 60 and m["valid"]["auc"] > 0.6


@pytest.mark.distributed
def test_resume_one_process_checkpoint_with_two(tmp_path):
    cfg = _config(tmp_path, "run", epochs=2)
    proc = subprocess.Popen([sys.executable, "-m", "rankmixer", "train", "-c", str(cfg)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(tmp_path / "run", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = _train(2, cfg, "--resume")  # 1 -> 2
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert "resumed from" in r.stdout and "written by 1 process(es), resuming with 2" in r.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["distributed"]["world_size"] == 2 and m["valid"]["auc"] > 0.6
