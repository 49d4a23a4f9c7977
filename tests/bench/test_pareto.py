"""bench pareto: the simplex grid, the hypervolume and front against brute force, and a tiny study
end to end (its report recomputed from the runs' own metrics)."""

import itertools
import json

import numpy as np
import pytest
import yaml

from rankmixer.bench.pareto import hypervolume, load_study, markdown_tables, nondominated, run_pareto, simplex_grid
from rankmixer.config import ConfigError, dump_config


def test_simplex_grid():
    assert simplex_grid(2, 0.25) == [[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]]
    three = simplex_grid(3, 0.5)
    assert len(three) == 7 and three[-1] == [1 / 3] * 3  # 6 grid points + the centroid
    assert all(sum(p) == pytest.approx(1) and min(p) >= 0 for p in three)
    with pytest.raises(ValueError, match="whole number"):
        simplex_grid(2, 0.3)


def _cells_dominated(points, ref):
    """Brute force on integer points: unit cells [x, x+1) x ... below ref dominated by a point."""
    count = 0
    for cell in itertools.product(*(range(int(r)) for r in ref)):
        if any(all(p[i] <= cell[i] for i in range(len(ref))) for p in points):
            count += 1
    return count


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_against_cell_counting(dims):
    pytest.importorskip("pymoo", reason="the pareto extra (pymoo) is not installed")
    rng = np.random.default_rng(dims)
    ref = np.full(dims, 8.0)
    pts = rng.integers(0, 9, size=(6, dims)).astype(float)  # some on or beyond the reference
    assert hypervolume(pts, ref) == pytest.approx(_cells_dominated([p for p in pts if (p < ref).all()], ref))


def test_nondominated_against_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 5, size=(30, 2)).astype(float)
    keep = nondominated(pts)
    for i, p in enumerate(pts):
        dominated = any((q <= p).all() and (q < p).any() for j, q in enumerate(pts) if j != i)
        assert keep[i] == (not dominated)


def test_unknown_study_and_keys_are_errors(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"studies": {"a": {"config": "x", "grid": 0.5}}}))
    with pytest.raises(ConfigError, match="not in"):
        load_study("b", suite)
    with pytest.raises(ConfigError, match=r"unknown keys \['grid'\]"):
        load_study("a", suite)


@pytest.mark.slow  # ~9 s; the grid, hypervolume, front and study checks above stay in the default suite
def test_tiny_study_end_to_end(tmp_path):
    pytest.importorskip("pymoo", reason="the pareto extra (pymoo) is not installed")
    from tests.train.test_bilevel import _mt_config

    exp = tmp_path / "tiny.yaml"
    dump_config(_mt_config(tmp_path, "unused"), exp)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"studies": {"tiny": {
        "config": str(exp), "overrides": ["train.max_steps=4"], "grid_step": 0.5, "floor": 0.2,
        "bilevel": {"every_steps": 2, "iterations": 2}}}}))
    out = tmp_path / "out"
    report = run_pareto("tiny", out, [1, 2], suite=suite, log=lambda *_: None)
    assert report["tasks"] == ["t0", "t1"]
    assert [p["setting"] for p in report["points"][:3]] == [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]
    assert len(report["runs"]) == 12  # (3 linear + 3 wc-mhgd settings) x 2 seeds
    # The ideal point is the lowest seed-mean validation NE of the linear grid, per task.
    lin = [r for r in report["runs"] if r["method"] == "linear"]
    for t, task in enumerate(report["tasks"]):
        means = [np.mean([r["valid"][f"{task}/ne"] for r in lin if r["setting"] == w]) for w in ([0.9, 0.1], [0.5, 0.5], [0.1, 0.9])]
        assert report["ideal"][t] == pytest.approx(min(means))
    # Every run's numbers are its own metrics.json's; each WC-MHGD run got the study's ideal.
    for r in report["runs"]:
        metrics = json.loads((out / "runs" / r["run_dir"].split("/")[-1] / "metrics.json").read_text())
        assert r["test"]["t1/ne"] == metrics["test"]["t1/ne"]
        cfg = yaml.safe_load((out / "runs" / r["run_dir"].split("/")[-1] / "config.yaml").read_text())
        if r["method"] == "wc-mhgd":
            assert cfg["train"]["bilevel"]["ideal"] == pytest.approx(report["ideal"])
            assert cfg["train"]["bilevel"]["preference"] == r["setting"]
        else:
            assert cfg["train"]["task_weights"] == pytest.approx([2 * x for x in r["setting"]])
    # Hypervolume per seed, recomputed from the runs.
    for method in ("linear", "wc-mhgd"):
        for k, seed in enumerate([1, 2]):
            pts = np.array([[r["test"]["t0/ne"], r["test"]["t1/ne"]] for r in report["runs"]
                            if r["method"] == method and r["seed"] == seed])
            assert report["hypervolume"][method]["per_seed"][k] == pytest.approx(hypervolume(pts, np.ones(2)))
    assert "| wc-mhgd |" in markdown_tables(report)
    assert (out / "pareto.png").stat().st_size > 0
