"""Export: artifacts score raw MovieLens rows exactly as the trained PyTorch model scores the
prepared rows.

References: the prepared test shard (ids written by `data prepare`) for the preprocessing, and
the run's own model (``load_run``, eval mode) on the loader's batches for the scores.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from tests.factories import NEEDS_FUXICTR, WORK, artifact, canonical_test_rows, moe_run, movielens_run, synthetic_run

from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.runs import load_run


def _reference(run, n: int):
    """The run's model on the first n prepared test rows: (batch, probabilities)."""
    loaded = load_run(run)
    fm, model = loaded.feature_map, loaded.model
    batch = next(iter(make_loader(ParquetBatches(fm, "test", n, shuffle=False))))
    with torch.no_grad():
        return batch, torch.sigmoid(model(batch).logits.float()).numpy()


def _encoded(art, rows):
    pre = art.preprocessor
    checked = [pre.check_row(r, f"rows[{i}]") for i, r in enumerate(rows)]
    return pre.encode(checked)


def test_preprocessing_reproduces_prepared_ids():
    from rankmixer.serve.artifact import Artifact

    rows, _ = canonical_test_rows()
    art = Artifact(artifact("eager"))
    arrays, oov = _encoded(art, rows)
    batch, _ = _reference(movielens_run(), len(rows))
    assert np.array_equal(arrays["sparse"], batch.sparse.numpy())
    for name, ids in batch.bags.items():
        assert np.array_equal(arrays["bag:" + name], ids.numpy()), name
    for name, ids in batch.sequences.items():
        assert np.array_equal(arrays["seq:" + name], ids.numpy()), name
    # OOV counts per row and feature are the ids equal to 1 (a slow loop as the reference).
    feats = art.preprocessor.oov_features
    for r in range(0, len(rows), 97):
        for k, f in enumerate(feats):
            if art.fm.feature(f).kind == "sparse":
                ids = [int(batch.sparse[r, [x.name for x in art.fm.sparse].index(f)])]
            else:
                ids = (batch.bags.get(f) if f in batch.bags else batch.sequences[f])[r].tolist()
            assert oov[r, k] == sum(1 for i in ids if i == 1)


def test_raw_values_as_strings_or_ints_agree_and_unseen_go_oov():
    from rankmixer.serve.artifact import Artifact

    rows, _ = canonical_test_rows()
    art = Artifact(artifact("eager"))
    row = dict(rows[0])
    as_str = {k: (str(v) if isinstance(v, int) else [str(x) for x in v] if isinstance(v, list) else v)
              for k, v in row.items()}
    a, _ = _encoded(art, [row])
    b, _ = _encoded(art, [as_str])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    unseen = {**row, "movie_id": 10**9, "genres": ["no such genre"], "release_year": None}
    c, oov = _encoded(art, [unseen])
    sparse = [f.name for f in art.fm.sparse]
    assert c["sparse"][0, sparse.index("movie_id")] == 1
    assert c["sparse"][0, sparse.index("release_year")] == 1  # missing -> OOV, as in training
    assert c["bag:genres"][0, 0] == 1
    feats = art.preprocessor.oov_features
    assert oov[0, feats.index("movie_id")] == 1 and oov[0, feats.index("genres")] == 1


def test_onnx_matches_pytorch_on_real_rows_with_dynamic_batch():
    pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra (onnxruntime)")
    pytest.importorskip("onnxscript", reason="ONNX export tests need the onnx extra (onnxscript)")
    from rankmixer.serve.artifact import Artifact

    rows, _ = canonical_test_rows()
    path = artifact("onnx")
    art = Artifact(path)
    assert art.format == "onnx"
    _, ref = _reference(movielens_run(), len(rows))
    for lo, hi in [(0, 1), (1, 8), (8, 600)]:  # batch sizes 1, 7, 592: one graph
        got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows[lo:hi]])
        assert got.shape == (hi - lo, 1)
        np.testing.assert_allclose(got, ref[lo:hi], rtol=0, atol=1e-5)
    # The Triton layout carries the same graph and a config naming its inputs and output.
    manifest = json.loads((path / "manifest.json").read_text())
    tdir = path / "triton" / manifest["model"]
    assert (tdir / "1" / "model.onnx").read_bytes() == (path / "model.onnx").read_bytes()
    cfg = (tdir / "config.pbtxt").read_text()
    for inp in manifest["inputs"]:
        assert f'name: "{inp["name"]}"' in cfg and f"dims: [ {inp['shape'][1]} ]" in cfg
    assert 'name: "scores"' in cfg and 'backend: "onnxruntime"' in cfg
    import onnx

    ops = {n.op_type for n in onnx.load(str(path / "model.onnx")).graph.node}
    assert "Loop" not in ops  # bags pool with Gather + ReduceSum, not a per-row loop


