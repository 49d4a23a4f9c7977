"""``rankmixer bench gts``: spec validation, the cells it runs, the summary against a hand
computation, and a tiny resumable end-to-end run through the CLI."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from rankmixer.bench.gts import cells, load_gts_spec, markdown_table, summarise
from rankmixer.cli import app
from rankmixer.config import ConfigError

runner = CliRunner()


def write_spec(tmp_path, body: str):
    path = tmp_path / "spec.yaml"
    path.write_text(body)
    return path


BASE = ("data_dir: {d}\ndatasets: [tiny]\nmodels:\n  gts-bilstm: {{encoder: bilstm}}\n"
        "  bio-bilstm: {{tagger: bio}}\nrounds: [0, 1]\n")


def test_the_packaged_spec_loads_and_names_its_cells():
    spec = load_gts_spec("gts")
    got = cells(spec, [0, 1, 2])
    assert len(got) == 4 * (2 * 3 + 3)  # two grid models at one k, the baseline without k; 3 seeds
    assert {c.rounds for c in got if c.model == "bio-bilstm"} == {None}
    assert got[0].run_name == "res14-gts-cnn-k1-seed0"
    assert cells(spec, [0], ["lap14"], ["gts-bilstm"], [0, 2])[1].config().model.rounds == 2


@pytest.mark.parametrize("body, message", [
    ("data_dir: x\ndatasets: [a]\nmodels: {m: {encoder: gru}}\nrounds: [1]\n", "model 'm'"),
    ("data_dir: x\ndatasets: [a]\nmodels: {m: {}}\nrounds: [-1]\n", "rounds"),
    ("data_dir: x\ndatasets: [a]\nmodels: {m: {}}\nrounds: [1]\ntrain: {epoch: 2}\n", "train"),
    ("data_dir: x\ndatasets: [a]\nmodels: {m: {}}\nrounds: [1]\npublished: {m: {triplet_f1: {a: 1}}}\n", "published"),
    ("data_dir: x\nmodels: {m: {}}\nrounds: [1]\n", "'datasets' is missing"),
    ("data_dir: x\ndatasets: [a]\nmodels: {m: {}}\nrounds: [1]\nseeds: 3\n", "seeds"),
])
def test_a_bad_spec_is_an_error_naming_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_gts_spec(write_spec(tmp_path, body))


def test_unknown_selections_are_errors():
    spec = load_gts_spec("gts")
    with pytest.raises(ConfigError, match="unknown dataset"):
        cells(spec, [0], ["res99"])
    with pytest.raises(ConfigError, match="unknown model"):
        cells(spec, [0], None, ["gts-bert"])


def run(dataset, model, rounds, seed, f1, pair, dev):
    score = lambda f: {"precision": f + 0.1, "recall": f - 0.1, "f1": f}  # noqa: E731
    return {"dataset": dataset, "model": model, "rounds": rounds, "seed": seed, "epochs_run": 10 + seed,
            "train_seconds": 1.0, "test": {"triplet": score(f1), "pair": score(pair)},
            "dev": {"triplet": score(dev)}}


def test_summary_against_statistics():
    results = [run("a", "m", 1, s, f, f + 0.05, f - 0.02) for s, f in enumerate([0.50, 0.56, 0.59])]
    results.append(run("a", "bio", None, 0, 0.3, 0.4, 0.3))
    rows = summarise(results, {"m": {"data": "v2", "triplet_f1": {"a": 61.0}}})
    m, bio = rows
    assert m["seeds"] == 3 and m["test_triplet_f1"] == pytest.approx(statistics.mean([0.50, 0.56, 0.59]))
    assert m["test_triplet_f1_sd"] == pytest.approx(statistics.stdev([0.50, 0.56, 0.59]))
    assert m["test_pair_f1"] == pytest.approx(0.60) and m["dev_triplet_f1"] == pytest.approx(0.53)
    assert m["test_triplet_precision"] == pytest.approx(0.65) and m["epochs"] == pytest.approx(11)
    assert m["published_triplet_f1"] == 61.0 and m["published_data"] == "v2"
    assert bio["test_triplet_f1_sd"] is None and bio["published_triplet_f1"] is None
    table = markdown_table({"rows": rows, "spec": {"published": {"m": {"data": "v2", "triplet_f1": {"a": 61.0}},
                                                                 "other": {"data": "v1", "triplet_f1": {"a": 70.0}}}}})
    assert "| a | m | 1 | 3 | 55.00 ± 4.58 |" in table and "61.00 (v2)" in table
    assert "| a | bio | — | 1 | 30.00 |" in table and "| a | other (published only) |" in table


def test_a_tiny_benchmark_runs_resumes_and_reports(tiny_aste, tmp_path):
    spec = write_spec(tmp_path, BASE.format(d=tiny_aste.parent)
                      + "train: {epochs: 1, max_len: 12, batch_size: 8}\n"
                      + "published: {gts-bilstm: {data: v2, triplet_f1: {tiny: 50.0}}}\n")
    args = ["bench", "gts", "--spec", str(spec), "--seeds", "2", "--out", str(tmp_path / "out")]
    r = runner.invoke(app, args + ["--models", "bio-bilstm"])
    assert r.exit_code == 0, r.output
    assert "0 of 2 runs done before; training 2" in r.output
    r = runner.invoke(app, args + ["--report-only"])
    assert r.exit_code == 0, r.output  # the grid runs are not finished: reported as missing
    assert "reporting 2 of 6 runs" in r.output
    r = runner.invoke(app, args + ["--rounds", "0"])
    assert r.exit_code == 0, r.output
    assert "2 of 4 runs done before; training 2" in r.output
    report = json.loads((tmp_path / "out" / "gts.json").read_text())
    assert [(row["model"], row["rounds"], row["seeds"]) for row in report["rows"]] == [
        ("gts-bilstm", 0, 2), ("bio-bilstm", None, 2)]
    assert report["machine"]["cpu_flags"] is not None and len(report["runs"]) == 4
    assert json.loads((tmp_path / "out" / "runs" / "tiny-gts-bilstm-k0-seed1" / "metrics.json").read_text())[
        "epochs_run"] == 1
    assert (tmp_path / "out" / "gts.md").read_text().startswith("| dataset | model |")


def test_missing_data_is_an_error_naming_the_directory(tmp_path):
    spec = write_spec(tmp_path, BASE.format(d=tmp_path / "nowhere"))
    r = runner.invoke(app, ["bench", "gts", "--spec", str(spec), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "nowhere" in r.output and "train.json" in r.output


@pytest.mark.slow
def test_runs_in_worker_processes_match_serial_runs(tiny_aste, tmp_path):
    spec = write_spec(tmp_path, BASE.format(d=tiny_aste.parent) + "train: {epochs: 1, max_len: 12, batch_size: 8}\n")
    reports = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        r = runner.invoke(app, ["bench", "gts", "--spec", str(spec), "--seeds", "2", "--rounds", "0", "--out", str(out),
                                "--processes", str(processes)])
        assert r.exit_code == 0, r.output
        reports.append(json.loads((out / "gts.json").read_text()))
    serial, parallel = ([(x["run"], x["test"]) for x in rep["runs"]] for rep in reports)
    assert serial == parallel


def test_an_unusable_device_is_a_user_error(tiny_aste, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = write_spec(tmp_path, BASE.format(d=tiny_aste.parent) + "train: {epochs: 1, max_len: 12}\n")
    r = runner.invoke(app, ["bench", "gts", "--spec", str(spec), "--seeds", "1", "--models", "bio-bilstm",
                            "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output
    r = runner.invoke(app, ["bench", "gts", "--spec", str(spec), "--out", str(tmp_path / "out"), "--device", "tpu9"])
    assert r.exit_code == 2 and "tpu9" in r.output


def test_an_output_at_the_data_or_the_spec_is_refused(tiny_aste, tmp_path):
    spec = write_spec(tmp_path, BASE.format(d=tiny_aste.parent) + "train: {epochs: 1, max_len: 12}\n")
    for out in (tiny_aste, tiny_aste.parent, tmp_path):
        r = runner.invoke(app, ["bench", "gts", "--spec", str(spec), "--seeds", "1", "--models", "bio-bilstm",
                                "--out", str(out), "--name", "train"])
        assert r.exit_code == 2 and "input" in r.output, out
    assert json.loads((tiny_aste / "train.json").read_text())  # untouched
