"""FuxiCTR's own layers, composed the way its model zoo composes them, trained by OUR trainer.

Why this shape: a side-by-side row "DCNv2 (FuxiCTR)" must differ from "DCNv2 (ours)" in the
model code only. So each ``fuxictr-*`` model here is a registered rankmixer model: it takes our
:class:`~rankmixer.data.batch.Batch` from our loader, on our prepared splits, and is trained by
our trainer with the same optimizers, budget, early stopping and metrics. Inside, it is built
from the classes of the installed ``fuxictr`` wheel (2.3.10):

* embeddings: FuxiCTR's ``FeatureEmbedding`` (one ``nn.Embedding`` per table, ``padding_idx=0``,
  normal(0, 1e-4) init, numerical features as ``nn.Linear(1, d)``, sequences and bags through
  its ``MaskedAveragePooling``), fed our id tensors directly: our ids already follow its
  conventions (0 = padding; shared tables via ``share_embedding``). We use theirs, not ours,
  so the embedding layer (per-table modules, its init) is part of what is compared.
* interactions / towers: ``CrossNetV2``, ``CrossNetMix``, ``FactorizationMachine`` (its
  ``InnerProductInteraction`` + ``LogisticRegression``), ``InnerProductInteraction``,
  ``ScaledDotProductAttention``, ``MLP_Block``.
* initialisation: FuxiCTR's ``BaseModel.reset_parameters`` (xavier-normal linear weights, zero
  biases, then each layer's ``init_weights``), called on our module.

The composition follows ``model_zoo/<Model>/src/<Model>.py`` of github.com/reczoo/FuxiCTR
(the model zoo is not in the wheel). Where the zoo defines a layer in the model file rather than
in the wheel (AutoInt's ``MultiHeadSelfAttention``), it is written here in a few lines around
the wheel's ``ScaledDotProductAttention``, following the zoo. Differences from FuxiCTR's
``BaseModel`` training, all on purpose (the trainer is ours): logits out (no sigmoid inside
the model), one output per task (FuxiCTR's rank models have one), our optimizers; the
embedding tables are plain ``nn.Embedding`` modules, so ``split_parameters`` gives them to the
embedding optimizer like our own tables (FuxiCTR's numerical ``nn.Linear(1, d)`` vectors go to
the dense optimizer).

``fuxictr`` is imported when a model is built, not when this module is imported: without the
extra, building a ``fuxictr-*`` model raises an ImportError saying how to install it.
"""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register

INSTALL_HINT = (
    "the fuxictr-* models run FuxiCTR's own layers and need the optional extra: "
    "pip install -c constraints/cpu.txt -e '.[fuxictr]'  (FuxiCTR 2.3.10; see docs/peers.md)"
)


def require_fuxictr() -> SimpleNamespace:
    """The FuxiCTR pieces we use, imported on first use; a clear error if it is not installed."""
    try:
        from fuxictr.features import FeatureMap as FxFeatureMap
        from fuxictr.pytorch import layers
        from fuxictr.pytorch.models import BaseModel
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import failed: {e})") from e
    return SimpleNamespace(layers=layers, FeatureMap=FxFeatureMap, BaseModel=BaseModel)


def fuxictr_feature_map(feature_map: FeatureMap, embedding_dim: int):
    """A FuxiCTR ``FeatureMap`` describing our prepared features, in our field order (sparse,
    dense, bags, sequences). Bags become FuxiCTR "sequence" features (masked mean, like ours)."""
    fx = require_fuxictr()
    fmap = fx.FeatureMap(feature_map.dataset, "")
    feats: OrderedDict[str, dict] = OrderedDict()
    for f in feature_map.sparse:
        feats[f.name] = {"type": "categorical", "source": "", "vocab_size": f.vocab_size, "padding_idx": 0}
    for f in feature_map.dense:
        feats[f.name] = {"type": "numeric", "source": ""}
    for f in feature_map.bags + feature_map.sequences:
        spec = {"type": "sequence", "source": "", "vocab_size": f.vocab_size, "padding_idx": 0,
                "max_len": f.max_len, "feature_encoder": "layers.MaskedAveragePooling()"}
        if f.share_with:
            spec["share_embedding"] = f.share_with
        feats[f.name] = spec
    fmap.features = feats
    fmap.labels = list(feature_map.labels)
    fmap.default_emb_dim = embedding_dim
    fmap.num_fields = fmap.get_num_fields()
    if fmap.num_fields == 0:
        raise ValueError("FuxiCTR models need at least one feature")
    return fmap


