"""Our FuxiCTR compositions as FuxiCTR model-zoo models: built from FuxiCTR's own ``FeatureMap``
and the zoo's keyword arguments, trained by FuxiCTR's ``BaseModel`` (the end-to-end runner,
:mod:`rankmixer.bench.fuxictr_e2e`).

Why not the zoo's files: the network must be the one our ``fuxictr-*`` rows train (one
implementation per model), so only the training machinery differs between the two rows. What
this module adds is the zoo's interface:

* :data:`ZOO`: per model, the zoo class name, our composition, and how the zoo's keyword
  arguments (``model_zoo/<Model>/src/<Model>.py``, as in its ``<Model>_default`` template) map
  onto our config. A zoo argument the composition cannot honour (a non-ReLU activation, two
  dropout rates where the composition has one) is an error, never silently dropped.
* :func:`build_zoo_model`: the thin ``BaseModel`` around the composition, shaped like the zoo's
  ``DCNv2.py`` (``compile``, ``reset_parameters``, ``model_to_device``; ``forward`` returns
  ``{"y_pred": sigmoid(logit)}``). Several labels make it a FuxiCTR ``MultiTaskModel`` (one
  output per label, ``{label}_pred``; its loss is the sum of the per-task BCEs, its "EQ" weights).

WuKong maps the zoo's WuKong before its June 2025 rewrite (``num_layers``, ``compression_dim``,
...; FuxiCTR <= 2.3.8), which is the layer ``fuxictr-wukong`` composes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rankmixer.models.fuxictr.autoint import FuxiAutoInt, FuxiAutoIntConfig
from rankmixer.models.fuxictr.common import FuxiCTRConfig, FuxiCTRModel, require_fuxictr
from rankmixer.models.fuxictr.dcnv2 import FuxiDCNv2, FuxiDCNv2Config
from rankmixer.models.fuxictr.deepfm import FuxiDeepFM, FuxiDeepFMConfig
from rankmixer.models.fuxictr.dlrm import FuxiDLRM, FuxiDLRMConfig
from rankmixer.models.fuxictr.finalmlp import FuxiFinalMLP, FuxiFinalMLPConfig
from rankmixer.models.fuxictr.wukong import FuxiWuKong, FuxiWuKongConfig

__all__ = ["TRAINING_KEYS", "ZOO", "ZooSpec", "build_zoo_model"]

# Keys of a zoo experiment that are not the model's: its training loop, loader and bookkeeping
# (BaseModel.__init__ / fit, RankDataLoader, the zoo's Base section, run_expid.py).
TRAINING_KEYS = frozenset({
    "model", "dataset_id", "model_id", "loss", "metrics", "task", "optimizer", "learning_rate",
    "embedding_regularizer", "net_regularizer", "batch_size", "epochs", "shuffle", "seed", "monitor",
    "monitor_mode", "early_stop_patience", "reduce_lr_on_plateau", "max_gradient_norm", "eval_steps",
    "save_best_only", "model_root", "num_workers", "verbose", "pickle_feature_encoder", "debug_mode",
    "group_id", "use_features", "feature_specs", "feature_config", "gpu",
})


@dataclass(frozen=True)
class ZooSpec:
    zoo_name: str  # the zoo's class name (model_zoo/<zoo_name>)
    model: type[FuxiCTRModel]
    config: type[FuxiCTRConfig]
    keys: frozenset[str]  # the zoo model's keyword arguments
    to_config: Callable[[dict], dict]  # zoo arguments -> our config's fields


def _relu(p: dict, *keys: str) -> None:
    for k in keys:
        if k in p and str(p[k]).lower() != "relu":
            raise ValueError(f"{k}={p[k]!r}: the composition uses ReLU only")


def _same(p: dict, a: str, b: str, default):
    """The one value our config has for the zoo's two keys ``a`` and ``b``."""
    va, vb = p.get(a, default), p.get(b, default)
    if va != vb:
        raise ValueError(f"{a}={va!r} and {b}={vb!r}: the composition has one value for both")
    return va


