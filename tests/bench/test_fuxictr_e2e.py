"""FuxiCTR end to end (``bench/fuxictr_e2e.py``): the exported splits are our prepared rows in
their order, the parameters come from the packaged zoo settings, and one real run on a tiny
synthetic split (FuxiCTR's FeatureProcessor, Ray loader and fit in a subprocess) gives
predictions whose metrics, recomputed with scikit-learn against our prepared labels, are the
reported ones and FuxiCTR's own."""

from __future__ import annotations

from importlib.resources import files

import importlib.util
import json

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import log_loss, roc_auc_score
from tests.factories import hide_fuxictr, make_feature_map, movielens_folder, tiny_config

from rankmixer import experiment
from rankmixer.bench.fuxictr_e2e import MODELS, fuxictr_params, train_e2e
from rankmixer.bench.fuxictr_export import ROW_ID, ExportError, export_splits
from rankmixer.config import load_config
from rankmixer.data.feature_map import GROUP_COLUMN
from rankmixer.models.fuxictr import fuxictr_feature_map
from rankmixer.models.fuxictr.zoo import build_zoo_model

NEEDS_FUXICTR = pytest.mark.skipif(importlib.util.find_spec("fuxictr") is None,
                                   reason="FuxiCTR end to end needs the optional extra: pip install -e '.[fuxictr]'")
# A small DCNv2 for a few seconds of FuxiCTR training (the zoo's names).
SMALL = {"embedding_dim": 4, "parallel_dnn_hidden_units": [8], "stacked_dnn_hidden_units": [8], "batch_size": 64,
         "epochs": 2, "learning_rate": 0.01}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny synthetic set (400 / 200 / 200 rows), prepared once."""
    root = tmp_path_factory.mktemp("fuxictr-e2e")
    cfg = tiny_config(root)
    return root, cfg, experiment.prepare_data(cfg.data, log=quiet)


def _vocab(fm, table: str) -> dict[str, int]:
    v = pl.read_parquet(fm.root / "vocab" / f"{table}.parquet")
    return dict(zip(v["value"].to_list(), v["id"].to_list()))


def _check_round_trip(fm, out, categorical: str, sequence: str | None) -> None:
    """Every split exported with its prepared row count, ``__split_row`` 0..n-1, the prepared
    labels in order, and categorical / sequence values that our vocabulary maps (unseen -> 1) to
    the prepared ids row by row."""
    for split in ("train", "valid", "test"):
        exp = pl.read_parquet(out / f"{split}.parquet")
        prep = pl.read_parquet(fm.split_files(split))
        assert exp.height == prep.height == fm.splits[split].rows
        assert exp[ROW_ID].to_list() == list(range(exp.height))
        for lab in fm.labels:
            assert exp[lab].to_list() == prep[lab].cast(pl.Float64).to_list()
        vocab = _vocab(fm, categorical)
        assert [vocab.get(v, 1) for v in exp[categorical].to_list()] == prep[categorical].to_list()
        if sequence:
            f = fm.feature(sequence)
            table = _vocab(fm, f.table)
            ids = [[table.get(x, 1) for x in s.split("^") if x][-f.max_len:] for s in exp[sequence].to_list()]
            assert ids == prep[sequence].to_list()


def test_export_is_the_prepared_splits_in_order(tiny, tmp_path):
    """Split by files (the synthetic preset), with a bag, a shared-table sequence and log1p
    numbers."""
    _, cfg, fm = tiny
    rows = export_splits(cfg.data, fm, tmp_path / "data", log=quiet)
    assert rows == {s: fm.splits[s].rows for s in ("train", "valid", "test")}
    _check_round_trip(fm, tmp_path / "data", "user", "hist_items")
    exp = pl.read_parquet(tmp_path / "data" / "test.parquet")
    prep = pl.read_parquet(fm.split_files("test"))
    # log1p numbers are exported transformed (FuxiCTR has no such normaliser): ours, as float64
    assert exp["I1"].cast(pl.Float32).to_list() == prep["I1"].to_list()


def test_export_of_a_time_split(tmp_path):
    """MovieLens' time split is recomputed as preparation splits it."""
    cfg = load_config(None, ["data.dataset=movielens-latest", f"data.raw={movielens_folder(tmp_path / 'raw')}",
                             f"data.prepared_dir={tmp_path / 'prep'}"])
    fm = experiment.prepare_data(cfg.data, log=quiet)
    export_splits(cfg.data, fm, tmp_path / "data", log=quiet)
    _check_round_trip(fm, tmp_path / "data", "movie_id", "hist_movies")


def test_export_refuses_rows_that_are_not_the_prepared_ones(tmp_path):
    """Prepared shards that are not what the raw files give (here: the test rows reversed) stop
    the export: predictions could not be matched to our rows."""
    cfg = tiny_config(tmp_path)
    fm = experiment.prepare_data(cfg.data, log=quiet)
    shard = fm.split_files("test")[0]
    pl.read_parquet(shard).reverse().write_parquet(shard)
    with pytest.raises(ExportError, match="split 'test'.*same order"):
        export_splits(cfg.data, fm, tmp_path / "data", log=quiet)