def batch_to_inputs(feature_map: FeatureMap, batch: Batch) -> dict[str, Tensor]:
    """Our Batch as FuxiCTR's input dict ``{feature name: tensor}`` (the ids as they are)."""
    X: dict[str, Tensor] = {}
    for i, f in enumerate(feature_map.sparse):
        X[f.name] = batch.sparse[:, i]
    for j, f in enumerate(feature_map.dense):
        X[f.name] = batch.dense[:, j]
    X.update(batch.bags)
    X.update(batch.sequences)
    return X


class FuxiCTRConfig(ModelConfig):
    """What every fuxictr-* model shares."""

    embedding_init_std: float = Field(
        default=1e-4, gt=0, description="std of FuxiCTR's normal embedding initialiser (its default 1e-4)"
    )
    numeric_init_std: float | None = Field(
        default=None, gt=0,
        description="diagnostic: re-initialise the numeric features' nn.Linear(1, d) weights normal(0, std) "
                    "(ours: 1e-2); None keeps FuxiCTR's xavier-normal",
    )


class _FuxiCTRModel(nn.Module):
    """Shared plumbing: FuxiCTR feature map, embedding layer and the Batch -> dict conversion."""

    def __init__(self, feature_map: FeatureMap, cfg: FuxiCTRConfig, not_embedded: list[str] | None = None) -> None:
        super().__init__()
        self.fx = require_fuxictr()
        self.cfg = cfg
        self.feature_map = feature_map
        self.fx_map = fuxictr_feature_map(feature_map, cfg.embedding_dim)
        self.num_fields = self.fx_map.num_fields
        self.embedding_layer = self.fx.layers.FeatureEmbedding(
            self.fx_map, cfg.embedding_dim, embedding_initializer=self._initializer(),
            not_required_feature_columns=not_embedded or None,
        )

    def _initializer(self) -> str:
        # FuxiCTR takes its initialiser as a string it evaluates; we only ever build it from a float.
        return f"partial(nn.init.normal_, std={float(self.cfg.embedding_init_std)!r})"

    def reset_parameters(self) -> None:
        """FuxiCTR's own initialisation (``BaseModel.reset_parameters`` applied to this module),
        then the ``numeric_init_std`` diagnostic if set."""
        self.fx.BaseModel.reset_parameters(self)
        if self.cfg.numeric_init_std is not None:
            layers = self.embedding_layer.embedding_layer.embedding_layers
            with torch.no_grad():
                for f in self.feature_map.dense:
                    if f.name in layers:
                        nn.init.normal_(layers[f.name].weight, std=self.cfg.numeric_init_std)

    def inputs(self, batch: Batch) -> dict[str, Tensor]:
        return batch_to_inputs(self.feature_map, batch)


# ---- DCNv2 -----------------------------------------------------------------------------------


class FuxiDCNv2Config(FuxiCTRConfig):
    num_cross_layers: int = Field(default=3, ge=1, description="number of cross layers")
    structure: Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"] = Field(
        default="parallel", description="FuxiCTR's model_structure"
    )
    dnn_hidden: list[int] = Field(default=[400, 400, 400], min_length=1, description="DNN widths (stacked and/or parallel)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")
    low_rank_mixture: bool = Field(default=False, description="CrossNetMix (mixture of low-rank experts) instead of CrossNetV2")
    low_rank: int = Field(default=32, ge=1, description="CrossNetMix rank")
    num_experts: int = Field(default=4, ge=1, description="CrossNetMix experts")


