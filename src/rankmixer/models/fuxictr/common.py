"""What every ``fuxictr-*`` model shares: the optional import, our features described as a
FuxiCTR ``FeatureMap``, our Batch as FuxiCTR's input dict, and the base class and config.

* embeddings: FuxiCTR's ``FeatureEmbedding`` (one ``nn.Embedding`` per table, ``padding_idx=0``,
  normal(0, 1e-4) init, numerical features as ``nn.Linear(1, d)``, sequences and bags through
  its ``MaskedAveragePooling``), fed our id tensors directly: our ids already follow its
  conventions (0 = padding; shared tables via ``share_embedding``). We use theirs, not ours,
  so the embedding layer (per-table modules, its init) is part of what is compared. The tables
  are plain ``nn.Embedding`` modules, so ``split_parameters`` gives them to the embedding
  optimizer like our own tables (the numerical ``nn.Linear(1, d)`` go to the dense optimizer).
* initialisation: FuxiCTR's ``BaseModel.reset_parameters`` (xavier-normal linear weights, zero
  biases, then each layer's ``init_weights``), called on our module.
* two doors, one network: a model is built from our FeatureMap (trained by our trainer, called
  with our Batch) or from a FuxiCTR ``FeatureMap`` as its own ``FeatureProcessor`` writes it
  (trained end to end by FuxiCTR's ``BaseModel``, see ``zoo.py``); either way the network is
  :meth:`FuxiCTRModel.logits` on FuxiCTR's input dict ``{feature name: tensor}``.
* ``fuxictr`` is imported by :func:`require_fuxictr` when a model is built, never when this
  module is imported: without the extra, building raises an ImportError saying what to install."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput

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


class FuxiCTRModel(nn.Module):
    """Shared plumbing of the fuxictr-* models: FuxiCTR feature map, embedding layer (without the
    numeric features unless ``embed_numeric``) and the Batch -> dict conversion. Subclasses build
    their layers, call :meth:`reset_parameters`, and define :meth:`logits`.

    ``feature_map`` is ours (:class:`~rankmixer.data.feature_map.FeatureMap`, described to
    FuxiCTR by :func:`fuxictr_feature_map`) or already FuxiCTR's (its FeatureProcessor's, for
    the end-to-end runner); ``num_tasks`` and ``dense_names`` (its numeric features, in order)
    are read from the FuxiCTR map either way."""

    def __init__(self, feature_map, cfg: FuxiCTRConfig, embed_numeric: bool = True) -> None:
        super().__init__()
        self.fx = require_fuxictr()
        self.cfg = cfg
        self.feature_map = feature_map
        if isinstance(feature_map, FeatureMap):
            self.fx_map = fuxictr_feature_map(feature_map, cfg.embedding_dim)
        else:
            self.fx_map = feature_map
        self.num_tasks = len(self.fx_map.labels)
        self.dense_names = [n for n, spec in self.fx_map.features.items() if spec["type"] == "numeric"]
        self.num_fields = self.fx_map.num_fields
        self.embedding_layer = self.fx.layers.FeatureEmbedding(
            self.fx_map, cfg.embedding_dim, embedding_initializer=self._initializer(),
            not_required_feature_columns=None if embed_numeric else (self.dense_names or None),
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
                for name in self.dense_names:
                    if name in layers:
                        nn.init.normal_(layers[name].weight, std=self.cfg.numeric_init_std)

    def inputs(self, batch: Batch) -> dict[str, Tensor]:
        return batch_to_inputs(self.feature_map, batch)

    def logits(self, X: dict[str, Tensor]) -> Tensor:
        """The network on FuxiCTR's input dict: logits [B, num_tasks] (no sigmoid)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.logits(self.inputs(batch)))