@pytest.mark.slow  # ~5 s; the real-rows ONNX test stays in the default suite
def test_dense_features_synthetic_onnx_matches_pytorch():
    """Synthetic data has dense (normalised numerical) features: the ``dense`` graph input and
    the number inputs of a request, which MovieLens does not exercise."""
    pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra (onnxruntime)")
    pytest.importorskip("onnxscript", reason="ONNX export tests need the onnx extra (onnxscript)")
    from rankmixer.serve.artifact import Artifact
    from rankmixer.serve.export import export_run
    from rankmixer.serve.preprocess import RowError

    run, rows = synthetic_run()
    art = Artifact(export_run(run, "onnx", WORK / "art-syn-onnx", log=lambda m: None))
    assert [i["name"] for i in art.manifest["inputs"]][:2] == ["dense", "sparse"]
    batch, ref = _reference(run, len(rows))
    arrays, _ = _encoded(art, rows)
    assert np.array_equal(arrays["sparse"], batch.sparse.numpy())
    assert np.array_equal(arrays["dense"], batch.dense.numpy())
    got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    dense = art.fm.dense[0].name
    for bad, msg in [(float("nan"), "expected a finite number"), (float("inf"), "expected a finite number"),
                     ("3.5", "expected a number, got string")]:
        with pytest.raises(RowError, match=rf"candidates\[0\]\.{dense}: {msg}"):
            art.preprocessor.check_row({**rows[0], dense: bad}, "candidates[0]")
    # null = missing: encoded as the feature's fill value, as in training.
    fill = art.preprocessor.schema.feature(dense).fill_missing
    a, _ = _encoded(art, [{**rows[0], dense: None}])
    b, _ = _encoded(art, [{**rows[0], dense: fill}])
    assert np.array_equal(a["dense"], b["dense"]) and np.isfinite(a["dense"]).all()


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "eager"])
def test_torch_formats_match_pytorch(fmt):
    from rankmixer.serve.artifact import Artifact

    rows, _ = canonical_test_rows()
    art = Artifact(artifact(fmt))
    _, ref = _reference(movielens_run(), len(rows))
    for lo, hi in [(0, 1), (1, 8), (8, 600)]:
        got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows[lo:hi]])
        np.testing.assert_allclose(got, ref[lo:hi], rtol=0, atol=1e-5)


def test_moe_exports_eager_and_serves_sparse():
    from rankmixer.nn.moe import PerTokenMoE
    from rankmixer.serve.artifact import Artifact
    from rankmixer.serve.export import export_run

    run = moe_run()
    with pytest.raises(ValueError, match="--format eager"):
        export_run(run, "torchscript", WORK / "moe-ts", log=lambda m: None)
    art = Artifact(artifact("eager", run="moe"))
    assert art.manifest["sparse_moe"] is True
    moes = [m for m in art.backend.module.modules() if isinstance(m, PerTokenMoE)]
    assert moes and all(m.cfg.sparse_inference and not m.training for m in moes)
    rows, _ = canonical_test_rows()
    got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows[:200]])
    # Reference: the same weights with dense inference (every expert computed, gated).
    batch, sparse_ref = _reference(run, 200)
    model = load_run(run).model
    for m in model.modules():
        if isinstance(m, PerTokenMoE):
            m.cfg = m.cfg.model_copy(update={"sparse_inference": False})
    with torch.no_grad():
        dense_ref = torch.sigmoid(model(batch).logits.float()).numpy()
    np.testing.assert_allclose(got, sparse_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, dense_ref, rtol=0, atol=1e-5)


def test_loading_never_unpickles(monkeypatch):
    from rankmixer.serve.artifact import Artifact

    paths = [artifact(f) for f in ("torchscript", "pt2", "eager")]
    try:
        import onnxruntime  # noqa: F401

        paths.append(artifact("onnx"))
    except ImportError:
        pass

    def refuse(*a, **k):
        raise AssertionError("an artifact load called pickle")

    class NoUnpickler(pickle.Unpickler):
        def __init__(self, *a, **k):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    for p in paths:
        Artifact(p)