@register("fuxictr-dcnv2", FuxiDCNv2Config)
class FuxiDCNv2(_FuxiCTRModel):
    """DCNv2 from FuxiCTR's layers (CrossNetV2 / CrossNetMix + MLP_Block), as its model zoo composes them (Wang et al. 2021; FuxiCTR, Zhu et al. 2021).

    Follows ``model_zoo/DCNv2/src/DCNv2.py``: flattened embeddings ``x0``; the cross net and, by
    ``structure``, a stacked and/or parallel DNN; one linear output (here one per task).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDCNv2Config) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        input_dim = self.fx_map.sum_emb_out_dim()
        if cfg.low_rank_mixture:
            self.crossnet = L.CrossNetMix(input_dim, cfg.num_cross_layers, low_rank=cfg.low_rank, num_experts=cfg.num_experts)
        else:
            self.crossnet = L.CrossNetV2(input_dim, cfg.num_cross_layers)

        def dnn() -> nn.Module:
            return L.MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(cfg.dnn_hidden),
                               hidden_activations="ReLU", output_activation=None,
                               dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)

        s = cfg.structure
        self.stacked_dnn = dnn() if s in ("stacked", "stacked_parallel") else None
        self.parallel_dnn = dnn() if s in ("parallel", "stacked_parallel") else None
        final_dim = {"crossnet_only": input_dim, "stacked": cfg.dnn_hidden[-1],
                     "parallel": input_dim + cfg.dnn_hidden[-1],
                     "stacked_parallel": 2 * cfg.dnn_hidden[-1]}[s]
        self.fc = nn.Linear(final_dim, feature_map.num_tasks)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_out = self.crossnet(feature_emb)
        s = self.cfg.structure
        if s == "crossnet_only":
            final = cross_out
        elif s == "stacked":
            final = self.stacked_dnn(cross_out)
        elif s == "parallel":
            final = torch.cat([cross_out, self.parallel_dnn(feature_emb)], dim=-1)
        else:
            final = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(feature_emb)], dim=-1)
        return ModelOutput(logits=self.fc(final))


# ---- DeepFM ----------------------------------------------------------------------------------


class FuxiDeepFMConfig(FuxiCTRConfig):
    dnn_hidden: list[int] = Field(default=[400, 400, 400], description="FuxiCTR's hidden_units")
    first_order_pooling: Literal["sum", "mean"] = Field(
        default="sum",
        description="pooling of bags/sequences in the first-order (LR) term: sum is FuxiCTR's "
        "(its LogisticRegression sum-pools 1-dim embeddings); mean swaps in its MaskedAveragePooling, "
        "as our DeepFM does (a diagnostic, see docs/peers.md)",
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-deepfm", FuxiDeepFMConfig)
class FuxiDeepFM(_FuxiCTRModel):
    """DeepFM from FuxiCTR's layers (FactorizationMachine = LR + InnerProductInteraction, MLP_Block), as its model zoo composes them (Guo et al. 2017; FuxiCTR).

    Follows ``model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py``: ``y = FM(X, emb) + MLP(flat emb)``.
    FuxiCTR's FM is one scalar shared by every task's output (as in our DeepFM).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDeepFMConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        self.fm = L.FactorizationMachine(self.fx_map)
        if cfg.first_order_pooling == "mean":
            encoders = self.fm.lr_layer.embedding_layer.embedding_layer.feature_encoders
            for name in list(encoders.keys()):
                encoders[name] = L.MaskedAveragePooling()
        self.mlp = L.MLP_Block(input_dim=self.fx_map.sum_emb_out_dim(), output_dim=feature_map.num_tasks,
                               hidden_units=list(cfg.dnn_hidden), hidden_activations="ReLU",
                               output_activation=None, dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        feature_emb = self.embedding_layer(X)
        y = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return ModelOutput(logits=y)


# ---- DLRM ------------------------------------------------------------------------------------


class FuxiDLRMConfig(FuxiCTRConfig):
    bottom_mlp: list[int] = Field(default=[64, 64, 64], description="FuxiCTR's bottom_mlp_units (dense features)")
    top_mlp: list[int] = Field(default=[64, 64, 64], description="FuxiCTR's top_mlp_units")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's top_mlp_dropout")
    interaction: Literal["dot", "cat"] = Field(default="dot", description="FuxiCTR's interaction_op")
    batch_norm: bool = Field(default=False, description="BatchNorm in the MLPs")


@register("fuxictr-dlrm", FuxiDLRMConfig)
class FuxiDLRM(_FuxiCTRModel):
    """DLRM from FuxiCTR's layers (InnerProductInteraction "inner_product", MLP_Block), as its model zoo composes them (Naumov et al. 2019; FuxiCTR).

    Follows ``model_zoo/DLRM/src/DLRM.py``: numerical features through a bottom MLP (ReLU output)
    to one more field appended last; dot products of every field pair (plus the bottom output)
    into the top MLP. The zoo's top MLP ends in a sigmoid; here it ends in logits.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDLRMConfig) -> None:
        # The zoo embeds only the non-numerical features (the bottom MLP handles the numerical).
        self.dense_feats = [f.name for f in feature_map.dense]
        super().__init__(feature_map, cfg, not_embedded=self.dense_feats)
        L = self.fx.layers
        d = cfg.embedding_dim
        if self.dense_feats:
            n_fields = self.num_fields - len(self.dense_feats) + 1
            self.bottom_mlp = L.MLP_Block(input_dim=len(self.dense_feats), output_dim=d,
                                          hidden_units=list(cfg.bottom_mlp), hidden_activations="ReLU",
                                          output_activation="ReLU", batch_norm=cfg.batch_norm)
        else:
            n_fields = self.num_fields
            self.bottom_mlp = None
        if n_fields < 2 and cfg.interaction == "dot":
            raise ValueError("DLRM's dot interaction needs at least two fields")
        if cfg.interaction == "dot":
            self.interact = L.InnerProductInteraction(num_fields=n_fields, output="inner_product")
            top_in = n_fields * (n_fields - 1) // 2 + (d if self.dense_feats else 0)
        else:
            self.interact = nn.Flatten(start_dim=1)
            top_in = n_fields * d
        self.top_mlp = L.MLP_Block(input_dim=top_in, output_dim=feature_map.num_tasks,
                                   hidden_units=list(cfg.top_mlp), hidden_activations="ReLU",
                                   output_activation=None, dropout_rates=cfg.dropout, batch_norm=cfg.batch_norm)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        X_emb = {k: v for k, v in X.items() if k not in self.dense_feats}
        feat_emb = self.embedding_layer(X_emb)
        if self.bottom_mlp is not None:
            dense_emb = self.bottom_mlp(batch.dense)
            feat_emb = torch.cat([feat_emb, dense_emb.unsqueeze(1)], dim=1)
        out = self.interact(feat_emb)
        if self.bottom_mlp is not None and self.cfg.interaction == "dot":
            out = torch.cat([out, dense_emb], dim=-1)
        return ModelOutput(logits=self.top_mlp(out))


# ---- AutoInt ---------------------------------------------------------------------------------


class FuxiMultiHeadSelfAttention(nn.Module):
    """The zoo's AutoInt ``MultiHeadSelfAttention`` (``model_zoo/AutoInt/src/AutoInt.py``; not in
    the wheel) around the wheel's ``ScaledDotProductAttention``: bias-free Q/K/V projections,
    heads, optional ``sqrt(head_dim)`` scaling, residual (projected when widths differ), optional
    LayerNorm, ReLU."""

    def __init__(self, fx: SimpleNamespace, input_dim: int, attention_dim: int, num_heads: int,
                 dropout_rate: float, use_residual: bool, use_scale: bool, layer_norm: bool) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}")
        self.head_dim = attention_dim // num_heads
        self.num_heads = num_heads
        self.use_residual = use_residual
        self.scale = self.head_dim**0.5 if use_scale else None
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_res = nn.Linear(input_dim, attention_dim, bias=False) if use_residual and input_dim != attention_dim else None
        self.dot_attention = fx.layers.ScaledDotProductAttention(dropout_rate)
        self.layer_norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def forward(self, X: Tensor) -> Tensor:
        B = X.size(0)

        def heads(t: Tensor) -> Tensor:
            return t.view(B, -1, self.num_heads, self.head_dim).transpose(1, 2)

        out, _ = self.dot_attention(heads(self.W_q(X)), heads(self.W_k(X)), heads(self.W_v(X)), scale=self.scale)
        out = out.transpose(1, 2).contiguous().view(B, -1, self.num_heads * self.head_dim)
        if self.use_residual:
            out = out + (self.W_res(X) if self.W_res is not None else X)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out.relu()


class FuxiAutoIntConfig(FuxiCTRConfig):
    attention_layers: int = Field(default=2, ge=1, description="number of interacting layers")
    num_heads: int = Field(default=1, ge=1, description="attention heads")
    attention_dim: int = Field(default=8, ge=1, description="width of the attention output per field")
    use_residual: bool = Field(default=True, description="residual connection in each layer")
    use_scale: bool = Field(default=False, description="divide scores by sqrt(head_dim)")
    layer_norm: bool = Field(default=False, description="LayerNorm after each layer")
    dnn_hidden: list[int] = Field(default=[], description="AutoInt+: parallel DNN widths ([] = no DNN)")
    use_wide: bool = Field(default=False, description="add FuxiCTR's LogisticRegression term")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout (attention and DNN)")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-autoint", FuxiAutoIntConfig)
class FuxiAutoInt(_FuxiCTRModel):
    """AutoInt / AutoInt+ from FuxiCTR's layers (ScaledDotProductAttention, MLP_Block, LogisticRegression), as its model zoo composes them (Song et al. 2019; FuxiCTR).

    Follows ``model_zoo/AutoInt/src/AutoInt.py``: stacked self-attention over the field
    embeddings, flattened into a linear output, plus (AutoInt+) a DNN on the flat embeddings and
    optionally a wide (LR) term.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiAutoIntConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        T = feature_map.num_tasks
        self.lr_layer = L.LogisticRegression(self.fx_map, use_bias=False) if cfg.use_wide else None
        self.dnn = (
            L.MLP_Block(input_dim=self.fx_map.sum_emb_out_dim(), output_dim=T, hidden_units=list(cfg.dnn_hidden),
                        hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                        batch_norm=cfg.batch_norm)
            if cfg.dnn_hidden else None
        )
        self.self_attention = nn.Sequential(*[
            FuxiMultiHeadSelfAttention(self.fx, cfg.embedding_dim if i == 0 else cfg.attention_dim, cfg.attention_dim,
                                       cfg.num_heads, cfg.dropout, cfg.use_residual, cfg.use_scale, cfg.layer_norm)
            for i in range(cfg.attention_layers)
        ])
        self.fc = nn.Linear(self.num_fields * cfg.attention_dim, T)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        feature_emb = self.embedding_layer(X)
        y = self.fc(self.self_attention(feature_emb).flatten(start_dim=1))
        if self.dnn is not None:
            y = y + self.dnn(feature_emb.flatten(start_dim=1))
        if self.lr_layer is not None:
            y = y + self.lr_layer(X)
        return ModelOutput(logits=y)


