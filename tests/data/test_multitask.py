"""The conflicting-task generator: its meta against metrics recomputed from the files (scikit-learn),
the planted correlation, determinism and config errors."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import log_loss, roc_auc_score

from rankmixer.data.datasets.multitask import MultitaskConfig, generate

SMALL = {"rows_train": 6000, "rows_valid": 40000, "rows_test": 3000, "n_fields": 4, "vocab": 50}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt")
    return out, generate({**SMALL, "conflict": 0.6}, out, progress=False)


def test_meta_matches_metrics_recomputed_from_the_files(written):
    out, meta = written
    for split in ("valid", "test"):
        table = pq.read_table(out / f"{split}.parquet").to_pandas()
        for task in ("t0", "t1"):
            m = meta["splits"][split]["tasks"][task]
            y, p = table[task].to_numpy(), table[f"p_{task}"].to_numpy()
            assert m["label_mean"] == pytest.approx(y.mean())
            assert m["bayes_auc"] == pytest.approx(roc_auc_score(y, p.astype(np.float32)), abs=1e-12)
            assert m["bayes_logloss"] == pytest.approx(log_loss(y, p), rel=1e-9)
        assert meta["splits"][split]["bayes_auc"] == meta["splits"][split]["tasks"]["t0"]["bayes_auc"]


def test_task_logits_correlate_as_planted(written):
    # The realised correlation of one draw of the tables (its meta) shows in the rows...
    out, meta = written
    table = pq.read_table(out / "valid.parquet").to_pandas()
    z = np.log(table[["p_t0", "p_t1"]].to_numpy()) - np.log1p(-table[["p_t0", "p_t1"]].to_numpy())
    realised = meta["planted_model"]["logit_correlation_calibration"][0][1]
    assert np.corrcoef(z.T)[0, 1] == pytest.approx(realised, abs=0.02)
    assert table["t0"].mean() == pytest.approx(0.2, abs=0.01)


def test_planted_correlation_is_one_minus_conflict_with_many_ids():
    # ...and with many ids per field a draw is close to the expectation 1 - conflict.
    from rankmixer.data.datasets.multitask.generator import Generator

    for conflict in (0.2, 0.8):
        gen = Generator(MultitaskConfig(conflict=conflict, vocab=20000, n_fields=8, zipf_exponent=0.5))
        assert gen.summary()["logit_correlation_calibration"][0][1] == pytest.approx(1 - conflict, abs=0.05)


def test_no_conflict_repeats_one_task(tmp_path):
    generate({**SMALL, "conflict": 0.0}, tmp_path, progress=False)
    table = pq.read_table(tmp_path / "test.parquet").to_pandas()
    np.testing.assert_allclose(table["p_t0"], table["p_t1"], rtol=1e-12)
    assert (table["t0"] != table["t1"]).any()  # labels are drawn per task


def test_same_config_same_bytes(tmp_path):
    generate(SMALL, tmp_path / "a", progress=False)
    generate(SMALL, tmp_path / "b", progress=False)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (tmp_path / "b" / f"{split}.parquet").read_bytes()


@pytest.mark.parametrize("options, needle", [
    ({"tasks": ["a", "a"]}, "unique"),
    ({"tasks": ["a", "f0"]}, "'f0' is also a feature column"),
    ({"tasks": ["a", "b c"]}, "not a column name"),
    ({"task_ctr": [0.2]}, "task_ctr has 1 values for 2 tasks"),
    ({"task_ctr": [0.2, 1.0]}, "1.0 is not a rate"),
    ({"conflict": 1.5}, "conflict"),
])
def test_bad_configs_name_the_key(options, needle):
    with pytest.raises(ValidationError, match=needle):
        MultitaskConfig(**options)
