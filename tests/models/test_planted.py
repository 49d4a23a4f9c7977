"""The model-class oracle (``planted``): with the generator's true parameters loaded it must
reproduce the generator's own click probabilities (the ``bayes_p`` column, float64 numpy) row for
row through our data pipeline; trained from scratch it must learn; without a planted form it must
say what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from rankmixer import experiment
from rankmixer.config import load_config
from rankmixer.data.datasets.synthetic import config_from_dir, split_files
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry
from rankmixer.models.planted import PlantedModel

pytestmark = pytest.mark.usefixtures("single_thread")

# Small enough to prepare in seconds; no hashing (every id has its own row), fields small enough
# to interact, every group of the planted model switched on.
OPTS = {"rows_train": 3000, "rows_valid": 500, "rows_test": 500, "n_users": 150, "n_items": 200,
        "vocab_min": 5, "vocab_max": 300, "n_categorical": 8, "n_dense": 6, "n_tags": 40, "max_tags": 3,
        "seq_len": 6, "n_item_clusters": 10, "hash_above": None, "interaction_vocab_max": 300, "n_pairs": 6}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    cfg = load_config(None, ["data.dataset=synthetic", f"data.preset_options={json.dumps(OPTS)}",
                             f"data.prepared_dir={root / 'prep'}", f"run_dir={root / 'run'}", "model.name=planted"])
    fm = experiment.prepare_data(cfg.data, log=lambda m: None)
    raw = Path(f"{root / 'prep'}-raw")
    return cfg, fm, root / "prep", raw, Generator(config_from_dir(raw))


def _our_to_generator_ids(prep: Path, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(our ids, the generator's ids) of one table's vocabulary: the raw value is the id."""
    vocab = pl.read_parquet(prep / "vocab" / f"{table}.parquet")
    return vocab["id"].to_numpy(), vocab["value"].cast(pl.Int64).to_numpy()


def _load_true_parameters(model: PlantedModel, gen: Generator, prep: Path) -> None:
    st = model.st
    with torch.no_grad():
        def put(table: torch.nn.Embedding, name: str, values: np.ndarray) -> None:
            ours, theirs = _our_to_generator_ids(prep, name)
            table.weight[torch.as_tensor(ours)] = torch.tensor(values[theirs], dtype=torch.float32).reshape(len(ours), -1)

        for n in st["fields"]:
            put(model.w1[n], n, gen.w1[n])
        put(model.w_tags, "tags", gen.w_tags)
        for n, table in model.lat.items():
            put(table, n, gen.lat_tags if n == "tags" else gen.lat[n])
        # A user's own vector: the generator's composed one minus its attributes' part.
        a_share = gen.cfg.attribute_share ** 0.5
        for side, attrs in model.attrs.items():
            mix = sum(gen.lat[a][gen.attr[a]] for a in attrs) / len(attrs) ** 0.5
            put(model.lat[side], side, gen.lat[side] - a_share * mix)
            model.attr_scale[side].fill_(a_share)
        put(model.dcat_slope, st["dense_terms"]["dcat"][1], gen.dcat_slope)
        model.beta.copy_(torch.as_tensor(gen.dense_beta))
        model.x_mean.copy_(torch.as_tensor(gen.x_mean))
        model.x_std.copy_(torch.as_tensor(gen.x_std))
        model.mlp[0].weight.copy_(torch.as_tensor(gen.mlp_w1.T))
        model.mlp[0].bias.copy_(torch.as_tensor(gen.mlp_b1))
        model.mlp[2].weight.copy_(torch.as_tensor(gen.mlp_w2[None, :]))
        # logit = bias + sum_g scale_g / std_g * sum_{k in g} (term_k - mu_k) / sd_k
        cfg = gen.cfg
        scale = {"first": cfg.first_order_scale, "pair": cfg.pairwise_scale, "triple": cfg.triple_scale,
                 "mlp": cfg.mlp_scale, "dense": cfg.dense_scale, "seq": cfg.seq_scale}
        bias = gen.bias
        for k, term in enumerate(model.terms):
            g = term.split(":")[0]
            mu, sd = gen.term_stats[term]
            c = scale[g] / gen.group_std[g] / (sd if sd > 1e-12 else 1.0)
            model.coef[k] = c
            bias -= c * mu
        model.bias.fill_(bias)


def test_true_parameters_give_the_generators_probabilities(prepared):
    cfg, fm, prep, raw, gen = prepared
    model = registry.build_model("planted", fm).eval()
    assert set(model.terms) == set(gen.term_stats)  # the form has every term the generator has
    assert model.attrs.get("user")  # and composes the user's latent from its attributes
    _load_true_parameters(model, gen, prep)
    truth = pl.concat([pl.read_parquet(raw / f) for f in split_files(gen.cfg, "train")])
    p, y = [], []
    with torch.no_grad():
        for batch in make_loader(ParquetBatches(fm, "train", 512, shuffle=False)):
            p.append(torch.sigmoid(model(batch).logits[:, 0]).double().numpy())
            y.append(batch.labels[:, 0].numpy())
    p, y = np.concatenate(p), np.concatenate(y)
    assert len(p) == truth.height
    np.testing.assert_array_equal(y, truth["click"].to_numpy())  # same rows, same order
    np.testing.assert_allclose(p, truth["bayes_p"].to_numpy(), rtol=0, atol=2e-5)


def test_trained_from_scratch_beats_chance_and_learns(prepared, tmp_path):
    cfg, fm, prep, raw, gen = prepared
    run = load_config(None, ["data.dataset=synthetic", f"data.preset_options={json.dumps(OPTS)}",
                             f"data.prepared_dir={prep}", f"run_dir={tmp_path / 'run'}", "model.name=planted",
                             "train.epochs=3", "train.batch_size=256", "train.early_stopping=null",
                             "train.tensorboard=false", "train.progress=false", "train.threads=1"])
    result = experiment.train(run, log=lambda m: None)
    # 3000 rows: far from Bayes, but the oracle's form must already rank the held-out rows.
    assert result["test"]["auc"] > 0.6
    assert result["bayes"]["test"]["auc"] > result["test"]["auc"] - 0.02


def test_needs_the_planted_form(tiny_feature_map):
    assert registry.get("planted").needs and "planted" not in registry.available(general=True)
    with pytest.raises(ValueError, match="planted model's form"):
        registry.build_model("planted", tiny_feature_map)


def test_data_prepared_before_the_form_was_kept_gets_it_on_reuse(tmp_path):
    """A synthetic set prepared by an older version (no extras['planted']) is not re-encoded:
    reusing it refreshes the feature map's extras, so the oracle builds on it."""
    from tests.factories import TINY_DATA

    cfg = load_config(None, ["data.dataset=synthetic", f"data.preset_options={json.dumps(TINY_DATA)}",
                             f"data.prepared_dir={tmp_path / 'prep'}", f"run_dir={tmp_path / 'run'}"])
    experiment.prepare_data(cfg.data, log=lambda m: None)
    path = tmp_path / "prep" / "feature_map.json"
    old = json.loads(path.read_text())
    del old["extras"]["planted"]
    path.write_text(json.dumps(old))
    shards = sorted((tmp_path / "prep").rglob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    logs: list[str] = []
    fm = experiment.prepare_data(cfg.data, log=logs.append)
    assert "planted" in fm.extras and "planted" in json.loads(path.read_text())["extras"]
    assert any("refreshed" in m for m in logs)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # reused, not prepared again
    registry.build_model("planted", fm)