# ---- LR --------------------------------------------------------------------------------------


@register("fuxictr-lr", FuxiCTRConfig)
class FuxiLR(_FuxiCTRModel):
    """Logistic regression from FuxiCTR's LogisticRegression layer (1-dim embeddings summed, a bias) (FuxiCTR's LR).

    One output per task: T LogisticRegression layers (FuxiCTR's has one). Its sequence features
    are sum-pooled (FuxiCTR's choice for 1-dim embeddings), where ours are mean-pooled.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiCTRConfig) -> None:
        nn.Module.__init__(self)
        self.fx = require_fuxictr()
        self.cfg = cfg
        self.feature_map = feature_map
        self.fx_map = fuxictr_feature_map(feature_map, cfg.embedding_dim)
        self.lr = nn.ModuleList(self.fx.layers.LogisticRegression(self.fx_map, use_bias=True)
                                for _ in range(feature_map.num_tasks))
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        return ModelOutput(logits=torch.cat([lr(X) for lr in self.lr], dim=1))


# ---- DCN (v1) --------------------------------------------------------------------------------


class FuxiDCNConfig(FuxiCTRConfig):
    num_cross_layers: int = Field(default=3, ge=1, description="number of rank-1 cross layers")
    dnn_hidden: list[int] = Field(default=[], description="parallel DNN widths ([] = cross network only)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="FuxiCTR's net_dropout")
    batch_norm: bool = Field(default=False, description="BatchNorm in the DNN")


@register("fuxictr-dcn", FuxiDCNConfig)
class FuxiDCN(_FuxiCTRModel):
    """DCN (v1) from FuxiCTR's layers (CrossNet, MLP_Block), as its model zoo composes them (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions"; FuxiCTR).

    Follows ``model_zoo/DCN/DCN_torch/src/DCN.py``: rank-1 cross layers
    ``x_{l+1} = x0 (w^T x_l) + b + x_l`` on the flat embeddings, optionally beside a DNN. There is
    no rankmixer DCN v1 (our ``dcnv2`` with ``low_rank=1`` is close but not the same layer).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiDCNConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        input_dim = self.fx_map.sum_emb_out_dim()
        self.crossnet = L.CrossNet(input_dim, cfg.num_cross_layers)
        self.dnn = (L.MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(cfg.dnn_hidden),
                                hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                                batch_norm=cfg.batch_norm) if cfg.dnn_hidden else None)
        self.fc = nn.Linear(input_dim + (cfg.dnn_hidden[-1] if cfg.dnn_hidden else 0), feature_map.num_tasks)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        emb = self.embedding_layer(self.inputs(batch), flatten_emb=True)
        out = self.crossnet(emb)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(emb)], dim=-1)
        return ModelOutput(logits=self.fc(out))