def test_params_are_the_zoo_defaults_then_the_dataset_then_overrides():
    params, sources = fuxictr_params("dcnv2", "movielens-latest")
    # DCNv2_default and Base of model_zoo/DCNv2/config/model_config.yaml
    assert params["embedding_dim"] == 40 and params["batch_size"] == 10000
    assert params["parallel_dnn_hidden_units"] == [500, 500, 500]
    assert params["monitor"] == {"AUC": 1, "logloss": -1} and params["early_stop_patience"] == 2
    assert len(sources) == 2
    frappe, sources = fuxictr_params("dcnv2", "frappe", {"net_dropout": 0.1})
    assert (frappe["embedding_dim"], frappe["embedding_regularizer"], frappe["num_cross_layers"]) == (10, 0.05, 4)
    assert frappe["parallel_dnn_hidden_units"] == [400] * 3 and frappe["net_dropout"] == 0.1
    assert "datasets.frappe" in sources[2] and "net_dropout" in sources[3]
    with pytest.raises(ValueError, match="unknown FuxiCTR parameter.*net_dropuot"):
        fuxictr_params("dcnv2", "frappe", {"net_dropuot": 0.1})
    with pytest.raises(ValueError, match="give a float"):
        fuxictr_params("deepfm", "synthetic", {"embedding_regularizer": 1})
    with pytest.raises(ValueError, match="not one of"):
        fuxictr_params("rankmixer", "synthetic")


@NEEDS_FUXICTR
@pytest.mark.parametrize("model", MODELS)
def test_every_packaged_setting_builds_its_model(model, tmp_path):
    """Each packaged default and every dataset entry is accepted by the zoo mapping and builds
    (FinalMLP's context fields name that dataset's features: left out on this feature map)."""
    fm = make_feature_map(num_tasks=1)
    entries = yaml.safe_load((files("rankmixer") / "configs" / "fuxictr_e2e" / f"{model}.yaml").read_text())
    for dataset in ("synthetic", *(entries.get("datasets") or {})):
        params, _ = fuxictr_params(model, dataset)
        params = {k: v for k, v in params.items() if k not in ("fs1_context", "fs2_context")}
        zoo = build_zoo_model(model, fuxictr_feature_map(fm, params["embedding_dim"]),
                              **{**params, "model_root": str(tmp_path), "verbose": 0})
        assert zoo.net.cfg.embedding_dim == params["embedding_dim"]


def test_missing_fuxictr_names_the_extra(monkeypatch, tiny, tmp_path):
    hide_fuxictr(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install .*\.\[fuxictr\]"):
        train_e2e(tiny[1], "dcnv2", tmp_path / "run", 1, SMALL, log=quiet)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def e2e_run(tiny):
    root, cfg, fm = tiny
    result = train_e2e(cfg, "dcnv2", root / "run", 7, SMALL, log=quiet)
    return root / "run", result, fm


@pytest.mark.slow  # FuxiCTR's whole pipeline in a subprocess (~45 s); run with -m slow
@NEEDS_FUXICTR
def test_run_writes_our_run_shape(e2e_run):
    run, result, fm = e2e_run
    assert json.loads((run / "metrics.json").read_text()) == result
    for split in ("test", "valid"):
        assert {"auc", "logloss", "gauc", "click/auc"} <= set(result[split])
    hist = result["fuxictr_history"]
    assert result["steps"] == hist[-1]["step"] and result["epochs"] == len(hist) <= 2
    assert result["best_step"] == [h["step"] for h in hist if h["improved"]][-1]
    assert result["parameters"] > result["dense_parameters"] > 0 and result["flops_per_sample"] is None
    p = result["fuxictr_params"]
    assert (p["seed"], p["embedding_dim"], p["batch_size"], p["model"]) == (7, 4, 64, "DCNv2")
    # FuxiCTR's own format: its loader reads the config directory back
    from fuxictr.utils import load_config as fx_load_config

    fx = fx_load_config(str(run / "fuxictr_config"), "DCNv2_e2e")
    assert fx["feature_cols"][-1]["name"] == ROW_ID and fx["train_data"] == "data/train.parquet"


@pytest.mark.slow  # shares the ~45 s FuxiCTR run above
@NEEDS_FUXICTR
def test_test_predictions_are_aligned_with_our_test_rows(e2e_run):
    """The saved predictions are in our test split's order: labels and groups are the prepared
    ones, and scikit-learn's AUC / logloss on them equal both the reported metrics and the ones
    FuxiCTR computed inside, on its own (label, prediction) pairs."""
    run, result, fm = e2e_run
    pred = np.load(run / "test_predictions.npz")
    prep = pl.read_parquet(fm.split_files("test"))
    labels, probs = pred["labels"][:, 0], pred["probs"][:, 0]
    assert labels.tolist() == prep["click"].to_list()
    assert pred["group"].tolist() == prep[GROUP_COLUMN].to_list()
    auc = roc_auc_score(labels, probs)
    assert auc == pytest.approx(result["test"]["auc"], abs=1e-12)
    assert auc == pytest.approx(result["fuxictr_metrics"]["test"]["AUC"], abs=1e-9)
    assert log_loss(labels, probs.astype(np.float64)) == pytest.approx(result["test"]["logloss"], abs=1e-6)
    # gAUC: per-user AUC weighted by the user's rows, over users with both classes
    num = den = 0.0
    for g in np.unique(pred["group"]):
        m = pred["group"] == g
        if 0 < labels[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(labels[m], probs[m])
            den += m.sum()
    assert num / den == pytest.approx(result["test"]["gauc"], abs=1e-12)


@NEEDS_FUXICTR
def test_a_worker_past_its_timeout_is_stopped_and_leaves_no_run(tiny):
    root, cfg, _ = tiny
    with pytest.raises(TimeoutError, match="longer than 1s"):
        train_e2e(cfg, "dcnv2", root / "run-timeout", 1, SMALL, log=quiet, timeout_s=1)
    assert not (root / "run-timeout").exists()
