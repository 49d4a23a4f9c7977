"""Serving Personalized Interpolation: two tiny conversion-window runs exported and bundled with
their delay rates; the server's score for a request's ``window_days`` against the two models'
own scores interpolated by hand, and the request errors."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.factories import app_client

OPTS = {"rows_train": 2_000, "rows_valid": 300, "rows_test": 300, "n_users": 50, "n_items": 40, "n_advertisers": 5,
        "seed": 4}


@functools.cache
def bundle() -> tuple[Path, list[dict]]:
    """(the interpolating artifact, canonical test rows as request candidates)."""
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.conversion.delays import fit_delay_rates, save_rates
    from rankmixer.data.datasets.base import get_preset
    from rankmixer.serve.export import export_run
    from rankmixer.serve.interpolation import export_interpolation

    work = Path(tempfile.mkdtemp(prefix="rankmixer-interp-"))
    raw = work / "raw"
    get_preset("conversions", **OPTS).raw_files(raw)
    arts = {}
    for days in (1, 7):
        cfg = load_config(None, [
            "data.dataset=conversions", f"data.preset_options={json.dumps({**OPTS, 'window_days': days})}",
            f"data.raw={raw}", f"data.prepared_dir={work / f'prep-{days}'}", f"run_dir={work / f'run-{days}'}",
            "model.name=dcnv2", "model.embedding_dim=4", "model.dnn_hidden=[8]", "train.max_steps=3",
            "train.batch_size=256", "train.early_stopping=null", "train.threads=1", "train.tensorboard=false",
            "train.progress=false", f"seed={days}",
        ])
        experiment.train(cfg, log=lambda m: None)
        arts[days] = export_run(work / f"run-{days}", "eager", work / f"art-{days}", log=lambda m: None)
    save_rates(fit_delay_rates(pl.read_parquet(raw / "train.parquet")), work / "rates.json")
    out = export_interpolation(arts[1], arts[7], work / "rates.json", work / "interp", short_days=1, long_days=7)
    test = pl.read_parquet(raw / "test.parquet").head(20)
    rows = test.select("advertiser", "user", "item", "context", "d0", "d1", "d2").to_dicts()
    return out, rows


def _by_hand(root: Path, rows: list[dict], window: float) -> np.ndarray:
    from rankmixer.conversion.delays import load_rates
    from rankmixer.serve.artifact import Artifact

    probs = {}
    for name in ("short", "long"):
        art = Artifact(root / name)
        probs[name] = art.score([art.preprocessor.check_row(r, "row") for r in rows])[0][:, 0].astype(np.float64)
    rates = load_rates(root / "delay_rates.json")
    table = {a: v["rate_per_day"] for a, v in rates["advertisers"].items()}
    beta = np.array([table.get(r["advertiser"], rates["global"]["rate_per_day"]) for r in rows])
    # alpha = (F(T_f) - F(1)) / (F(7) - F(1)), F(t) = 1 - exp(-beta t)
    F = lambda t: 1 - np.exp(-beta * t)  # noqa: E731
    alpha = (F(window) - F(1)) / (F(7) - F(1))
    return probs["short"] + alpha * (probs["long"] - probs["short"])


def test_server_interpolates_the_requested_window():
    root, rows = bundle()
    with app_client(root) as c:
        for window in (1, 2.5, 7):
            r = c.post("/v1/score", json={"candidates": rows, "window_days": window})
            assert r.status_code == 200, r.text
            got = np.array(r.json()["scores"]["conversion"])
            assert got == pytest.approx(_by_hand(root, rows, window), rel=1e-5, abs=1e-7)
        # a longer window never predicts fewer conversions (alpha grows with the window)
        short = np.array(c.post("/v1/score", json={"candidates": rows, "window_days": 2}).json()["scores"]["conversion"])
        longer = np.array(c.post("/v1/score", json={"candidates": rows, "window_days": 5}).json()["scores"]["conversion"])
        p_s, p_l = _by_hand(root, rows, 1), _by_hand(root, rows, 7)
        assert ((longer - short) * np.sign(p_l - p_s) >= -1e-7).all()


def test_window_errors():
    root, rows = bundle()
    with app_client(root) as c:
        r = c.post("/v1/score", json={"candidates": rows[:1]})
        assert r.status_code == 422 and r.json()["field"] == "window_days" and "within [1, 7]" in r.json()["detail"]
        r = c.post("/v1/score", json={"candidates": rows[:1], "window_days": 9})
        assert r.status_code == 422 and "window 9 days is outside the trained windows" in r.json()["detail"]
        for bad in ("soon", "3", True):  # a number, not text or a boolean
            r = c.post("/v1/score", json={"candidates": rows[:1], "window_days": bad})
            assert r.status_code == 422 and r.json()["field"] == "window_days", bad
    with app_client(root / "short") as c:  # a plain artifact takes no window
        r = c.post("/v1/score", json={"candidates": rows[:1], "window_days": 3})
        assert r.status_code == 422 and "does not interpolate" in r.json()["detail"]


def test_a_changed_rates_file_is_refused(tmp_path):
    import shutil

    from rankmixer.serve.artifact import ArtifactError
    from rankmixer.serve.interpolation import load_artifact

    root, _ = bundle()
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    rates = json.loads((copy / "delay_rates.json").read_text())
    rates["global"]["rate_per_day"] *= 2
    (copy / "delay_rates.json").write_text(json.dumps(rates))
    with pytest.raises(ArtifactError, match="delay_rates.json: sha256 differs"):
        load_artifact(copy)


def test_export_command(tmp_path):
    from typer.testing import CliRunner

    from rankmixer.cli import app
    from rankmixer.serve.interpolation import InterpolatingArtifact, load_artifact

    root, _ = bundle()
    args = ["conversion", "export", "--short", str(root / "short"), "--long", str(root / "long"), "--rates",
            str(root / "delay_rates.json"), "--short-days", "1", "--long-days", "7", "--out", str(tmp_path / "cli")]
    res = CliRunner().invoke(app, args, terminal_width=300)
    assert res.exit_code == 0, res.output
    art = load_artifact(tmp_path / "cli")
    assert isinstance(art, InterpolatingArtifact) and art.windows == (1.0, 7.0)
    res = CliRunner().invoke(app, args, terminal_width=300)  # already there: replaced only with --overwrite
    assert res.exit_code == 2 and "--overwrite" in res.output
    bad = [*args[:-6], "--short-days", "7", "--long-days", "1", "--out", str(tmp_path / "bad")]
    res = CliRunner().invoke(app, bad, terminal_width=300)
    assert res.exit_code == 2 and "0 < T_s < T_l" in res.output