# ---- FinalMLP --------------------------------------------------------------------------------


class FuxiFeatureSelection(nn.Module):
    """The zoo's FinalMLP ``FeatureSelection`` (``model_zoo/FinalMLP/src/FinalMLP.py``; not in the
    wheel), written around the wheel's ``FeatureEmbedding`` and ``MLP_Block``: per stream, a
    context (a zero-initialised learned vector, or the context fields' embeddings from *their own*
    embedding tables) through an MLP with a sigmoid output, times 2, gates the flat embeddings."""

    def __init__(self, fx: SimpleNamespace, fx_map, feature_dim: int, embedding_dim: int, hidden: list[int],
                 contexts: tuple[list[str], list[str]], initializer: str) -> None:
        super().__init__()
        L = fx.layers
        self.contexts = contexts
        self.ctx_bias = nn.ParameterDict()  # stream "0"/"1" without context fields: a learned vector
        self.ctx_emb = nn.ModuleDict()  # stream with context fields: their own embedding tables
        self.gates = nn.ModuleList()
        for s, ctx in enumerate(contexts):
            if ctx:
                self.ctx_emb[str(s)] = L.FeatureEmbedding(fx_map, embedding_dim, embedding_initializer=initializer,
                                                          required_feature_columns=list(ctx))
            else:
                self.ctx_bias[str(s)] = nn.Parameter(torch.zeros(1, embedding_dim))
            self.gates.append(L.MLP_Block(input_dim=embedding_dim * max(1, len(ctx)), output_dim=feature_dim,
                                          hidden_units=list(hidden), hidden_activations="ReLU",
                                          output_activation="Sigmoid", batch_norm=False))

    def forward(self, X: dict[str, Tensor], flat_emb: Tensor) -> tuple[Tensor, Tensor]:
        out = []
        for s, ctx in enumerate(self.contexts):
            if ctx:
                gate_in = self.ctx_emb[str(s)]({k: X[k] for k in ctx}).flatten(start_dim=1)
            else:
                gate_in = self.ctx_bias[str(s)].repeat(flat_emb.size(0), 1)
            out.append(flat_emb * (self.gates[s](gate_in) * 2))
        return out[0], out[1]


