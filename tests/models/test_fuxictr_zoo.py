"""Our FuxiCTR compositions as FuxiCTR model-zoo models (``models/fuxictr/zoo.py``): the zoo's
keyword arguments map onto our configs as the zoo defines them, the ``BaseModel`` around a
composition computes exactly the registered ``fuxictr-*`` model, FuxiCTR's regularisers see its
tables, and the validation history records what FuxiCTR decided. In process, on in-memory
batches (FuxiCTR's ``fit`` takes any sized iterable of dicts); the whole pipeline with its Ray
loader is tested in ``tests/bench/test_fuxictr_e2e.py``."""

from __future__ import annotations

import pytest
import torch
from tests.factories import make_feature_map, random_batch

from rankmixer.models import registry
from rankmixer.models.fuxictr import batch_to_inputs, fuxictr_feature_map
from rankmixer.models.fuxictr.zoo import ZOO, build_zoo_model

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.skipif(__import__("importlib").util.find_spec("fuxictr") is None,
                                 reason="FuxiCTR zoo models need the optional extra: pip install -e '.[fuxictr]'")]

# Small zoo arguments of every model (the zoo's names).
SMALL_ZOO = {
    "dcnv2": {"embedding_dim": 8, "parallel_dnn_hidden_units": [16], "num_cross_layers": 2},
    "deepfm": {"embedding_dim": 8, "hidden_units": [16]},
    "dlrm": {"embedding_dim": 8, "bottom_mlp_units": [8], "top_mlp_units": [16]},
    "autoint": {"embedding_dim": 8, "attention_dim": 8, "num_heads": 2, "dnn_hidden_units": [16], "use_wide": True},
    "finalmlp": {"embedding_dim": 8, "mlp1_hidden_units": [16], "mlp2_hidden_units": [8], "fs_hidden_units": [8]},
    "wukong": {"embedding_dim": 8, "num_layers": 2, "fmb_units": [16], "mlp_hidden_units": [16]},
}


def zoo_kwargs(tmp_path, **extra) -> dict:
    """What run_expid.py passes besides the model's own arguments."""
    return {"model_root": str(tmp_path), "verbose": 0, "metrics": ["logloss", "AUC"], "optimizer": "adam",
            "loss": "binary_crossentropy", "task": "binary_classification", **extra}


def fuxictr_inputs(fm, batch) -> dict[str, torch.Tensor]:
    """A batch as FuxiCTR's loader gives it: {feature: tensor} plus one column per label."""
    return {**batch_to_inputs(fm, batch), **{lab: batch.labels[:, t] for t, lab in enumerate(fm.labels)}}


def test_zoo_templates_map_onto_our_configs():
    """The zoo's ``<Model>_default`` arguments (model_zoo/*/config/model_config.yaml) land in the
    fields that mean the same thing."""
    dcn = ZOO["dcnv2"].to_config({"model_structure": "parallel", "use_low_rank_mixture": False, "low_rank": 32,
                                  "num_experts": 4, "embedding_dim": 40, "stacked_dnn_hidden_units": [500, 500, 500],
                                  "parallel_dnn_hidden_units": [400, 400], "dnn_activations": "relu",
                                  "num_cross_layers": 3, "net_dropout": 0.4, "batch_norm": False})
    assert dcn == {"embedding_dim": 40, "structure": "parallel", "low_rank_mixture": False, "low_rank": 32,
                   "num_experts": 4, "num_cross_layers": 3, "dropout": 0.4, "batch_norm": False,
                   "dnn_hidden": [400, 400]}
    fin = ZOO["finalmlp"].to_config({"mlp1_hidden_units": [1024, 512], "mlp2_hidden_units": [1024, 512, 256],
                                     "mlp1_dropout": 0.1, "mlp2_dropout": 0.1, "use_fs": True,
                                     "fs_hidden_units": [1024, 512], "num_heads": 2})
    assert fin == {"mlp1_hidden": [1024, 512], "mlp2_hidden": [1024, 512, 256], "use_feature_selection": True,
                   "fs_hidden": [1024, 512], "num_heads": 2, "dropout": 0.1, "batch_norm": False}
    wk = ZOO["wukong"].to_config({"num_layers": 8, "compression_dim": 40, "fmb_units": [200, 200], "fmb_dim": 40,
                                  "project_dim": 8, "dropout_rate": 0.2, "hidden_activations": "relu",
                                  "mlp_hidden_units": [32, 32]})
    assert wk == {"num_layers": 8, "compression_dim": 40, "dnn_hidden": [32, 32], "fmb_units": [200, 200],
                  "fmb_dim": 40, "project_dim": 8, "dropout": 0.2}


@pytest.mark.parametrize("name, params, match", [
    ("dcnv2", {"dnn_activations": "tanh"}, "ReLU only"),
    ("dcnv2", {"model_structure": "stacked_parallel", "stacked_dnn_hidden_units": [8],
               "parallel_dnn_hidden_units": [16]}, "one value for both"),
    ("finalmlp", {"mlp1_dropout": 0.1, "mlp2_dropout": 0.2}, "one value for both"),
    ("dlrm", {"bottom_mlp_dropout": 0.1}, "no dropout"),
])
def test_zoo_arguments_the_composition_cannot_honour_are_errors(name, params, match):
    with pytest.raises(ValueError, match=match):
        ZOO[name].to_config(params)


