"""Review features: the aggregation against hand-computed counts, and ``features reviews`` end to
end on a 20-review Parquet file with the tiny trained model (bad inputs included)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.data.schema import Schema
from rankmixer.text.features import aggregate, column_names, normalize_term, schema_snippet

runner = CliRunner()

REVIEWS = [
    ("b", [("Food", "great", "positive"), ("service", "slow", "negative")]),
    ("a", [("food ", "bad", "negative")]),
    ("b", [("FOOD", "Great", "positive"), ("wine  list", "nice", "neutral")]),
    ("a", None),  # a skipped review: its item keeps a row, the review is not counted
    ("c", []),  # a review without triplets
    ("b", [("hot|dog", "ok", "neutral")]),
]


def test_normalize_term():
    assert normalize_term("  Wine \t LIST ") == "wine list"
    assert normalize_term("hot|dog") == "hot/dog"
    assert column_names(["a b", "a-b", "!!"]) == ["review_a_b", "review_a_b_2", "review_aspect"]


def test_aggregate_matches_hand_counts():
    f = aggregate(REVIEWS, top_k=2, max_terms=3)
    # food 3 triplets; hot/dog, service, wine list 1 each: the tie goes alphabetically
    assert f.aspects == ["food", "hot/dog"]
    c = f.columns
    assert c["item"] == ["a", "b", "c"]
    assert c["review_count"] == [1, 3, 1]
    assert c["review_triplets"] == [1, 5, 0]
    assert c["review_sentiment"][0] == -1.0 and c["review_sentiment"][1] == pytest.approx((2 - 1) / 5)
    assert c["review_sentiment"][2] is None
    assert c["review_positive_share"][:2] == [0.0, pytest.approx(2 / 5)] and c["review_positive_share"][2] is None
    assert c["review_negative_share"][:2] == [1.0, pytest.approx(1 / 5)] and c["review_negative_share"][2] is None
    assert c["review_food_pos"] == [0, 2, 0] and c["review_food_neu"] == [0, 0, 0] and c["review_food_neg"] == [1, 0, 0]
    assert c["review_hot_dog_pos"] == [0, 0, 0] and c["review_hot_dog_neu"] == [0, 1, 0]
    assert c["review_hot_dog_neg"] == [0, 0, 0]
    assert c["review_aspects"] == ["food", "food|hot/dog|service", None]
    assert c["review_opinions"] == ["bad", "great|nice|ok", None]
    assert list(c) == ["item", "review_count", "review_triplets", "review_sentiment", "review_positive_share",
                       "review_negative_share", "review_food_pos", "review_food_neu", "review_food_neg",
                       "review_hot_dog_pos", "review_hot_dog_neu", "review_hot_dog_neg", "review_aspects",
                       "review_opinions"]


def test_aggregate_rejects_an_unknown_sentiment():
    with pytest.raises(ValueError, match="item 'x'.*'great'"):
        aggregate([("x", [("food", "tasty", "great")])])


def test_schema_snippet_joins_into_a_schema():
    snippet = schema_snippet(aggregate(REVIEWS, top_k=2, max_terms=3))
    assert snippet["join_on"] == "item" and snippet["aspects"] == ["food", "hot/dog"]
    schema = Schema.model_validate({
        "name": "joined",
        "source": {"format": "parquet", "columns": [{"name": "click", "type": "int"}, {"name": "item"},
                                                    *snippet["columns"]]},
        "labels": [{"name": "click"}],
        "features": [{"name": "item", "type": "categorical"}, *snippet["features"]],
        "feature_groups": snippet["feature_groups"],
    })
    bags = [f.name for f in schema.features if f.type == "multi_categorical"]
    assert bags == ["review_aspects", "review_opinions"] and schema.feature("review_aspects").separator == "|"
    assert schema.feature("review_food_neg").type == "numerical"


TEXTS = ["the food was great .", "the service was rude .", "great hot dogs , we will come back",
         "i think the staff is friendly here", "the price was awful .", "the screen was excellent ."]


def reviews_table(path, text_type=pa.string(), texts=None):
    """20 reviews of 5 items, one of them empty and one with a null item."""
    items, bodies = [], []
    for k in range(20):
        items.append(f"i{k % 5}")
        bodies.append(TEXTS[k % len(TEXTS)])
    bodies[3] = "   "
    items[7] = None
    if texts is not None:
        bodies = texts
    pq.write_table(pa.table({"asin": pa.array(items), "body": pa.array(
        [b.encode() if isinstance(b, str) and text_type == pa.binary() else b for b in bodies], text_type)}), path)
    return items, bodies


@pytest.fixture(scope="module")
def extracting(tiny_aste, tiny_config, tmp_path_factory):
    """A tiny model trained long enough (20 epochs, about a second) to extract triplets; the
    shared two-epoch ``trained`` model finds none."""
    out = tmp_path_factory.mktemp("runs") / "gts20"
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--out", str(out), "--seed", "3",
                            "--epochs", "20", "-c", str(tiny_config)])
    assert r.exit_code == 0, r.output
    return out


def test_features_reviews_end_to_end(extracting, tmp_path):
    model = extracting
    src = tmp_path / "reviews.parquet"
    items, bodies = reviews_table(src)
    out = tmp_path / "feats" / "features.parquet"
    r = runner.invoke(app, ["features", "reviews", "--reviews", str(src), "--model", str(model), "--out", str(out),
                            "--item-column", "asin", "--text-column", "body", "--top-k", "3"])
    assert r.exit_code == 0, r.output
    assert "reviews/s" in r.output
    arrow = pq.read_table(out)
    assert arrow.schema.field("review_aspects").type == pa.string()  # even if no item had a triplet
    assert arrow.schema.field("review_sentiment").type == pa.float64()
    assert arrow.schema.field("review_count").type == pa.int64()
    table = arrow.to_pydict()
    assert table["asin"] == ["i0", "i1", "i2", "i3", "i4"]
    # per item: rows with a non-null item and non-blank text, counted by hand from the input
    expected = {i: sum(1 for it, b in zip(items, bodies) if it == i and b.strip()) for i in table["asin"]}
    assert dict(zip(table["asin"], table["review_count"])) == expected
    report = json.loads((tmp_path / "feats" / "features.json").read_text())
    assert report["skipped"] == {"null_item": 1, "empty": 1, "non_utf8": 0}
    assert report["reviews_extracted"] == 18 and report["items"] == 5 and report["reviews_per_second"] > 0
    assert report["triplets"] == sum(table["review_triplets"])
    assert report["triplets"] > 0 and report["top_aspects"]
    # the features are the triplets `text extract` finds for the same texts, aggregated by hand
    csv = tmp_path / "r.csv"
    csv.write_text("text\n" + "\n".join(b if b.strip() else "x" for b in bodies) + "\n")
    jsonl = tmp_path / "t.jsonl"
    assert runner.invoke(app, ["text", "extract", "--model", str(model), "--input", str(csv),
                               "--out", str(jsonl)]).exit_code == 0
    triplets: dict[str, list] = {i: [] for i in table["asin"]}
    for line in map(json.loads, jsonl.read_text().splitlines()):
        k = line["row"]
        if items[k] is not None and bodies[k].strip():
            triplets[items[k]] += [(t["aspect"].lower(), t["sentiment"]) for t in line["triplets"]]
    value = {"positive": 1, "neutral": 0, "negative": -1}
    for row, item in enumerate(table["asin"]):
        got = triplets[item]
        assert table["review_triplets"][row] == len(got)
        if got:
            assert table["review_sentiment"][row] == pytest.approx(sum(value[s] for _, s in got) / len(got))
        else:
            assert table["review_sentiment"][row] is None
        for aspect in report["top_aspects"]:
            for sentiment, short in (("positive", "pos"), ("neutral", "neu"), ("negative", "neg")):
                column = f"review_{aspect.replace(' ', '_')}_{short}"
                assert table[column][row] == got.count((aspect, sentiment)), (item, column)
    snippet = yaml.safe_load((tmp_path / "feats" / "features.schema.yaml").read_text())
    assert {f["name"] for f in snippet["features"]} == set(table) - {"asin"} and snippet["join_on"] == "asin"


def test_features_reviews_bad_input(trained, tmp_path):
    model, _ = trained
    src = tmp_path / "reviews.parquet"
    reviews_table(src)
    out = tmp_path / "f.parquet"
    r = runner.invoke(app, ["features", "reviews", "--reviews", str(src), "--model", str(model), "--out", str(out)])
    assert r.exit_code == 2 and "'item', 'text'" in r.output and "asin, body" in r.output and not out.exists()
    r = runner.invoke(app, ["features", "reviews", "--reviews", str(src), "--model", str(model), "--out", str(src),
                            "--item-column", "asin", "--text-column", "body"])
    assert r.exit_code == 2 and "also an input" in r.output
    assert pq.read_table(src).num_rows == 20  # the input is untouched
    r = runner.invoke(app, ["features", "reviews", "--reviews", str(src), "--model", str(model),
                            "--out", str(tmp_path / "f.csv"), "--item-column", "asin", "--text-column", "body"])
    assert r.exit_code == 2 and ".parquet" in r.output


def test_features_reviews_non_utf8_fails_or_is_skipped(trained, tmp_path):
    model, _ = trained
    src = tmp_path / "bytes.parquet"
    texts = [TEXTS[k % len(TEXTS)].encode() for k in range(20)]
    texts[5] = b"bad \xff\xfe bytes"
    reviews_table(src, pa.binary(), texts)
    out = tmp_path / "f.parquet"
    args = ["features", "reviews", "--reviews", str(src), "--model", str(model), "--out", str(out),
            "--item-column", "asin", "--text-column", "body"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "row 5" in r.output and "UTF-8" in r.output and not out.exists()
    r = runner.invoke(app, [*args, "--on-bad-row", "skip"])
    assert r.exit_code == 0, r.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["skipped"] == {"null_item": 1, "empty": 0, "non_utf8": 1} and report["reviews_extracted"] == 18
