"""Shared test factories: hand-built feature maps and random valid batches, the checks every
model must pass, a planted learning problem, and trained runs on real data (built once per test
session, removed at exit) for the export and serving tests.

Import them as ``from tests.factories import make_feature_map, random_batch``; fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureInfo, FeatureMap
from rankmixer.models.base import ModelOutput
from rankmixer.nn.embedding import FeatureEmbedding, set_sparse_gradients, split_parameters


# ---- feature maps and batches -----------------------------------------------------------------


def make_feature_map(
    num_tasks: int = 2,
    n_sparse: int = 3,
    n_dense: int = 2,
    bags: bool = True,
    sequences: bool = True,
    sparse_vocab: list[int] | None = None,
) -> FeatureMap:
    """A small feature map of every kind (vocab sizes include pad 0 and OOV 1).

    sparse ``s0 .. s{n-1}`` (vocab 10, 7, 5, ... or ``sparse_vocab``); dense ``d0 ..``;
    bags ``tags`` (own vocab 12, max_len 4) and ``s0_bag`` (shares ``s0``, max_len 3);
    sequences ``hist`` (shares ``s1``, max_len 5; ``s0`` if only one sparse feature) and
    ``clicks`` (own vocab 9, max_len 6). Labels ``y0 .. y{T-1}``.
    """
    vocab = sparse_vocab or [10, 7, 5, 6, 8, 4, 9, 3][:n_sparse] + [5] * max(0, n_sparse - 8)
    feats = [FeatureInfo(f"s{i}", "sparse", vocab_size=vocab[i]) for i in range(n_sparse)]
    feats += [FeatureInfo(f"d{i}", "dense") for i in range(n_dense)]
    if bags:
        feats.append(FeatureInfo("tags", "bag", vocab_size=12, max_len=4))
        if n_sparse:
            feats.append(FeatureInfo("s0_bag", "bag", vocab_size=vocab[0], max_len=3, share_with="s0"))
    if sequences:
        if n_sparse:
            shared = "s1" if n_sparse > 1 else "s0"
            feats.append(
                FeatureInfo("hist", "sequence", vocab_size=vocab[int(shared[1:])], max_len=5, share_with=shared)
            )
        feats.append(FeatureInfo("clicks", "sequence", vocab_size=9, max_len=6))
    return FeatureMap(
        dataset="tiny",
        schema_hash="0" * 16,
        labels=[f"y{t}" for t in range(num_tasks)],
        features=feats,
    )


def _padded_ids(vocab: int, max_len: int, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """[B, max_len] ids in [1, vocab) with random lengths 0..max_len, padded with 0 at the end."""
    ids = torch.randint(1, vocab, (batch_size, max_len), generator=g)
    lengths = torch.randint(0, max_len + 1, (batch_size,), generator=g)
    keep = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)
    return ids * keep


def _rows(feature_map: FeatureMap, f: FeatureInfo) -> int:
    """Rows of the table feature ``f`` looks up (a shared feature uses its owner's)."""
    return feature_map.feature(f.table).vocab_size


def random_batch(feature_map: FeatureMap, batch_size: int, generator: torch.Generator | None = None) -> Batch:
    """A valid random Batch for ``feature_map``: sparse ids in [0, vocab) (0 = pad is legal but
    rare), bags/sequences of random length padded with 0 at the end, standard-normal dense values,
    Bernoulli(0.5) labels; group / timestamp when the map has them."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    B = batch_size
    sparse = [
        torch.where(torch.rand(B, generator=g) < 0.05, 0, torch.randint(1, f.vocab_size, (B,), generator=g))
        for f in feature_map.sparse
    ]
    return Batch(
        dense=torch.randn(B, len(feature_map.dense), generator=g),
        sparse=torch.stack(sparse, dim=1) if sparse else torch.zeros(B, 0, dtype=torch.long),
        labels=torch.randint(0, 2, (B, feature_map.num_tasks), generator=g).float(),
        bags={f.name: _padded_ids(_rows(feature_map, f), f.max_len, B, g) for f in feature_map.bags},
        sequences={f.name: _padded_ids(_rows(feature_map, f), f.max_len, B, g) for f in feature_map.sequences},
        group=torch.randint(0, 10, (B,), generator=g) if feature_map.has_group else None,
        timestamp=torch.arange(B, dtype=torch.long) if feature_map.has_time else None,
    )


# ---- what every model must do -----------------------------------------------------------------


def check_output_and_gradients(name, model, batch, num_tasks, zero_grad_at_init=()) -> None:
    """A model's contract (shared with test_peer_models.py): float32 logits [B, n_tasks], a
    non-zero gradient for every parameter (except the named ones, zero at initialisation by
    design), every table in a FeatureEmbedding, and no gradient for the pad rows."""
    out = model(batch)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (batch.labels.shape[0], num_tasks)
    assert out.logits.dtype == torch.float32
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        if pname not in zero_grad_at_init:
            assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    # every table lives in a FeatureEmbedding; pad rows get no gradient
    emb, rest = split_parameters(model)
    assert emb and len(emb) + len(rest) == len(list(model.parameters()))
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            assert torch.all(m.weight.grad[0] == 0)


def check_sparse_embedding_step(model, feature_map, generator, tables: int) -> None:
    """``tables`` embedding tables switch to sparse gradients, and one SparseAdam + Adam step
    on them moves the embeddings."""
    assert set_sparse_gradients(model) == tables
    emb, rest = split_parameters(model)
    opt_sparse = torch.optim.SparseAdam(emb, lr=1e-2)
    opt_dense = torch.optim.Adam(rest, lr=1e-2)
    batch = random_batch(feature_map, 16, generator)
    before = [p.detach().clone() for p in emb]
    F.binary_cross_entropy_with_logits(model(batch).logits, batch.labels).backward()
    assert all(p.grad.is_sparse for p in emb)
    opt_sparse.step()
    opt_dense.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, emb))


# ---- a planted problem ------------------------------------------------------------------------


def planted_problem(additive: bool, n: int = 512, seed: int = 0) -> tuple[FeatureMap, Batch]:
    """512 rows; the label is a deterministic function of two categorical ids (a, b); a third
    feature, a dense feature, a bag and a sequence are noise.

    additive: label = [w_a[a] + w_b[b] > median] (what logistic regression can represent);
    otherwise label = T[a, b] for a random binary table T (needs interactions).
    """
    va, vb = 10, 8  # ids 2.. : 8 and 6 real values
    fm = FeatureMap(
        dataset="planted",
        schema_hash="0" * 16,
        labels=["y"],
        features=[
            FeatureInfo("a", "sparse", vocab_size=va),
            FeatureInfo("b", "sparse", vocab_size=vb),
            FeatureInfo("noise", "sparse", vocab_size=20),
            FeatureInfo("x", "dense"),
            FeatureInfo("tags", "bag", vocab_size=15, max_len=3),
            FeatureInfo("hist", "sequence", vocab_size=vb, max_len=4, share_with="b"),
        ],
    )
    g = torch.Generator().manual_seed(seed)
    batch = random_batch(fm, n, g)
    a = torch.randint(2, va, (n,), generator=g)
    b = torch.randint(2, vb, (n,), generator=g)
    batch.sparse[:, 0], batch.sparse[:, 1] = a, b
    if additive:
        score = torch.randn(va, generator=g)[a] + torch.randn(vb, generator=g)[b]
        y = (score > score.median()).float()
    else:
        y = torch.randint(0, 2, (va, vb), generator=g)[a, b].float()
    batch.labels = y.unsqueeze(1)
    return fm, batch


def fit_auc(model, batch, steps: int = 200) -> float:
    """Train AUC (scikit-learn) of ``model`` after ``steps`` full-batch Adam steps on ``batch``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch).logits, batch.labels).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scores = model(batch).logits[:, 0]
    return roc_auc_score(batch.labels[:, 0].numpy(), scores.numpy())


