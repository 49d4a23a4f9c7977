"""fuxictr-din: FuxiCTR's DIN composition on behaviours. The network is checked against a
float64 loop over rows and positions (the zoo's DIN written out: attention of the shared
fields' concatenated vectors against the candidate's, mean of the other fields, one MLP), and
it trains through our trainer on the synthetic behaviour set. Skipped, with the reason, without
the ``fuxictr`` extra (except the install-hint test)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.factories import NEEDS_FUXICTR, hide_fuxictr

from rankmixer import experiment
from rankmixer.config import load_config
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry

pytestmark = pytest.mark.usefixtures("single_thread")

OPTS = {"rows_train": 3000, "rows_valid": 500, "rows_test": 500, "n_users": 50, "n_items": 120,
        "n_categories": 8, "seq_len_max": 12, "return_period": 6, "attention_window": 4}


@pytest.fixture(scope="module")
def behaviour_3k(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuxictr_din")
    cfg = load_config(None, ["data.dataset=behaviour", f"data.preset_options={json.dumps(OPTS)}",
                             f"data.prepared_dir={root / 'prep'}", f"run_dir={root / 'run'}"])
    return root, experiment.prepare_data(cfg.data, log=lambda m: None)


def test_missing_fuxictr_gives_install_hint(monkeypatch, behaviour_3k):
    hide_fuxictr(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install .*\.\[fuxictr\]"):
        registry.build_model("fuxictr-din", behaviour_3k[1])


@NEEDS_FUXICTR
@pytest.mark.parametrize("softmax", [False, True])
def test_matches_a_float64_loop(behaviour_3k, softmax):
    fm = behaviour_3k[1]
    torch.manual_seed(0)
    model = registry.build_model("fuxictr-din", fm, {"embedding_dim": 4, "attention_hidden": [8], "dnn_hidden": [8],
                                                     "softmax": softmax}).double()
    tables = model.embedding_layer.embedding_layer.embedding_layers
    with torch.no_grad():  # embeddings large enough that the scores differ between positions
        for t in tables.values():
            t.weight.normal_(0.0, 0.5)
            t.weight[0].zero_()
    batch = next(iter(make_loader(ParquetBatches(fm, "train", 64, shuffle=False))))
    batch.behaviours["hist"][:3] = 0  # some empty histories
    model.train()
    model(batch)  # one training step's forward: Dice's running statistics move off their init
    model.eval()
    assert model.pairs == [(("item", "cat"), ("hist__item", "hist__cat"))]
    names = [f.name for f in fm.sparse]
    assert names == ["user", "item", "cat"]
    ids = batch.behaviours["hist"]  # [B, L, 4]: item, cat, type, dt
    unit = model.attention_layers[0].attention_layer
    with torch.no_grad():
        got = model(batch).logits
        for r in range(ids.shape[0]):
            row = [tables[n].weight[batch.sparse[r, j]] for j, n in enumerate(names)]
            q = torch.cat(row[1:3])
            positions = [p for p in range(ids.shape[1]) if ids[r, p, 0] != 0]
            keys = [torch.cat([tables["item"].weight[ids[r, p, 0]], tables["cat"].weight[ids[r, p, 1]]])
                    for p in positions]
            scores = [unit(torch.cat([q, k, q - k, q * k]).unsqueeze(0))[0, 0] for k in keys]
            if softmax and scores:
                scores = list(torch.stack(scores).softmax(0))
            pooled = sum((s * k for s, k in zip(scores, keys)), torch.zeros(8, dtype=torch.float64))
            zero = torch.zeros(4, dtype=torch.float64)
            means = [sum((tables[f"hist__{f}"].weight[ids[r, p, c]] for p in positions), zero) / (len(positions) + 1e-12)
                     for c, f in ((2, "type"), (3, "dt"))]
            expected = model.dnn(torch.cat([*row, pooled, *means]).unsqueeze(0))[0]
            torch.testing.assert_close(got[r], expected, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(got[:3]).all()


@NEEDS_FUXICTR
def test_pad_positions_do_not_matter(behaviour_3k):
    """Ids at pad positions of the non-key fields change nothing in eval mode (the mask is the
    key field's; mean pooling skips zero vectors)."""
    fm = behaviour_3k[1]
    torch.manual_seed(0)
    model = registry.build_model("fuxictr-din", fm, {"embedding_dim": 4, "attention_hidden": [8],
                                                     "dnn_hidden": [8]}).eval()
    batch = next(iter(make_loader(ParquetBatches(fm, "train", 64, shuffle=False))))
    with torch.no_grad():
        before = model(batch).logits
        for t in model.embedding_layer.embedding_layer.embedding_layers.values():
            assert (t.weight[0] == 0).all()  # pad rows are zero vectors
        padded = batch.behaviours["hist"][:, :, 0] == 0
        assert padded.any()
        # a history shortened by one: its last position becomes pad
        lengths = (~padded).sum(1)
        r = int(torch.nonzero(lengths > 1)[0])
        shorter = batch.behaviours["hist"].clone()
        shorter[r, lengths[r] - 1] = 0
        batch.behaviours["hist"] = shorter
        after = model(batch).logits
    others = torch.arange(len(before)) != r
    torch.testing.assert_close(after[others], before[others])
    assert not torch.allclose(after[r], before[r])


@NEEDS_FUXICTR
def test_trains_through_our_trainer(behaviour_3k, tmp_path):
    root, fm = behaviour_3k
    cfg = load_config("behaviour_fuxictr_din", [
        f"data.preset_options={json.dumps(OPTS)}", f"data.prepared_dir={root / 'prep'}", f"run_dir={tmp_path / 'run'}",
        "model.embedding_dim=8", "model.attention_hidden=[16]", "model.dnn_hidden=[32]",
        "train.epochs=4", "train.batch_size=128", "train.early_stopping=null", "train.tensorboard=false",
        "train.progress=false", "train.threads=1"])
    result = experiment.train(cfg, log=lambda m: None)
    assert cfg.model["name"] == "fuxictr-din"
    assert math.isfinite(result["test"]["logloss"]) and 0.0 <= result["test"]["auc"] <= 1.0
    assert result["test"]["auc"] > 0.6, result["test"]  # the planted set's Bayes AUC is about 0.9