@pytest.mark.parametrize("num_tasks", [1, 2])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_computes_the_registered_composition(name, num_tasks, tmp_path, generator):
    """``forward`` on FuxiCTR's input dict is sigmoid(the fuxictr-<name> model's logits on our
    Batch) with the same weights: one network, two training loops. Several labels give FuxiCTR's
    MultiTaskModel with one ``<label>_pred`` per label."""
    fm = make_feature_map(num_tasks=num_tasks)
    fx_map = fuxictr_feature_map(fm, 8)
    params = SMALL_ZOO[name]
    zoo = build_zoo_model(name, fx_map, **params, **zoo_kwargs(tmp_path))
    ours = registry.build_model(f"fuxictr-{name}", fm, ZOO[name].to_config(params))
    ours.load_state_dict(zoo.net.state_dict())
    zoo.eval(), ours.eval()
    batch = random_batch(fm, 16, generator)
    with torch.no_grad():
        out = zoo(fuxictr_inputs(fm, batch))
        want = torch.sigmoid(ours(batch).logits)
    keys = ["y_pred"] if num_tasks == 1 else [f"{lab}_pred" for lab in fm.labels]
    assert sorted(out) == sorted(keys)
    assert type(zoo).__mro__[1].__name__ == ("BaseModel" if num_tasks == 1 else "MultiTaskModel")
    for t, k in enumerate(keys):  # a column's sigmoid may round 1 ulp off the whole tensor's
        torch.testing.assert_close(out[k], want[:, t:t + 1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_fuxictrs_embedding_regulariser_covers_the_compositions_tables(num_tasks, tmp_path):
    """FuxiCTR's ``embedding_regularizer`` (lambda / 2 * ||W||^2 per table, BaseModel and
    MultiTaskModel alike) reaches every table of the composition, and ``net_regularizer`` every
    other weight (single task: BaseModel's rule, every parameter outside the embedding layers)."""
    fm = make_feature_map(num_tasks=num_tasks, n_dense=0)  # embeddings = the nn.Embedding tables
    fx_map = fuxictr_feature_map(fm, 8)
    zoo = build_zoo_model("dcnv2", fx_map, **SMALL_ZOO["dcnv2"], **zoo_kwargs(tmp_path),
                          embedding_regularizer=0.1, net_regularizer=0.0)
    tables = [m.weight for m in zoo.modules() if isinstance(m, torch.nn.Embedding)]
    want = sum(0.05 * float((w.detach().double() ** 2).sum()) for w in tables)
    assert len(tables) == len(fm.tables())
    assert float(zoo.regularization_loss().detach()) == pytest.approx(want, rel=1e-6)
    if num_tasks == 1:
        zoo = build_zoo_model("dcnv2", fx_map, **SMALL_ZOO["dcnv2"], **zoo_kwargs(tmp_path),
                              embedding_regularizer=0.0, net_regularizer=0.2)
        ids = {id(m.weight) for m in zoo.modules() if isinstance(m, torch.nn.Embedding)}
        want = sum(0.1 * float((p.detach().double() ** 2).sum()) for p in zoo.parameters() if id(p) not in ids)
        assert float(zoo.regularization_loss().detach()) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("num_tasks", [1, 2])
def test_history_records_what_fuxictrs_fit_decided(num_tasks, tmp_path, generator):
    """FuxiCTR's fit (validation each epoch, reduce-LR-on-plateau x0.1, early stop after
    ``early_stop_patience`` evaluations without improvement): the history has one record per
    evaluation, and its ``improved`` flags and learning rates follow FuxiCTR's rules applied by
    hand to the recorded monitor values."""
    fm = make_feature_map(num_tasks=num_tasks)
    fx_map = fuxictr_feature_map(fm, 8)
    (tmp_path / fm.dataset).mkdir()  # the checkpoint's folder (run_expid's set_logger makes it)
    zoo = build_zoo_model("deepfm", fx_map, **SMALL_ZOO["deepfm"],
                          **zoo_kwargs(tmp_path, monitor="AUC", early_stop_patience=2, learning_rate=0.05))
    train = [fuxictr_inputs(fm, random_batch(fm, 32, generator)) for _ in range(4)]
    valid = [fuxictr_inputs(fm, random_batch(fm, 64, generator)) for _ in range(2)]
    zoo.fit(train, epochs=6, validation_data=valid)
    h = zoo.history
    assert [r["epoch"] for r in h] == list(range(1, len(h) + 1))
    assert [r["step"] for r in h] == [4 * (i + 1) for i in range(len(h))]
    best, bad, lr = -float("inf"), 0, 0.05
    for r in h:
        improved = r["AUC"] >= best + 1e-6
        best, bad = (r["AUC"], 0) if improved else (best, bad + 1)
        lr = lr if improved else max(lr * 0.1, 1e-6)
        assert r["improved"] == improved
        assert r["lr"] == pytest.approx(lr)
    assert (len(h) == 6) or bad >= 2  # stopped early only after two bad evaluations
