"""``bench cubicml`` end to end on a planted machine (no timing): the protocol, the report and a
rerun that reuses the history."""

from __future__ import annotations

import json

import pytest

from rankmixer.bench.cubicml import run_cubicml_bench
from rankmixer.system.history import read_history
from rankmixer.system.planted import PlantedMachine
from rankmixer.system.space import load_system_space

pytest.importorskip("sklearn")


def test_cubicml_bench_on_a_planted_machine(tmp_path):
    sp = load_system_space("cpu")
    machine = PlantedMachine(sp, seed=1, noise=0.02)
    origins = []

    def measure(space, settings, options=None, origin="x", on_record=None, log=print):
        origins.extend([origin] * len(settings))
        return machine.measure(space, settings, options, origin, on_record, log)

    history, out = tmp_path / "history.parquet", tmp_path / "cubicml.json"
    kw = dict(random_settings=30, model_size="large", budget=3, seeds=(0, 1), confirm=1, log=lambda *_: None,
              measure=measure, members=2, iterations=60)
    report = run_cubicml_bench(history, out=out, **kw)
    assert origins.count("random") == 30
    assert report["history"]["measured"] == 30 and len(report["predictor"]["per_seed"]) == 2
    assert report["predictor"]["spearman_speed"]["mean"] > 0.7
    for row in report["comparison"]["per_seed"]:
        assert len(row["search"]["measured"]) == 3 and len(row["random"]["measured"]) == 3
        assert row["search"]["setting"]["model_size"] == "large"
        # the ratios are of the confirmation medians, and the planted truth orders them too
        assert row["search_over_default"] == pytest.approx(
            row["search"]["confirmed_samples_per_s"] / row["default"]["confirmed_samples_per_s"])
        assert machine.true_speed(row["search"]["setting"]) >= machine.true_speed(row["default"]["setting"])
    assert report["runs_saved"]["exhaustive_runs"] == len(list(sp.grid({"model_size": "large"})))
    assert report["setup"]["cpu_flags"] is not None
    assert json.loads(out.read_text())["setup"]["budget"] == 3
    n = len(read_history(history))
    # a rerun measures no random setting again
    origins.clear()
    run_cubicml_bench(history, **kw)
    assert "random" not in origins and len(read_history(history)) > n