def test_tampered_or_incomplete_artifact_is_refused(tmp_path):
    from rankmixer.serve.artifact import Artifact, ArtifactError

    src = artifact("eager")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    spec = json.loads((bad / "preprocess.json").read_text())
    spec["vocabularies"]["movie_id"]["ids"][0] = 3  # a silent remap: must not load
    (bad / "preprocess.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="preprocess.json: sha256"):
        Artifact(bad)
    (bad / "model.safetensors").unlink()
    shutil.copyfile(src / "preprocess.json", bad / "preprocess.json")
    with pytest.raises(ArtifactError, match="model.safetensors: listed in the manifest but missing"):
        Artifact(bad)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Artifact(tmp_path)


def _raw_behaviour_rows(raw_test) -> list[dict]:
    """The behaviour set's raw test rows as a client sends them: each history field an array
    (oldest first), gaps as integers, an empty history as []."""
    import polars as pl

    rows = []
    for r in pl.read_parquet(raw_test).to_dicts():
        row = {k: r[k] for k in ("user", "item", "cat")}
        for f in ("item", "cat", "type", "dt"):
            values = r[f"hist_{f}"].split("|") if r[f"hist_{f}"] else []
            row[f"hist_{f}"] = [int(v) for v in values] if f == "dt" else values
        rows.append(row)
    return rows


_SEQUENCE_MODELS = {
    "din": ["model.name=din", "model.embedding_dim=4", "model.attention_hidden=[8]", "model.dnn_hidden=[16]"],
    # RankMixer with DIEN's outputs as sequence tokens: the GRU, the AUGRU loop and the tokens
    "rankmixer-dien": ["model.name=rankmixer", "model.embedding_dim=4", "model.num_tokens=4", "model.hidden_dim=8",
                       "model.num_layers=1", "model.sequence_module=dien"],
    "interformer": ["model.name=interformer", "model.embedding_dim=4", "model.seq_dim=8", "model.num_layers=1",
                    "model.interaction_hidden=[8]", "model.output_hidden=[8]"],
    # windows of 3 over 8 positions: the pyramid pads to a multiple of the window
    "pyramid_mixer": ["model.name=pyramid_mixer", "model.embedding_dim=4",
                      'model.pyramid={"levels": 2, "window": 3, "attention_hidden": [8]}', "model.dnn_hidden=[16]"],
    # FuxiCTR's masked mean divides by (n + 1e-12): an empty history must not score NaN
    "fuxictr-din": ["model.name=fuxictr-din", "model.embedding_dim=4", "model.attention_hidden=[8]",
                    "model.dnn_hidden=[16]"],
    # CETNet: three members (DIN reads the histories), each with its own tables, fused by
    # confidence with a learned tau: one artifact scores the fused prediction
    "cetnet": ["model.name=cetnet", "model.embedding_dim=4", "model.members=" + json.dumps([
        {"name": "din", "params": {"attention_hidden": [8], "dnn_hidden": [16]}},
        {"name": "dcnv2", "params": {"dnn_hidden": [16], "num_cross_layers": 1}},
        {"name": "rankmixer", "params": {"num_tokens": 4, "hidden_dim": 8, "num_layers": 1}}])],
    # MoS with hard routing: sessions cut from the request's gaps at serving, as in preparation
    "mos": ["model.name=mos", "model.embedding_dim=4", "model.dnn_hidden=[16]",
            'model.mos={"backbone": "din", "themes": 2, "short_term": 3, "routing": "hard"}'],
    # MoS whose theme experts read one token per session (session means, flipped and aligned)
    "mos-sessions": ["model.name=mos", "model.embedding_dim=4", "model.dnn_hidden=[16]",
                     'model.mos={"backbone": "din", "themes": 2, "short_term": 3, "theme_tokens": "sessions"}'],
}


@pytest.mark.parametrize("model", [
    "din",
    pytest.param("rankmixer-dien", marks=pytest.mark.slow),
    pytest.param("interformer", marks=pytest.mark.slow),
    pytest.param("pyramid_mixer", marks=pytest.mark.slow),
    pytest.param("fuxictr-din", marks=NEEDS_FUXICTR),
    pytest.param("mos", marks=pytest.mark.slow),
    pytest.param("mos-sessions", marks=pytest.mark.slow),
    pytest.param("cetnet", marks=pytest.mark.slow),  # ~5 s: three members trained and exported
])
def test_behaviours_export_and_serve_like_pytorch(tmp_path, model):
    """A sequence model trained on behaviour sequences, exported to ONNX: raw histories in
    requests (one array per field, some empty, some shorter than max_len) score as the PyTorch
    model scores the prepared test rows."""
    pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra (onnxruntime)")
    pytest.importorskip("onnxscript", reason="ONNX export tests need the onnx extra (onnxscript)")
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.serve.artifact import Artifact
    from rankmixer.serve.export import export_run

    opts = {"rows_train": 300, "rows_valid": 100, "rows_test": 100, "n_users": 50, "n_items": 120,
            "n_categories": 8, "seq_len_max": 12, "hist_max_len": 8, "return_period": 6, "attention_window": 4,
            **({"session_gap": 900, "max_sessions": 6} if model.startswith("mos") else {})}
    cfg = load_config(None, [
        "data.dataset=behaviour", f"data.preset_options={json.dumps(opts)}", f"data.prepared_dir={tmp_path / 'prep'}",
        f"run_dir={tmp_path / 'run'}", *_SEQUENCE_MODELS[model], "train.max_steps=3",
        "train.batch_size=64", "train.tensorboard=false",
        "train.progress=false", "train.early_stopping=null", "train.threads=1",
    ])
    experiment.train(cfg, log=lambda m: None)
    art = Artifact(export_run(tmp_path / "run", "onnx", tmp_path / "art", log=lambda m: None))
    assert art.format == "onnx"
    assert [i["name"] for i in art.manifest["inputs"]][-1] == "beh__hist"
    rows = _raw_behaviour_rows(tmp_path / "prep-raw" / "test.parquet")
    batch, ref = _reference(tmp_path / "run", len(rows))
    assert any(not r["hist_item"] for r in rows)  # empty histories are among them
    assert (batch.behaviours["hist"][:, -1, 0] == 0).any()  # and histories shorter than max_len
    arrays, _ = _encoded(art, rows)
    assert np.array_equal(arrays["beh:hist"], batch.behaviours["hist"].numpy())
    got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


@pytest.mark.slow  # trains and exports RACP (~30 s)
def test_racp_exports_and_serves_page_histories_like_pytorch(tmp_path):
    """RACP on the impressions preset, exported to ONNX: requests with raw pages (item, cat,
    click and page age per exposure; the page index cut from the ages at serving, as in
    preparation) score as the PyTorch model scores the prepared test rows."""
    pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra (onnxruntime)")
    pytest.importorskip("onnxscript", reason="ONNX export tests need the onnx extra (onnxscript)")
    import polars as pl

    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.serve.artifact import Artifact
    from rankmixer.serve.export import export_run

    opts = {"rows_train": 600, "rows_valid": 200, "rows_test": 200, "max_pages": 3, "page_size": 4,
            "n_items": 200, "n_categories": 10, "behaviours": "pages"}
    cfg = load_config(None, [
        "data.dataset=impressions", f"data.preset_options={json.dumps(opts)}", f"data.prepared_dir={tmp_path / 'prep'}",
        f"run_dir={tmp_path / 'run'}", "model.name=racp", "model.embedding_dim=4", "model.dnn_hidden=[16]",
        'model.racp={"hidden": 8, "context_hidden": [8], "attention_dim": 8, "page_attention_hidden": [8]}',
        "train.max_steps=3", "train.batch_size=64", "train.tensorboard=false", "train.progress=false",
        "train.early_stopping=null", "train.threads=1",
    ])
    experiment.train(cfg, log=lambda m: None)
    art = Artifact(export_run(tmp_path / "run", "onnx", tmp_path / "art", log=lambda m: None))
    assert art.format == "onnx"
    rows = []
    for r in pl.read_parquet(tmp_path / "prep-raw" / "test.parquet").to_dicts():
        row = {k: r[k] for k in ("item", "cat")}  # the user is the group key, not a feature
        for c in ("page_item", "page_cat", "page_click", "page_ago"):
            values = r[c].split("|") if r[c] else []
            row[c] = [int(v) for v in values] if c == "page_ago" else values
        rows.append(row)
    batch, ref = _reference(tmp_path / "run", len(rows))
    assert any(not r["page_item"] for r in rows) and any(len(set(r["page_ago"])) == 3 for r in rows)
    arrays, _ = _encoded(art, rows)
    assert np.array_equal(arrays["beh:pages"], batch.behaviours["pages"].numpy())
    got, _ = art.score([art.preprocessor.check_row(r, "r") for r in rows])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
