"""The review-ranking set on a tiny hand-made ASTE-V2 file: the same seed gives the same files,
the meta's Bayes AUC is sklearn's on the written labels and probabilities, and the click
probability is the planted formula, recomputed here from the reviews' gold triplets (read by
rankmixer.text.aste, not the generator's own reader). Also: the preset with review features
joins them on the item through the real preparation."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from rankmixer.data.datasets.base import get_preset
from rankmixer.data.datasets.reviews import generate
from rankmixer.text.aste import read_aste
from rankmixer.text.features import aggregate, schema_snippet

ASPECTS = ["food", "service", "wine list", "staff", "price", "decor", "hot dogs", "music"]
OPINIONS = {"positive": ["great", "top notch"], "neutral": ["average"], "negative": ["awful", "too slow"]}


def tags(words, start, length):
    return " ".join(f"{w}\\{'B' if i == start else 'I' if start < i < start + length else 'O'}"
                    for i, w in enumerate(words))


def sentence(rng: random.Random) -> dict:
    """One or two (aspect, opinion) clauses, each with its gold triple; sometimes none."""
    if rng.random() < 0.1:
        return {"sentence": "we came on a tuesday .", "triples": []}
    clauses = [(rng.choice(ASPECTS), rng.choice(["positive", "positive", "neutral", "negative"])) for _ in
               range(rng.choice([1, 1, 2]))]
    parts, spans = [], []
    for aspect, sentiment in clauses:
        opinion = rng.choice(OPINIONS[sentiment])
        start = len(" ".join(parts).split()) + (1 if parts else 0) + 1  # after "the" (and "and")
        parts.append(("and " if parts else "") + f"the {aspect} was {opinion}")
        spans.append((start, len(aspect.split()), start + len(aspect.split()) + 1, len(opinion.split()), sentiment))
    words = (" ".join(parts) + " .").split()
    return {"sentence": " ".join(words), "triples": [
        {"target_tags": tags(words, a, la), "opinion_tags": tags(words, o, lo), "sentiment": s}
        for a, la, o, lo, s in spans]}


@pytest.fixture(scope="module")
def aste_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aste")
    (root / "toy").mkdir()
    rng = random.Random(1)
    (root / "toy" / "train.json").write_text(json.dumps([sentence(rng) for _ in range(120)]))
    return root


def config(aste_root, **over):
    return {"aste_dir": str(aste_root), "aste_datasets": ["toy"], "rows_train": 3000, "rows_valid": 1000,
            "rows_test": 1000, "n_users": 200, "n_items": 150, "n_aspects": 5, **over}


@pytest.fixture(scope="module")
def generated(aste_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "reviews"
    return out, generate(config(aste_root), out, progress=False)


def test_same_seed_same_files(aste_root, generated, tmp_path):
    out, _ = generated
    again = tmp_path / "again"
    generate(config(aste_root), again, progress=False)
    for name in ("train.parquet", "valid.parquet", "test.parquet", "reviews.parquet", "schema.yaml"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    generate(config(aste_root, seed=7), other, progress=False)
    assert (out / "train.parquet").read_bytes() != (other / "train.parquet").read_bytes()


def test_meta_bayes_auc_is_sklearns(generated):
    out, meta = generated
    for split in ("train", "valid", "test"):
        t = pq.read_table(out / f"{split}.parquet").to_pydict()
        y, p = np.array(t["click"]), np.array(t["bayes_p"])
        assert len(y) == meta["splits"][split]["rows"] and set(np.unique(y)) == {0, 1}
        # the meta ranks float32 p
        assert meta["splits"][split]["bayes_auc"] == pytest.approx(roc_auc_score(y, p.astype(np.float32)), abs=1e-12)
        assert meta["splits"][split]["label_mean"] == pytest.approx(y.mean())


def gold_profiles(aste_root: Path, out: Path, aspects: list[str]) -> tuple[dict, np.ndarray]:
    """Per item: the net sentiment share per aspect of its reviews' gold triplets."""
    gold = read_aste(aste_root / "toy" / "train.json").sentences
    reviews = pq.read_table(out / "reviews.parquet").to_pydict()
    sign = {"positive": 1, "neutral": 0, "negative": -1}
    net: dict[str, np.ndarray] = {}
    total: Counter = Counter()
    for item, text, source in zip(reviews["item"], reviews["text"], reviews["source"]):
        s = gold[int(source.split("#")[1])]
        assert " ".join(s.tokens) == text
        row = net.setdefault(item, np.zeros(len(aspects)))
        for t in s.triplets:
            aspect = " ".join(s.tokens[t.aspect[0]:t.aspect[1] + 1]).lower()
            total[item] += 1
            if aspect in aspects:
                row[aspects.index(aspect)] += sign[t.sentiment]
    return {i: net[i] / max(total[i], 1) for i in net}, gold


