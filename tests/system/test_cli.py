"""``rankmixer tune-system``: errors reach the user as messages, not tracebacks."""

from __future__ import annotations

from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.system.history import append_records
from rankmixer.system.planted import PlantedMachine
from rankmixer.system.space import load_system_space


def _run(*args: str):
    return CliRunner().invoke(app, ["tune-system", *args], terminal_width=200)


def test_usage_errors_are_messages(tmp_path):
    history = tmp_path / "history.parquet"
    sp = load_system_space("cpu")
    append_records(history, PlantedMachine(sp).measure(sp, sp.draw(3, 0), log=lambda *_: None))
    res = _run("fit", "--history", str(history))
    assert res.exit_code != 0 and "needs at least 15 successful measurements" in res.output
    res = _run("search", "--history", str(history), "--fix", "batch_size=512")
    assert res.exit_code != 0 and "--fix model_size=NAME is required" in res.output
    res = _run("search", "--history", str(history), "--fix", "model_size=huge")
    assert res.exit_code != 0 and "model_size='huge' is not a choice" in res.output
    res = _run("measure", "--space", "nope", "--history", str(history))
    assert res.exit_code != 0 and "no system space 'nope'" in res.output
    assert "Traceback" not in res.output