class FuxiInteractionAggregation(nn.Module):
    """The zoo's FinalMLP ``InteractionAggregation`` (not in the wheel): multi-head bilinear fusion
    ``w_x^T x + w_y^T y + sum_h x_h^T W_h y_h``, with the zoo's weight layout and init."""

    def __init__(self, x_dim: int, y_dim: int, output_dim: int = 1, num_heads: int = 1) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError("FinalMLP: stream widths must be divisible by num_heads")
        self.num_heads, self.output_dim = num_heads, output_dim
        self.head_x_dim, self.head_y_dim = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, output_dim)
        self.w_y = nn.Linear(y_dim, output_dim)
        self.w_xy = nn.Parameter(torch.empty(num_heads * self.head_x_dim * self.head_y_dim, output_dim))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        H = self.num_heads
        head_x = x.view(-1, H, self.head_x_dim)
        head_y = y.view(-1, H, self.head_y_dim)
        xw = torch.matmul(head_x.unsqueeze(2), self.w_xy.view(H, self.head_x_dim, -1))  # [B, H, 1, out * hy]
        xy = torch.matmul(xw.view(-1, H, self.output_dim, self.head_y_dim), head_y.unsqueeze(-1)).squeeze(-1)
        return self.w_x(x) + self.w_y(y) + xy.sum(dim=1)


