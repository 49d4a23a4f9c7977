"""Checkpoints: verify, then fall back. A damaged newest checkpoint (truncated, bit-flipped, a
file missing, state.json edited) is reported and the newest intact one is used; with none intact
it is an error that lists each; evaluate says when a run is incomplete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.factories import tiny_config


def _truncate(step: Path) -> None:
    f = step / "optim.safetensors"
    f.write_bytes(f.read_bytes()[:-64])


def _flip(step: Path) -> None:
    f = step / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))


def _remove(step: Path) -> None:
    (step / "model.safetensors").unlink()


def _edit_state(step: Path) -> None:
    # A plausible hand edit: valid JSON, every key present, only a number changed.
    f = step / "state.json"
    state = json.loads(f.read_text())
    state["trainer_state"]["step"] += 1000
    f.write_text(json.dumps(state, indent=2))


DAMAGE = {"truncated": (_truncate, "optim.safetensors"), "bit-flipped": (_flip, "model.safetensors"),
          "missing file": (_remove, "model.safetensors"), "edited state": (_edit_state, "state.json")}


def _model_and_optim(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    return model, {"dense": torch.optim.Adam(model.parameters(), lr=0.1)}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact(tmp_path, damage):
    from rankmixer.train.checkpoint import load_latest, save_checkpoint

    model, opts = _model_and_optim(0)
    save_checkpoint(tmp_path, 10, model=model, optimizers=opts, schedulers={}, trainer_state={"step": 10})
    reference = {k: v.clone() for k, v in model.state_dict().items()}  # what step 10 holds
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    newest = save_checkpoint(tmp_path, 20, model=model, optimizers=opts, schedulers={}, trainer_state={"step": 20})
    hurt, name = DAMAGE[damage]
    hurt(newest)

    fresh, fresh_opts = _model_and_optim(1)
    warnings = []
    path, state = load_latest(tmp_path, model=fresh, optimizers=fresh_opts, schedulers={}, warn=warnings.append)
    assert path.name == "step_00000010" and state == {"step": 10}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert len(warnings) == 1 and "step_00000020" in warnings[0] and name in warnings[0]


def test_no_intact_checkpoint_is_one_error_listing_each(tmp_path):
    from rankmixer.train.checkpoint import CheckpointError, load_latest, save_checkpoint

    model, opts = _model_and_optim(0)
    for step, hurt in ((1, _edit_state), (2, _flip)):
        hurt(save_checkpoint(tmp_path, step, model=model, optimizers=opts, schedulers={}, trainer_state={"step": step}))
    with pytest.raises(CheckpointError) as err:
        load_latest(tmp_path, model=model, optimizers=opts, schedulers={}, warn=lambda m: None)
    assert isinstance(err.value, ValueError)  # the CLI reports ValueErrors in one line, no traceback
    assert "step_00000001" in str(err.value) and "step_00000002" in str(err.value)


def test_resume_past_a_damaged_checkpoint_ends_as_the_uninterrupted_run(tmp_path):
    """Train 4 steps (checkpoints at 2 and 4), edit the newest state, resume: the run warns,
    goes on from step 2 and its final metrics equal the uninterrupted run's."""
    from rankmixer import experiment

    cfg = tiny_config(tmp_path)
    reference = experiment.train(cfg, log=lambda m: None)
    run = tmp_path / "run"
    (run / "metrics.json").unlink()  # as if killed after the last checkpoint
    _edit_state(run / "checkpoints" / "step_00000004")
    said = []
    resumed = experiment.train(cfg, resume=True, log=said.append)
    assert any("step_00000004 is unusable" in m and "state.json" in m for m in said)
    assert any("resumed from" in m and "step_00000002" in m for m in said)
    assert resumed["steps"] == reference["steps"] == 4
    for split in ("valid", "test"):
        assert resumed[split] == reference[split]


def test_evaluate_says_when_a_run_is_incomplete(tiny_copy):
    from rankmixer import experiment

    run = tiny_copy / "run"
    said = []
    experiment.evaluate(run, ("valid",), log=said.append)
    assert not any("incomplete" in m for m in said)
    (run / "metrics.json").unlink()
    said = []
    result = experiment.evaluate(run, ("valid",), log=said.append)
    assert "auc" in result["valid"] and any("incomplete" in m and "--resume" in m for m in said)
    (run / "best.safetensors").unlink()  # stopped before its first evaluation
    with pytest.raises(ValueError, match="before its first evaluation"):
        experiment.evaluate(run, ("valid",), log=lambda m: None)