def _picked(p: dict, mapping: dict[str, str]) -> dict:
    return {ours: p[zoo] for zoo, ours in mapping.items() if zoo in p}


def _dcnv2(p: dict) -> dict:
    _relu(p, "dnn_activations")
    s = p.get("model_structure", "parallel")
    if s == "stacked_parallel":
        hidden = _same(p, "stacked_dnn_hidden_units", "parallel_dnn_hidden_units", [])
    else:  # crossnet_only has no DNN: any valid width list will do
        hidden = p.get("parallel_dnn_hidden_units" if s != "stacked" else "stacked_dnn_hidden_units") or [400, 400, 400]
    return {**_picked(p, {"embedding_dim": "embedding_dim", "model_structure": "structure",
                          "use_low_rank_mixture": "low_rank_mixture", "low_rank": "low_rank",
                          "num_experts": "num_experts", "num_cross_layers": "num_cross_layers",
                          "net_dropout": "dropout", "batch_norm": "batch_norm"}),
            "dnn_hidden": list(hidden)}


def _deepfm(p: dict) -> dict:
    _relu(p, "hidden_activations")
    return _picked(p, {"embedding_dim": "embedding_dim", "hidden_units": "dnn_hidden", "net_dropout": "dropout",
                       "batch_norm": "batch_norm"})


def _dlrm(p: dict) -> dict:
    _relu(p, "top_mlp_activations", "bottom_mlp_activations")
    if p.get("bottom_mlp_dropout", 0):
        raise ValueError(f"bottom_mlp_dropout={p['bottom_mlp_dropout']!r}: the composition's bottom MLP has no dropout")
    return _picked(p, {"embedding_dim": "embedding_dim", "top_mlp_units": "top_mlp", "bottom_mlp_units": "bottom_mlp",
                       "top_mlp_dropout": "dropout", "interaction_op": "interaction", "batch_norm": "batch_norm"})


def _autoint(p: dict) -> dict:
    _relu(p, "dnn_activations")
    return _picked(p, {"embedding_dim": "embedding_dim", "dnn_hidden_units": "dnn_hidden",
                       "attention_layers": "attention_layers", "num_heads": "num_heads",
                       "attention_dim": "attention_dim", "net_dropout": "dropout", "batch_norm": "batch_norm",
                       "layer_norm": "layer_norm", "use_scale": "use_scale", "use_wide": "use_wide",
                       "use_residual": "use_residual"})


def _finalmlp(p: dict) -> dict:
    _relu(p, "mlp1_hidden_activations", "mlp2_hidden_activations")
    return {**_picked(p, {"embedding_dim": "embedding_dim", "mlp1_hidden_units": "mlp1_hidden",
                          "mlp2_hidden_units": "mlp2_hidden", "use_fs": "use_feature_selection",
                          "fs_hidden_units": "fs_hidden", "fs1_context": "fs1_context", "fs2_context": "fs2_context",
                          "num_heads": "num_heads"}),
            "dropout": _same(p, "mlp1_dropout", "mlp2_dropout", 0),
            "batch_norm": _same(p, "mlp1_batch_norm", "mlp2_batch_norm", False)}


def _wukong(p: dict) -> dict:
    _relu(p, "hidden_activations")
    return _picked(p, {"embedding_dim": "embedding_dim", "num_layers": "num_layers",
                       "compression_dim": "compression_dim", "mlp_hidden_units": "dnn_hidden",
                       "fmb_units": "fmb_units", "fmb_dim": "fmb_dim", "project_dim": "project_dim",
                       "dropout_rate": "dropout"})