class FuxiFinalMLPConfig(FuxiCTRConfig):
    mlp1_hidden: list[int] = Field(default=[64, 64, 64], min_length=1, description="stream 1 widths")
    mlp2_hidden: list[int] = Field(default=[64, 64, 64], min_length=1, description="stream 2 widths")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout in both streams")
    batch_norm: bool = Field(default=False, description="BatchNorm in both streams")
    use_feature_selection: bool = Field(default=True, description="FuxiCTR's use_fs")
    fs_hidden: list[int] = Field(default=[64], description="gate MLP widths")
    fs1_context: list[str] = Field(default=[], description="context features of gate 1")
    fs2_context: list[str] = Field(default=[], description="context features of gate 2")
    num_heads: int = Field(default=1, ge=1, description="heads of the bilinear fusion")


@register("fuxictr-finalmlp", FuxiFinalMLPConfig)
class FuxiFinalMLP(_FuxiCTRModel):
    """FinalMLP composed as FuxiCTR's model zoo does: wheel FeatureEmbedding and MLP_Block, with the zoo's FeatureSelection and InteractionAggregation re-written here (Mao et al. 2023; FuxiCTR).

    Follows ``model_zoo/FinalMLP/src/FinalMLP.py``. Unlike our ``finalmlp``, the gates' context
    fields get their own embedding tables (the zoo builds a second FeatureEmbedding for them).
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiFinalMLPConfig) -> None:
        super().__init__(feature_map, cfg)
        L = self.fx.layers
        names = list(self.fx_map.features)
        for key, ctx in (("fs1_context", cfg.fs1_context), ("fs2_context", cfg.fs2_context)):
            if any(c not in names for c in ctx):
                raise ValueError(f"fuxictr-finalmlp {key}: unknown features {[c for c in ctx if c not in names]}")
        feature_dim = cfg.embedding_dim * self.num_fields

        def stream(hidden: list[int]) -> nn.Module:
            return L.MLP_Block(input_dim=feature_dim, output_dim=None, hidden_units=list(hidden),
                               hidden_activations="ReLU", output_activation=None, dropout_rates=cfg.dropout,
                               batch_norm=cfg.batch_norm)

        self.mlp1, self.mlp2 = stream(cfg.mlp1_hidden), stream(cfg.mlp2_hidden)
        self.fs_module = (FuxiFeatureSelection(self.fx, self.fx_map, feature_dim, cfg.embedding_dim, cfg.fs_hidden,
                                               (cfg.fs1_context, cfg.fs2_context), self._initializer())
                          if cfg.use_feature_selection else None)
        self.fusion_module = FuxiInteractionAggregation(cfg.mlp1_hidden[-1], cfg.mlp2_hidden[-1],
                                                        output_dim=feature_map.num_tasks, num_heads=cfg.num_heads)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        X = self.inputs(batch)
        flat_emb = self.embedding_layer(X).flatten(start_dim=1)
        feat1, feat2 = self.fs_module(X, flat_emb) if self.fs_module is not None else (flat_emb, flat_emb)
        return ModelOutput(logits=self.fusion_module(self.mlp1(feat1), self.mlp2(feat2)))


# ---- WuKong ----------------------------------------------------------------------------------


class FuxiWuKongLayer(nn.Module):
    """The zoo's ``WuKongLayer`` (``model_zoo/WuKong/src/WuKong.py``; not in the wheel): an FMB
    (``X (X^T P)`` flattened, LayerNorm, ReLU MLP to ``fmb_dim``, ReLU) and an LCB (a linear map of
    the flat input to ``compression_dim``, dropout), concatenated, mapped back to ``n d`` by a
    linear layer, plus the input, then LayerNorm over all ``n d`` values. This differs from the
    paper's layer (and ours): the blocks' outputs are flat vectors, not ``n_F`` and ``n_L``
    embeddings, and the number of embeddings stays ``n``."""

    def __init__(self, n: int, d: int, project_dim: int, fmb_units: list[int], fmb_dim: int,
                 compression_dim: int, dropout: float) -> None:
        super().__init__()
        self.n, self.d = n, d
        self.projection_matrix = nn.Parameter(torch.randn(n, project_dim))
        self.fmb_norm = nn.LayerNorm(n * project_dim)
        layers: list[nn.Module] = []
        prev = n * project_dim
        for u in fmb_units:
            layers += [nn.Linear(prev, u), nn.ReLU()]
            prev = u
        layers.append(nn.Linear(prev, fmb_dim))
        self.fmb_mlp = nn.Sequential(*layers)
        self.lcb = nn.Linear(n * d, compression_dim)
        self.lcb_dropout = nn.Dropout(dropout)
        self.transform = nn.Linear(fmb_dim + compression_dim, n * d)
        self.layer_norm = nn.LayerNorm(n * d)

    def forward(self, x: Tensor) -> Tensor:
        B = x.size(0)
        x = x.view(B, self.n, self.d)
        fm = torch.matmul(x, torch.matmul(x.transpose(1, 2), self.projection_matrix)).view(B, -1)
        fmb_out = torch.relu(self.fmb_mlp(self.fmb_norm(fm)))
        lcb_out = self.lcb_dropout(self.lcb(x.reshape(B, -1)))
        out = self.transform(torch.cat([fmb_out, lcb_out], dim=1))
        return self.layer_norm(out + x.reshape(B, -1))


class FuxiWuKongConfig(FuxiCTRConfig):
    num_layers: int = Field(default=3, ge=1, description="number of WuKong layers")
    compression_dim: int = Field(default=40, ge=1, description="LCB output width")
    fmb_units: list[int] = Field(default=[32, 32], min_length=1, description="FMB MLP widths")
    fmb_dim: int = Field(default=40, ge=1, description="FMB output width")
    project_dim: int = Field(default=8, ge=1, description="k of the FMB projection X (X^T P)")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0, description="LCB dropout")
    dnn_hidden: list[int] = Field(default=[32, 32], description="FuxiCTR's mlp_hidden_units (final MLP)")


@register("fuxictr-wukong", FuxiWuKongConfig)
class FuxiWuKong(_FuxiCTRModel):
    """WuKong composed as FuxiCTR's model zoo does: wheel FeatureEmbedding and MLP_Block with the zoo's WuKong layer re-written here (Zhang et al. 2024; FuxiCTR).

    Follows ``model_zoo/WuKong/src/WuKong.py`` (defaults are the zoo's); see
    :class:`FuxiWuKongLayer` for how the zoo's layer differs from the paper's.
    """

    def __init__(self, feature_map: FeatureMap, cfg: FuxiWuKongConfig) -> None:
        super().__init__(feature_map, cfg)
        n, d = self.num_fields, cfg.embedding_dim
        self.interaction_layers = nn.Sequential(*[
            FuxiWuKongLayer(n, d, cfg.project_dim, cfg.fmb_units, cfg.fmb_dim, cfg.compression_dim, cfg.dropout)
            for _ in range(cfg.num_layers)
        ])
        self.final_mlp = self.fx.layers.MLP_Block(input_dim=n * d, output_dim=feature_map.num_tasks,
                                                  hidden_units=list(cfg.dnn_hidden), hidden_activations="relu",
                                                  output_activation=None)
        self.reset_parameters()

    def forward(self, batch: Batch) -> ModelOutput:
        x = self.embedding_layer(self.inputs(batch))
        return ModelOutput(logits=self.final_mlp(self.interaction_layers(x)))