def test_click_probability_is_the_planted_formula(aste_root, tmp_path):
    out = tmp_path / "plain"
    meta = generate(config(aste_root, first_order_scale=0.0, review_scale=2.0), out, progress=False)
    aspects = meta["planted_model"]["aspects"]
    profiles, gold = gold_profiles(aste_root, out, aspects)
    counts = Counter(" ".join(s.tokens[t.aspect[0]:t.aspect[1] + 1]).lower() for s in gold for t in s.triplets)
    assert aspects == sorted(counts, key=lambda a: (-counts[a], a))[:5]
    assert len(profiles) == 150  # every item has reviews
    norm = np.sqrt(np.mean([(v ** 2).sum() for v in profiles.values()]))
    t = pq.read_table(out / "train.parquet").to_pydict()
    taste = np.stack([t[f"taste_{k:02d}"] for k in range(5)], axis=1)
    review = np.array([taste[r] @ profiles[i] for r, i in enumerate(t["item"])]) / norm
    p = np.array(t["bayes_p"])
    residual = np.log(p / (1 - p)) - 2.0 * review
    assert np.ptp(residual) < 1e-9  # without first-order terms, all that is left is the constant
    # users who like the top aspect click more where the reviews praise it than where they criticise it
    share = np.array([profiles[i][0] for i in t["item"]])
    likes = taste[:, 0] > 1.0
    assert p[likes & (share > 0)].mean() > p[likes & (share < 0)].mean() + 0.05


def test_dependency_present_with_default_scales(aste_root, generated):
    out, meta = generated
    profiles, _ = gold_profiles(aste_root, out, meta["planted_model"]["aspects"])
    t = pq.read_table(out / "train.parquet").to_pydict()
    taste = np.stack([t[f"taste_{k:02d}"] for k in range(5)], axis=1)
    review = np.array([taste[r] @ profiles[i] for r, i in enumerate(t["item"])])
    p = np.array(t["bayes_p"])
    assert np.corrcoef(review, np.log(p / (1 - p)))[0, 1] > 0.8  # review term sd 1.5 vs first order 0.5
    assert 0.1 < np.mean(p) < 0.3


def test_missing_aste_data_and_too_many_aspects(aste_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/toy/train.json.*aste_dir"):
        generate(config(tmp_path / "nowhere"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="n_aspects is 50.*only 8 distinct aspects"):
        generate(config(aste_root, n_aspects=50), tmp_path / "b", progress=False)


def test_preset_joins_review_features(aste_root, generated, tmp_path):
    from rankmixer.data.loader import ParquetBatches, make_loader
    from rankmixer.data.prepare import prepare

    out, _ = generated
    _, gold = gold_profiles(aste_root, out, [])
    reviews = pq.read_table(out / "reviews.parquet").to_pydict()
    by_review = []
    for item, source in zip(reviews["item"], reviews["source"]):
        s = gold[int(source.split("#")[1])]
        by_review.append((item, [(" ".join(s.tokens[a[0]:a[1] + 1]), " ".join(s.tokens[o[0]:o[1] + 1]), t.sentiment)
                                 for t in s.triplets for a, o in [(t.aspect, t.opinion)]]))
    features = aggregate([r for r in by_review if r[0] != "0"], top_k=3)  # item 0 gets no row: a left join
    table = tmp_path / "feats.parquet"
    pq.write_table(pa.table(features.columns), table)
    table.with_suffix(".schema.yaml").write_text(yaml.safe_dump(schema_snippet(features)))

    preset = get_preset("reviews", review_features=str(table), **config(aste_root))
    names = [f.name for f in preset.schema().features]
    assert names[:2] == ["user", "item"] and "review_sentiment" in names and "review_aspects" in names
    assert preset.side_files(out) == [table]
    fm = prepare(preset.schema(), preset.raw_files(out), tmp_path / "prep", preset=preset, raw_path=out,
                 log=lambda _: None)
    assert [f.name for f in fm.bags] == ["review_aspects", "review_opinions"]
    assert {"review_count", "review_sentiment", "taste_00"} <= {f.name for f in fm.dense}
    # the prepared test rows carry their item's features (log1p of the count; 0 for an item
    # without a features row), in the raw files' order
    count = dict(zip(features.columns["item"], features.columns["review_count"]))
    raw_items = pq.read_table(out / "test.parquet").column("item").to_pylist()
    assert "0" in raw_items
    prepared = pq.read_table(fm.split_files("test")).column("review_count").to_numpy()
    assert np.allclose(prepared, np.log1p([count.get(i, 0) for i in raw_items]), atol=1e-6)
    batch = next(iter(make_loader(ParquetBatches(fm, "test", 64, shuffle=False))))
    assert batch.dense.shape[0] == 64
    # the plain preset has no review feature and reads the same raw files without regenerating
    plain = get_preset("reviews", **config(aste_root))
    assert not any(f.name.startswith("review_") for f in plain.schema().features)
    stamp = (out / "reviews_meta.json").stat().st_mtime_ns
    plain.raw_files(out)
    assert (out / "reviews_meta.json").stat().st_mtime_ns == stamp
