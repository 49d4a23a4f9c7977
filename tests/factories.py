"""Shared test factories: hand-built feature maps and random valid batches, the checks every
model must pass, every model at test size, slow references for RankMixer's layers, a planted
learning problem, and trained runs on real data (built once per test
session, removed at exit) for the export and serving tests.

Import them as ``from tests.factories import make_feature_map, random_batch``; fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import shutil
import tempfile
import threading
import time
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
    feature_groups: dict[str, list[str]] | None = None,
) -> FeatureMap:
    """A small feature map of every kind (vocab sizes include pad 0 and OOV 1).

    sparse ``s0 .. s{n-1}`` (vocab 10, 7, 5, ... or ``sparse_vocab``); dense ``d0 ..``;
    bags ``tags`` (own vocab 12, max_len 4) and ``s0_bag`` (shares ``s0``, max_len 3);
    sequences ``hist`` (shares ``s1``, max_len 5; ``s0`` if only one sparse feature) and
    ``clicks`` (own vocab 9, max_len 6). Labels ``y0 .. y{T-1}``. ``feature_groups``: the
    schema's groups (RankMixer's semantic tokenizer reads them), e.g. :data:`THREE_GROUPS`.
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
        feature_groups=dict(feature_groups or {}),
    )


# Feature groups of make_feature_map()'s features: three named groups, the rest ungrouped.
THREE_GROUPS = {"user": ["s0", "d0", "hist"], "item": ["s1", "s2", "tags"], "ctx": ["d1"]}


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
    """A model's contract (the conformance suite, tests/models/test_conformance.py): float32
    logits [B, n_tasks], a non-zero gradient for every trainable parameter (except the named
    ones, zero at initialisation by design), every table in the embedding group (a
    FeatureEmbedding or a peer library's nn.Embedding), and no gradient for our pad rows."""
    out = model(batch)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (batch.labels.shape[0], num_tasks)
    assert out.logits.dtype == torch.float32
    from rankmixer.train.trainer import task_loss  # the training loss: every exit / aux head counts

    loss = task_loss(out, batch.labels)
    loss.backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # a constant held as a parameter (e.g. FuxiCTR's triu_mask)
            continue
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


# ---- every model at test size ------------------------------------------------------------------

