"""Outputs never destroy inputs or foreign files: data prepare, export, predict (and the
core/files.py guard they share)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from tests.factories import movielens_folder


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha256 of its bytes (the reference: what must not change)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- data prepare ---------------------------------------------------------------------------


def test_prepare_into_the_raw_folder_is_refused_and_the_raw_files_survive(tmp_path):
    from rankmixer.data.config import DataConfig
    from rankmixer.experiment import prepare_data

    raw = movielens_folder(tmp_path / "ml")
    before = _snapshot(raw)
    for out in (raw, tmp_path):  # --out D with --raw D; an --out that contains the raw folder
        with pytest.raises(ValueError, match="input"):
            prepare_data(DataConfig(dataset="movielens-latest", raw=str(raw), prepared_dir=str(out)), log=lambda m: None)
        assert _snapshot(raw) == before


def test_prepare_never_empties_a_folder_it_did_not_write(tmp_path):
    from rankmixer.data.config import DataConfig
    from rankmixer.experiment import prepare_data

    raw = movielens_folder(tmp_path / "ml")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    data = DataConfig(dataset="movielens-latest", raw=str(raw), prepared_dir=str(out))
    with pytest.raises(ValueError, match="did not write"):
        prepare_data(data, log=lambda m: None)
    assert (out / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ValueError, match="did not write"):
        prepare_data(data, log=lambda m: None, force=True)  # not even with --force
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_prepare_refreshes_its_own_output_and_replaces_another_dataset_only_with_force(tmp_path):
    from rankmixer.data.config import DataConfig
    from rankmixer.data.prepare import PREPARED_KIND
    from rankmixer.experiment import prepare_data
    from tests.factories import TINY_DATA

    raw = movielens_folder(tmp_path / "ml")
    out = tmp_path / "prep"
    ml = DataConfig(dataset="movielens-latest", raw=str(raw), prepared_dir=str(out))
    fm = prepare_data(ml, log=lambda m: None)
    assert fm.splits["train"].rows + fm.splits["valid"].rows + fm.splits["test"].rows == 60
    # A changed raw file: the cache (ours, same dataset) is refreshed without asking.
    (raw / "ratings.csv").write_text((raw / "ratings.csv").read_text() + "13,1,5.0,1000000\n")
    fm = prepare_data(ml, log=lambda m: None)
    assert fm.root == out and sum(s.rows for s in fm.splits.values()) == 61
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers
    syn = DataConfig(dataset="synthetic", preset_options=TINY_DATA, prepared_dir=str(out))
    with pytest.raises(ValueError, match="force"):
        prepare_data(syn, log=lambda m: None)
    assert prepare_data(syn, log=lambda m: None, force=True).dataset == "synthetic"
    from rankmixer.core.files import marker_kind

    assert marker_kind(out) == PREPARED_KIND


def _run_while_held(target: Path, calls):
    """Start each of ``calls`` in a thread while this thread holds ``target``'s output lock;
    return the threads, the events they set when done, the errors they raised and the lock (held:
    the caller releases it with ``__exit__``)."""
    import threading
    import time

    from rankmixer.core.files import output_lock

    events, errors, threads = [], [], []
    for call in calls:
        done = threading.Event()

        def run(call=call, done=done):
            try:
                call()
            except BaseException as e:  # reported by the test
                errors.append(e)
            done.set()

        events.append(done)
        threads.append(threading.Thread(target=run))
    lock = output_lock(target)
    lock.__enter__()
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    return threads, events, errors, lock


def test_concurrent_first_uses_generate_and_prepare_a_set_once(tmp_path):
    """Processes that first use the same generated set at once (parallel searches on a fresh
    cache) take turns: a later one waits and reuses the files instead of writing over them (a
    fixed temp name written by both used to break every one)."""
    from rankmixer.data.config import DataConfig
    from rankmixer.data.datasets.base import get_preset
    from rankmixer.data.datasets.synthetic.config import META_FILE
    from rankmixer.experiment import prepare_data

    options = {"rows_train": 3000, "rows_valid": 500, "rows_test": 500, "n_dense": 2}
    raw = tmp_path / "raw"
    preset = get_preset("synthetic", **options)
    threads, events, errors, lock = _run_while_held(raw, [lambda: preset.raw_files(raw)])
    assert not events[0].is_set() and not raw.exists()  # the second user waits for the holder
    preset.generate(raw)  # the holder writes the set
    stamp = (raw / META_FILE).stat().st_mtime_ns
    lock.__exit__(None, None, None)
    threads[0].join(60)
    assert events[0].is_set() and not errors
    assert (raw / META_FILE).stat().st_mtime_ns == stamp  # reused, not written again

    data = DataConfig(dataset="synthetic", preset_options=options, raw=str(raw), prepared_dir=str(tmp_path / "prep"))
    logs: list[list[str]] = [[], []]
    threads, events, errors, lock = _run_while_held(
        data.prepared_path(), [lambda log=log: prepare_data(data, log=log.append) for log in logs])
    assert not any(e.is_set() for e in events) and not data.prepared_path().exists()
    lock.__exit__(None, None, None)
    for thread in threads:
        thread.join(120)
    assert all(e.is_set() for e in events) and not errors
    reused = [any(m.startswith("reusing prepared data") for m in log) for log in logs]
    assert sorted(reused) == [False, True], logs  # one prepared, the other waited and reused


# ---- export ---------------------------------------------------------------------------------


def test_export_onto_the_run_is_refused_and_the_run_survives(tiny_copy):
    from rankmixer.serve.export import export_run

    run = tiny_copy / "run"
    before = _snapshot(run)
    for out in (run, run / "artifact", tiny_copy):  # is, lies inside, contains the run
        with pytest.raises(ValueError, match="input"):
            export_run(run, "eager", out, log=lambda m: None)
        assert _snapshot(run) == before


def test_export_never_replaces_foreign_files_and_replaces_its_own_only_when_asked(tiny_copy):
    from rankmixer.serve.artifact import Artifact
    from rankmixer.serve.export import export_run

    run, out = tiny_copy / "run", tiny_copy / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="did not write"):
        export_run(run, "eager", out, overwrite=True, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]

    art = tiny_copy / "art"  # an artifact exported earlier
    before = _snapshot(art)
    with pytest.raises(ValueError, match="--overwrite"):
        export_run(run, "eager", art, log=lambda m: None)
    assert _snapshot(art) == before
    export_run(run, "eager", art, version="v2", overwrite=True, log=lambda m: None)
    assert Artifact(art).version == "v2"


# ---- predict --------------------------------------------------------------------------------


def test_predict_never_overwrites_its_input_and_format_follows_the_suffix(tiny_copy, tiny_root):
    from rankmixer.experiment import predict

    run = tiny_copy / "run"
    src = sorted((tiny_root / "prep" / "test").glob("*.parquet"))[0]
    inp = tiny_copy / "rows.parquet"
    inp.write_bytes(src.read_bytes())
    before = _snapshot(tiny_copy)
    with pytest.raises(ValueError, match="input"):
        predict(run, inp, inp)
    with pytest.raises(ValueError, match=r"\.txt"):
        predict(run, inp, tiny_copy / "scores.txt")
    assert not (tiny_copy / "scores.txt").exists() and _snapshot(tiny_copy) == before

    out = tiny_copy / "scores.csv"
    n = predict(run, inp, out)
    assert n == 200 and pl.read_csv(out).columns == ["click_prob", "click"]
    with pytest.raises(ValueError, match="--overwrite"):
        predict(run, inp, out)
    assert predict(run, inp, out, overwrite=True) == 200

    ours = tiny_copy / "scores.parquet"  # Parquet predictions: recognised as ours by their metadata
    assert predict(run, inp, ours) == 200
    with pytest.raises(ValueError, match="--overwrite"):
        predict(run, inp, ours)
    assert predict(run, inp, ours, overwrite=True) == 200

    mine = tiny_copy / "notes.parquet"  # a Parquet file rankmixer did not write
    pl.DataFrame({"a": [1]}).write_parquet(mine)
    with pytest.raises(ValueError, match="not a prediction file"):
        predict(run, inp, mine, overwrite=True)
    assert pl.read_parquet(mine)["a"].to_list() == [1]


# ---- the guard itself -------------------------------------------------------------------------


def test_check_output_sees_through_links(tmp_path):
    from rankmixer.core.files import OutputError, check_output

    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("a\n1\n")
    os.symlink(data, tmp_path / "alias")
    os.link(data / "x.csv", tmp_path / "hard.csv")
    for out, inp in [(tmp_path / "alias", data), (tmp_path / "alias" / "sub", data), (tmp_path, data / "x.csv"),
                     (tmp_path / "hard.csv", data / "x.csv")]:
        with pytest.raises(OutputError):
            check_output(out, [inp])
    check_output(tmp_path / "elsewhere", [data, data / "x.csv"])


def test_atomic_directory_keeps_the_old_output_when_writing_fails(tmp_path):
    from rankmixer.core.files import atomic_directory

    out = tmp_path / "out"
    with atomic_directory(out, "thing") as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(out, "thing", overwrite=True) as tmp:
            (tmp / "a.txt").write_text("second, half")
            raise RuntimeError("disk full")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_synthetic_generator_writes_only_into_its_own_folders(tmp_path):
    """`rankmixer data synthetic DIR` (and the synthetic preset) never deletes a user's files: a
    folder of other files is refused, its own earlier output is regenerated."""
    from rankmixer.core.files import OutputError
    from rankmixer.data.datasets import synthetic

    small = {"rows_train": 300, "rows_valid": 100, "rows_test": 100, "n_users": 20, "n_items": 60,
             "vocab_max": 50, "n_categorical": 3, "n_dense": 1, "n_tags": 5, "seq_len": 3}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.parquet").write_bytes(b"my own data")
    with pytest.raises(OutputError, match="did not write"):
        synthetic.generate(small, mine, progress=False)
    assert (mine / "train.parquet").read_bytes() == b"my own data"

    out = tmp_path / "syn"
    first = synthetic.generate(small, out, progress=False)
    again = synthetic.generate({**small, "seed": 7}, out, progress=False)
    assert first["config"]["seed"] != again["config"]["seed"] and synthetic.load_meta(out)["config"]["seed"] == 7


def test_a_json_report_never_replaces_an_input(tiny_copy):
    """Benchmark reports go through core.files.write_json: pointed at a file the command read
    (here `bench serve --json-out` at the artifact's manifest), it is refused before the
    benchmark runs and the input is untouched."""
    from typer.testing import CliRunner

    from rankmixer.cli import app
    from rankmixer.core.files import OutputError, write_json

    manifest = tiny_copy / "art" / "manifest.json"
    before = manifest.read_bytes()
    with pytest.raises(OutputError, match="is also an input"):
        write_json(manifest, {"x": 1}, inputs=[manifest])
    with pytest.raises(OutputError, match="lies inside the input"):
        write_json(manifest, {"x": 1}, inputs=[tiny_copy / "art"])
    res = CliRunner().invoke(app, ["bench", "serve", "--model", str(tiny_copy / "art"), "--json-out", str(manifest)])
    assert res.exit_code == 2 and "lies inside the input" in " ".join(res.output.split()), res.output
    assert manifest.read_bytes() == before
    write_json(tiny_copy / "report.json", {"x": 1}, inputs=[tiny_copy / "art"])
    assert (tiny_copy / "report.json").read_text() == '{\n  "x": 1\n}'


def test_a_benchmark_writes_only_into_its_own_folder(tmp_path):
    """`bench accuracy --out D` (and `bench scaling`) refuse a folder of other files, whose
    accuracy.json would otherwise be replaced; their own folder is written again (resume)."""
    from rankmixer.bench.accuracy import Cell, run_accuracy
    from rankmixer.core.files import OutputError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "accuracy.json").write_text("my notes")
    with pytest.raises(OutputError, match="did not write"):
        run_accuracy([Cell("c", "quickstart")], [0], mine, log=lambda m: None)
    assert (mine / "accuracy.json").read_text() == "my notes"

    from rankmixer.bench.distributed import run_distributed_bench

    with pytest.raises(OutputError, match="did not write"):  # before any process starts
        run_distributed_bench("quickstart", [1], ["ddp"], 2, 1, mine, log=lambda m: None)
    assert sorted(p.name for p in mine.iterdir()) == ["accuracy.json"]