ZOO: dict[str, ZooSpec] = {
    "dcnv2": ZooSpec("DCNv2", FuxiDCNv2, FuxiDCNv2Config, frozenset({
        "embedding_dim", "model_structure", "use_low_rank_mixture", "low_rank", "num_experts",
        "stacked_dnn_hidden_units", "parallel_dnn_hidden_units", "dnn_activations", "num_cross_layers",
        "net_dropout", "batch_norm"}), _dcnv2),
    "deepfm": ZooSpec("DeepFM", FuxiDeepFM, FuxiDeepFMConfig, frozenset({
        "embedding_dim", "hidden_units", "hidden_activations", "net_dropout", "batch_norm"}), _deepfm),
    "dlrm": ZooSpec("DLRM", FuxiDLRM, FuxiDLRMConfig, frozenset({
        "embedding_dim", "top_mlp_units", "bottom_mlp_units", "top_mlp_activations", "bottom_mlp_activations",
        "top_mlp_dropout", "bottom_mlp_dropout", "interaction_op", "batch_norm"}), _dlrm),
    "autoint": ZooSpec("AutoInt", FuxiAutoInt, FuxiAutoIntConfig, frozenset({
        "embedding_dim", "dnn_hidden_units", "dnn_activations", "attention_layers", "num_heads", "attention_dim",
        "net_dropout", "batch_norm", "layer_norm", "use_scale", "use_wide", "use_residual"}), _autoint),
    "finalmlp": ZooSpec("FinalMLP", FuxiFinalMLP, FuxiFinalMLPConfig, frozenset({
        "embedding_dim", "mlp1_hidden_units", "mlp1_hidden_activations", "mlp1_dropout", "mlp1_batch_norm",
        "mlp2_hidden_units", "mlp2_hidden_activations", "mlp2_dropout", "mlp2_batch_norm", "use_fs",
        "fs_hidden_units", "fs1_context", "fs2_context", "num_heads"}), _finalmlp),
    "wukong": ZooSpec("WuKong", FuxiWuKong, FuxiWuKongConfig, frozenset({
        "embedding_dim", "num_layers", "compression_dim", "mlp_hidden_units", "fmb_units", "fmb_dim",
        "project_dim", "dropout_rate", "hidden_activations"}), _wukong),
}


def build_zoo_model(name: str, feature_map, **params):
    """The composition ``name`` (a key of :data:`ZOO`) inside FuxiCTR's ``BaseModel``, built as
    ``run_expid.py`` builds a zoo model: ``model_class(feature_map, **params)`` with the
    experiment's parameters and a FuxiCTR ``FeatureMap``."""
    fx = require_fuxictr()
    from fuxictr.pytorch.models import MultiTaskModel

    spec = ZOO[name]
    cfg = spec.config(**spec.to_config(params))
    labels = list(feature_map.labels)
    base = MultiTaskModel if len(labels) > 1 else fx.BaseModel

    class ZooModel(base):  # a class per call: its base depends on the number of labels
        def __init__(self, feature_map, model_id=spec.zoo_name, gpu=-1, learning_rate=1e-3,
                     embedding_regularizer=None, net_regularizer=None, **kwargs):
            if len(labels) > 1:
                kwargs.update(num_tasks=len(labels), task="binary_classification")
            super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                             net_regularizer=net_regularizer, **kwargs)
            self.net = spec.model(feature_map, cfg)
            self.history: list[dict] = []  # one record per validation (see checkpoint_and_earlystop)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def reset_parameters(self):
            # The composition's own: FuxiCTR's BaseModel initialisation (again, as the zoo calls
            # it after building) plus its diagnostics.
            self.net.reset_parameters()

        def checkpoint_and_earlystop(self, logs, min_delta=1e-6):
            # FuxiCTR's, unchanged; then what it decided is recorded (it keeps no history).
            super().checkpoint_and_earlystop(logs, min_delta)
            self.history.append({"epoch": self._epoch_index + 1, "step": self._total_steps,
                                 **{k: float(v) for k, v in logs.items()}, "improved": self._stopping_steps == 0,
                                 "lr": self.optimizer.param_groups[0]["lr"]})

        def forward(self, inputs):
            logits = self.net.logits(self.get_inputs(inputs))
            if len(labels) == 1:
                return {"y_pred": self.output_activation(logits)}
            return {f"{label}_pred": self.output_activation[i](logits[:, i:i + 1]) for i, label in enumerate(labels)}

    ZooModel.__name__ = ZooModel.__qualname__ = spec.zoo_name
    return ZooModel(feature_map, **params)