# Test sizes of every registered base model (the one place): the conformance suite and the
# per-model tests build through small_model(). A base model missing here fails
# tests/models/test_conformance.py::test_every_base_model_has_test_sizes.
SMALL: dict[str, dict] = {
    "lr": {},
    "dlrm": {"embedding_dim": 8, "bottom_mlp": [16], "top_mlp": [32, 16]},
    "deepfm": {"embedding_dim": 8, "dnn_hidden": [32, 16]},
    "dcnv2": {"embedding_dim": 8, "dnn_hidden": [32, 16], "num_cross_layers": 2},
    "concat-mlp": {"embedding_dim": 8, "dnn_hidden": [32, 16]},
    "rankmixer": {"embedding_dim": 8, "num_tokens": 4, "hidden_dim": 16},
    "autoint": {"embedding_dim": 8, "num_layers": 2, "attention_dim": 8},
    "hiformer": {"embedding_dim": 8, "num_layers": 2, "head_hidden": [16]},
    "dhen": {"embedding_dim": 8, "modules": ["dcn", "self_attention", "linear", "dot"], "dnn_hidden": [32]},
    "wukong": {"embedding_dim": 8, "num_fmb": 4, "num_lcb": 4, "fmb_hidden": [32], "dnn_hidden": [32]},
    "moe": {"embedding_dim": 8, "num_experts": 3, "expert_hidden": [32, 16]},
    "finalmlp": {"embedding_dim": 8, "mlp1_hidden": [32, 16], "mlp2_hidden": [16], "num_heads": 2},
    "din": {"embedding_dim": 8, "attention_hidden": [16], "dnn_hidden": [32, 16]},
    "dien": {"embedding_dim": 8, "attention_hidden": [16], "dnn_hidden": [32, 16]},
    "pyramid_mixer": {"embedding_dim": 8, "pyramid": {"levels": 2, "window": 2, "attention_hidden": [8]},
                      "dnn_hidden": [16]},
    "mos": {"embedding_dim": 8, "mos": {"backbone": "din", "themes": 2, "short_term": 3,
                                        "backbone_options": {"attention_hidden": [8]}}, "dnn_hidden": [16]},
    "racp": {"embedding_dim": 8, "racp": {"hidden": 8, "context_hidden": [8], "attention_dim": 8,
                                          "page_attention_hidden": [8]}, "dnn_hidden": [16]},
    "interformer": {"embedding_dim": 8, "seq_dim": 8, "num_layers": 2, "interaction_hidden": [16],
                    "output_hidden": [16], "masknet_hidden": [8]},
    # every block type and every way inputs combine (sets of two widths, a vector into a set block)
    "searched": {"embedding_dim": 8, "blocks": [
        {"name": "att", "type": "attention", "width": 4, "heads": 2},
        {"name": "cmp", "type": "compress", "inputs": ["emb", "att"], "width": 3},
        {"name": "rm", "type": "rankmixer", "inputs": ["cmp"], "tokens": 2, "width": 8},
        {"name": "dh", "type": "dhen", "inputs": ["emb"]},
        {"name": "cr", "type": "cross", "inputs": ["emb"], "depth": 2, "rank": 4},
        {"name": "mlp", "type": "mlp", "inputs": ["cr", "rm"], "width": 16},
        {"name": "gt", "type": "gating", "inputs": ["mlp"]},
        {"name": "dt", "type": "dot", "inputs": ["dh", "gt"]},
        {"name": "fm", "type": "fm", "inputs": ["emb", "rm"]}]},
    # vector and set candidates, the zero op, and the cost term in the loss
    "supernet": {"embedding_dim": 8, "choice_blocks": 2, "set_size": 3, "cost_weight": 0.1, "candidates": [
        {"type": "mlp", "width": 8}, {"type": "cross", "rank": 2}, {"type": "dot"},
        {"type": "attention", "width": 4, "heads": 2}, {"type": "zero"}]},
    # three heterogeneous members at their own test sizes; confidence fusion and the collab loss on
    "cetnet": {"embedding_dim": 8, "members": [
        {"name": "dcnv2", "params": {"dnn_hidden": [32, 16], "num_cross_layers": 2}},
        {"name": "finalmlp", "params": {"mlp1_hidden": [32, 16], "mlp2_hidden": [16], "num_heads": 2}},
        {"name": "rankmixer", "params": {"num_tokens": 4, "hidden_dim": 16}}]},
    "fuxictr-lr": {},
    "fuxictr-dcnv2": {"embedding_dim": 8, "dnn_hidden": [16], "num_cross_layers": 2},
    "fuxictr-deepfm": {"embedding_dim": 8, "dnn_hidden": [16]},
    "fuxictr-dlrm": {"embedding_dim": 8, "bottom_mlp": [8], "top_mlp": [16]},
    "fuxictr-autoint": {"embedding_dim": 8, "attention_dim": 8, "num_heads": 2, "dnn_hidden": [16], "use_wide": True},
    "fuxictr-dcn": {"embedding_dim": 8, "dnn_hidden": [16]},
    "fuxictr-finalmlp": {"embedding_dim": 8, "mlp1_hidden": [16], "mlp2_hidden": [8]},
    "fuxictr-wukong": {"embedding_dim": 8, "num_layers": 2, "fmb_units": [16], "dnn_hidden": [16]},
    "fuxictr-din": {"embedding_dim": 8, "attention_hidden": [8], "dnn_hidden": [16]},
}


# Parameters of a default config above which a test builds it on the meta device only (no
# memory): rankmixer-100m/1b, their MoE versions, concat-mlp-100m.
LARGE = 5_000_000

NEEDS_FUXICTR = pytest.mark.skipif(importlib.util.find_spec("fuxictr") is None,
                                   reason="fuxictr-* models need the optional extra: pip install -e '.[fuxictr]'")


def model_param(name: str, id: str | None = None):
    """``name`` as a pytest parameter, skipped (with the reason) if it is a fuxictr-* model and
    the optional ``fuxictr`` extra is not installed."""
    return pytest.param(name, id=id or name, marks=NEEDS_FUXICTR if name.startswith("fuxictr-") else ())


def registered_models() -> list:
    """Every registered model and variant that builds from any feature map, as a pytest
    parameter (see :func:`model_param`); models bound to one kind of data (``needs``) have their
    own tests."""
    from rankmixer.models import registry

    return [model_param(n) for n in registry.available(general=True)]


def base_model(name: str) -> str:
    """The registered model a variant presets (a model is its own base)."""
    from rankmixer.models import registry

    return registry.get(name).base or name


def small_model(name: str, feature_map: FeatureMap, **overrides) -> torch.nn.Module:
    """Model (or variant) ``name`` at test size, seeded: the variant's presets, then its base
    model's ``SMALL`` sizes, then ``overrides``."""
    from rankmixer.models import registry

    torch.manual_seed(0)
    return registry.build_model(name, feature_map, {**SMALL[base_model(name)], **overrides})


# ---- slow references for RankMixer's layers (shared by the nn and the model tests) ------------


def mixing_reference(x: torch.Tensor) -> torch.Tensor:
    """Token mixing with explicit loops: new token h = concat over t of head h of token t."""
    B, T, D = x.shape
    dh = D // T
    out = torch.empty_like(x)
    for b in range(B):
        for h in range(T):
            for t in range(T):
                out[b, h, t * dh : (t + 1) * dh] = x[b, t, h * dh : (h + 1) * dh]
    return out


