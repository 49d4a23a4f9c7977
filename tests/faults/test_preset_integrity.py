"""Preset integrity: a lookup table with a repeated key is an error naming both lines (or,
under skip, a counted resolution), every skipped row of every input file is counted, and data
whose kind nobody named is refused instead of silently replaced by the synthetic preset."""

from __future__ import annotations

import pytest

from tests.factories import MOVIES, RATINGS, movielens_folder


def _prepare(raw, out, on_bad_row="fail"):
    from rankmixer.data.config import DataConfig
    from rankmixer.experiment import prepare_data

    return prepare_data(DataConfig(dataset="movielens-latest", raw=str(raw), prepared_dir=str(out),
                                   on_bad_row=on_bad_row), log=lambda m: None)


def test_duplicate_movie_id_is_an_error_naming_both_lines(tmp_path):
    from rankmixer.data.reader import BadInputError

    raw = movielens_folder(tmp_path / "ml", MOVIES + "3,Casino (director's cut) (1995),Crime|Drama\n")
    with pytest.raises(BadInputError, match=r"movies\.csv: line 7: duplicate movieId 3 \(already on line 4\)"):
        _prepare(raw, tmp_path / "prep")


def test_duplicate_movie_id_under_skip_keeps_the_first_and_counts_the_repeat(tmp_path):
    raw = movielens_folder(tmp_path / "ml", MOVIES + "3,Casino (director's cut) (1995),Crime|Drama\n")
    fm = _prepare(raw, tmp_path / "prep", on_bad_row="skip")
    ratings = len(RATINGS.splitlines()) - 1
    assert sum(s.rows for s in fm.splits.values()) == ratings  # no rows from nowhere
    bad = fm.report["bad_rows"]
    assert bad["rows_skipped"] == 1 and bad["by_reason"] == {"movies.csv: duplicate movieId": 1}
    assert bad["side_tables"]["movies.csv"] == {"rows_read": 6, "rows_skipped": 1}


def test_bad_rows_of_a_side_table_are_counted(tmp_path):
    movies = MOVIES + "not-a-number,Broken (1999),Drama\n7,\n"
    raw = movielens_folder(tmp_path / "ml", movies)
    fm = _prepare(raw, tmp_path / "prep", on_bad_row="skip")
    bad = fm.report["bad_rows"]
    assert bad["rows_skipped"] == 2, bad
    assert bad["by_reason"] == {"movies.csv: column movieId: expected int": 1,
                                "movies.csv: wrong number of fields": 1}
    assert bad["rows_read"] == len(RATINGS.splitlines()) - 1  # the main file's rows, as before
    assert bad["side_tables"]["movies.csv"]["rows_skipped"] == 2


def test_raw_files_without_a_dataset_or_schema_are_refused(tmp_path):
    from rankmixer.config import ConfigError, load_config
    from rankmixer.data.config import DataConfig

    raw = movielens_folder(tmp_path / "ml")
    with pytest.raises(ValueError, match="data.dataset .*data.schema_file"):
        DataConfig(raw=str(raw))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data: {{raw: {raw}}}\nmodel: {{name: lr}}\n")
    with pytest.raises(ConfigError, match="data.raw is given but nothing says"):
        load_config(cfg)
    assert sorted(p.name for p in raw.iterdir()) == ["movies.csv", "ratings.csv"]


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"\x00\x01binary", b"- just\n- a list\n"])
def test_empty_or_binary_config_file_is_an_error_naming_it(tmp_path, content):
    from rankmixer.config import load_config

    cfg = tmp_path / "exp.yaml"
    cfg.write_bytes(content)
    with pytest.raises(ValueError, match=str(cfg)):
        load_config(cfg)