# ---- trained runs on real data (export and serving tests) --------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "movielens-latest-small"
WORK = Path(tempfile.mkdtemp(prefix="rankmixer-serving-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def need_raw() -> None:
    if not (RAW / "ratings.csv").exists():
        pytest.skip(f"MovieLens raw files not found at {RAW}")


def _train(model: str, run: str, steps: int, extra: list[str] = ()) -> Path:
    from rankmixer import experiment
    from rankmixer.config import load_config

    need_raw()
    cfg = load_config("movielens_rankmixer_tiny", [
        f"data.raw={RAW}", f"data.prepared_dir={WORK / 'ml'}", f"run_dir={WORK / run}",
        f"model.name={model}", f"train.max_steps={steps}", "train.epochs=1", "train.tensorboard=false",
        "train.progress=false", "train.batch_size=512", "train.early_stopping=null", *extra,
    ])
    experiment.train(cfg, log=lambda m: None)
    return WORK / run


@functools.cache
def movielens_run() -> Path:
    """A RankMixer-tiny run on MovieLens (a few steps: parity needs trained-looking weights, not
    a good model)."""
    return _train("rankmixer-tiny", "run-tiny", 8)


@functools.cache
def moe_run() -> Path:
    return _train("rankmixer-tiny-moe", "run-moe", 4)


@functools.cache
def canonical_test_rows(n: int = 600) -> tuple[list[dict], "pl.DataFrame"]:
    """(first n canonical rows of the test split as request dicts, the prepared test rows they
    became). The canonical frame comes from the preprocessing code itself (read + preset
    transform); the time split is recomputed as preparation does and checked row by row."""
    from rankmixer.data.datasets.base import get_preset
    from rankmixer.data.feature_map import FeatureMap
    from rankmixer.data.prepare import canonical_rows

    movielens_run()
    preset = get_preset("movielens-latest")
    lf, _, _ = canonical_rows(preset.schema(), preset.raw_files(RAW), WORK / "canon", preset, RAW, "fail")
    canon = lf.collect()
    cut = canon.select(pl.col("timestamp").quantile(0.9, "lower")).item()
    test = canon.filter(pl.col("timestamp") >= cut)
    prepared = pl.read_parquet(FeatureMap.load(WORK / "ml").split_files("test"))
    assert test.height == prepared.height
    assert (test["timestamp"].to_numpy() == prepared["__ts"].to_numpy()).all()
    rows = test.head(n).drop("__file", "__row", "like", "timestamp").to_dicts()
    return rows, prepared.head(n)


@functools.cache
def artifact(fmt: str, run: str = "tiny") -> Path:
    from rankmixer.serve.export import export_run

    src = movielens_run() if run == "tiny" else moe_run()
    return export_run(src, fmt, WORK / f"art-{run}-{fmt}", log=lambda m: None)


def prepared_dir() -> Path:
    movielens_run()
    return WORK / "ml"


@functools.cache
def synthetic_run() -> tuple[Path, list[dict]]:
    """A RankMixer-tiny run on a small synthetic set (it has dense numerical features, which
    MovieLens lacks), and the canonical rows of its test file."""
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.data.datasets.base import RawFiles, get_preset
    from rankmixer.data.prepare import canonical_rows

    opts = {"rows_train": 3000, "rows_valid": 500, "rows_test": 500, "n_users": 300, "n_items": 400,
            "vocab_max": 1000, "n_categorical": 6, "n_dense": 4}
    cfg = load_config(None, [
        "data.dataset=synthetic", f"data.preset_options={opts}", f"data.prepared_dir={WORK / 'syn'}",
        f"run_dir={WORK / 'run-syn'}", "model.name=rankmixer-tiny", "train.max_steps=3", "train.batch_size=512",
        "train.tensorboard=false", "train.progress=false", "train.early_stopping=null",
    ])
    experiment.train(cfg, log=lambda m: None)
    preset = get_preset("synthetic", **opts)
    raw_dir = Path(f"{WORK / 'syn'}-raw")
    test_files = preset.raw_files(raw_dir).by_split["test"]
    lf, _, _ = canonical_rows(preset.schema(), RawFiles(all=test_files), WORK / "syn-canon", preset, raw_dir, "fail")
    rows = lf.collect().drop("__file", "__row", "click").to_dicts()
    return WORK / "run-syn", rows
