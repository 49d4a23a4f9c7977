"""Shared test helpers: hand-built feature maps and random valid batches.

``make_feature_map`` / ``random_batch`` are plain functions (import them with
``from conftest import make_feature_map, random_batch``); ``tiny_feature_map`` is the fixture form.
"""

from __future__ import annotations

import pytest
import torch

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureInfo, FeatureMap


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


@pytest.fixture
def tiny_feature_map() -> FeatureMap:
    return make_feature_map()


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread: the tensors in unit tests are tiny, and with the
    default thread pool a busy 2-core machine (other test runs beside this one) makes small ops
    10-30x slower through oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