def reference_ffns(ffn) -> list[torch.nn.Sequential]:
    """T separate ``nn.Linear`` FFNs carrying a PerTokenFFN's weights (GELU, as its default)."""
    w1, b1, w2, b2 = (p.detach() for p in ffn.stacked_weights())
    refs = []
    for t in range(ffn.num_tokens):
        l1, l2 = torch.nn.Linear(ffn.dim, ffn.hidden), torch.nn.Linear(ffn.hidden, ffn.dim)
        with torch.no_grad():
            l1.weight.copy_(w1[t].T)
            l1.bias.copy_(b1[t])
            l2.weight.copy_(w2[t].T)
            l2.bias.copy_(b2[t])
        refs.append(torch.nn.Sequential(l1, torch.nn.GELU(), l2))
    return refs


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


def request_inputs(client) -> dict[str, str]:
    """A served artifact's request inputs: name -> kind (category, number, category_list, ...)."""
    return {i["name"]: i["kind"] for i in client.get("/v1/model").json()["request_inputs"]}


def hide_fuxictr(monkeypatch) -> None:
    """Make ``import fuxictr`` fail for the rest of the test, as on a machine without the extra."""
    import builtins
    import sys

    real_import = builtins.__import__

    def no_fuxictr(name, *args, **kwargs):
        if name == "fuxictr" or name.startswith("fuxictr."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "fuxictr" or m.startswith("fuxictr.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_fuxictr)


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


# ---- tiny runs, a MovieLens-shaped folder, a live server (the fault-injection suite) -----------


TINY_DATA = {"rows_train": 400, "rows_valid": 200, "rows_test": 200, "n_users": 50, "n_items": 60,
             "vocab_max": 100, "n_categorical": 3, "n_dense": 2, "n_tags": 10, "seq_len": 4}


def tiny_config(root: Path, run: str = "run", *extra: str):
    """A DCNv2 on the tiny synthetic set: 4 steps of 64 rows, a checkpoint every 2 steps."""
    from rankmixer.config import load_config

    return load_config(None, [
        "data.dataset=synthetic", f"data.preset_options={TINY_DATA}", f"data.prepared_dir={root / 'prep'}",
        f"run_dir={root / run}", "model.name=dcnv2", "model.embedding_dim=4", "model.dnn_hidden=[8]",
        "train.max_steps=4", "train.batch_size=64", "train.checkpoint_every_steps=2", "train.keep_checkpoints=3",
        "train.tensorboard=false", "train.progress=false", "train.early_stopping=null", "train.threads=1", *extra,
    ])


# An architecture search space small enough for the tiny config's searches (tests/search).
TINY_SEARCH_SPACE = {
    "sampler": {"name": "tpe", "seed": 0},
    "model": {"embedding_dim": 4},
    "blocks": {"int": [1, 2]},
    "types": {"mlp": {"width": {"int": [4, 16]}}, "cross": {"depth": {"int": [1, 2]}}, "fm": {}, "dot": {}},
}


def tiny_config_file(root: Path) -> Path:
    """:func:`tiny_config` written as ``root/tiny.yaml`` (for commands that take a config file)."""
    from rankmixer.config import dump_config

    path = root / "tiny.yaml"
    dump_config(tiny_config(root), path)
    return path


RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{m},{(u * 7 + m) % 5 + 1}.0,{1_000_000 + 97 * i}\n"
    for i, (u, m) in enumerate((u, m) for u in range(1, 13) for m in (1, 2, 3, 4, 5)))
MOVIES = ("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,\"Heat, The (1995)\",Action\n"
          "3,Casino (1995),Crime\n4,Nixon (1995),Drama\n5,Babe (1995),Children\n")


def movielens_folder(path: Path, movies: str = MOVIES) -> Path:
    """A MovieLens-shaped folder: 60 ratings of 12 users on 5 movies, and movies.csv."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "ratings.csv").write_text(RATINGS)
    (path / "movies.csv").write_text(movies)
    return path


class LiveServer:
    """``rankmixer serve``'s uvicorn configuration (connection deadlines included) in a thread
    on a free loopback port."""

    def __init__(self, artifact_dir: Path, **settings) -> None:
        import uvicorn

        from rankmixer.bench.serve import free_port
        from rankmixer.serve.server import ServeSettings, create_app, uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        s = ServeSettings(**settings)
        self.server = uvicorn.Server(uvicorn_config(create_app(str(artifact_dir), s), "127.0.0.1", self.port, s))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        """Start, and return once /readyz says the artifact is loaded or failed to load."""
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).json()["status"] in ("ready", "failed"):
                    return self
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def app_client(artifact_dir: Path, **settings):
    """An in-process client of the scoring app (handler, parser and micro-batcher all run),
    returned once /readyz says the artifact is loaded."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note on its httpx-based test client
        from starlette.testclient import TestClient

    from rankmixer.serve.server import ServeSettings, create_app

    with TestClient(create_app(str(artifact_dir), ServeSettings(**settings))) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield c
