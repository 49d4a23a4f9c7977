"""The model-class oracle of the synthetic set: the planted model's own form, parameters learned.

A synthetic set's labels are drawn from a known model (``data/datasets/synthetic/generator.py``):
``logit = bias + sum_k c_k * term_k`` over first-order weights, FM pairs, a 3-way product, a
small tanh MLP, four dense-feature terms and a recency-weighted history match. Its Bayes AUC is
the ceiling with the true parameters; this model has exactly that form and learns the
parameters from the training rows, so its test AUC is about the best any learner of the form
reaches at that data size. Printed beside the Bayes AUC it splits a model's gap into "not
learnable from this many rows" (oracle to Bayes) and "the architecture" (model to oracle).

The form comes from the feature map (``extras["planted"]``, written when a synthetic set is
prepared) or from ``structure`` in the config. Its terms, with ``lat[f]`` a learned
``latent_dim`` vector per id of field ``f`` and ``x`` the dense features standardised (log1p,
then the training split's mean and std, as the generator standardises them):

* ``lat[user]``: the user's own vector plus ``a * sum_f lat[f] / sqrt(n)`` over the user's
  attribute fields on the row (age, city, ...), so rare users share what their attributes know,
  as in the generator. Items are composed the same way there, but an item also appears in the
  history, whose rows hold its id without its attributes, so ``lat[item]`` is one free vector
  per item (the composed one is such a vector);
* ``first``: per-id weights of every field, the mean weight of the item's tags, ``x @ beta``;
* ``pair:a*b``: ``lat[a] . lat[b]`` (``tags``: the mean latent of the item's tags);
* ``triple``: ``sum_k lat[user]_k lat[item]_k lat[c]_k``;
* ``mlp``: ``w2 . tanh(W1 [lat[user], lat[item], lat[f], x_sel] + b1)``;
* ``dense:prod``, ``dense:step`` (``x > step_at``), ``dense:dcat`` (``x * slope[id]``),
  ``dense:square`` (``-x^2``);
* ``seq``: ``lat[item] . sum_a decay^a lat[hist_a] / sum_a decay^a`` (``a``: age, 0 = latest).

Each term has its own learned coefficient ``c_k`` (the generator standardises and scales every
term); latent tables are shared between terms as in the generator.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register

_INIT_STD = 0.1


class PlantedConfig(ModelConfig):
    """``embedding_dim`` is ignored: the latent width is the planted model's."""

    structure: dict | None = Field(
        default=None,
        description="the planted model's form (Generator.structure()); None: the feature map's "
        "extras['planted'] (every synthetic set prepared by rankmixer has it)",
    )


@register("planted", PlantedConfig, needs="a synthetic set's planted form (feature map extras['planted'])")
class PlantedModel(nn.Module):
    """The synthetic set's planted model form with learned parameters (the model-class oracle)."""

    def __init__(self, feature_map: FeatureMap, cfg: PlantedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        st = cfg.structure if cfg.structure is not None else feature_map.extras.get("planted")
        if st is None:
            raise ValueError(
                "model 'planted' needs the planted model's form: train it on a synthetic dataset "
                "(its feature map carries extras['planted']; preparing again refreshes an older map) "
                "or give model.structure"
            )
        if feature_map.num_tasks != 1:
            raise ValueError(f"model 'planted' predicts one task; the data has {feature_map.num_tasks}")
        self.st = st
        self.groups = set(st["groups"])
        d = int(st["latent_dim"])

        sparse = [f.name for f in feature_map.sparse]
        self.col = {n: i for i, n in enumerate(sparse)}
        dense = [f.name for f in feature_map.dense]
        self.dcol = {n: i for i, n in enumerate(dense)}
        for n in st["fields"]:
            if n not in self.col:
                raise ValueError(f"model 'planted': field {n!r} is not a categorical feature of the data")
        for n in st["dense"]:
            if n not in self.dcol:
                raise ValueError(f"model 'planted': dense feature {n!r} is not a normalised numerical "
                                 "feature of the data (the oracle needs dense_encoding: log1p)")
        self.bag, self.seq = st["bag"], st["sequence"]
        rows = feature_map.tables()
        bag_table = feature_map.feature(self.bag).table
        if feature_map.feature(self.seq).table != "item":
            raise ValueError(f"model 'planted': sequence {self.seq!r} must share the item table, as the generator's history does")

        def table(n: int, dim: int) -> nn.Embedding:
            e = nn.Embedding(n, dim, padding_idx=0)
            nn.init.normal_(e.weight, 0.0, _INIT_STD)
            with torch.no_grad():
                e.weight[0].zero_()
            return e

        # Standardisation of the dense features: the training split's statistics of log1p(count)
        # (buffers, so the form's constants travel with the weights).
        stats = [feature_map.feature(n).stats for n in st["dense"]]
        self.register_buffer("x_mean", torch.tensor([s.get("mean", 0.0) for s in stats], dtype=torch.float32))
        self.register_buffer("x_std", torch.tensor([max(s.get("std", 1.0), 1e-6) for s in stats], dtype=torch.float32))
        self.dense_idx = [self.dcol[n] for n in st["dense"]]

        self.terms: list[str] = []
        if "first" in self.groups:
            self.w1 = nn.ModuleDict({n: table(rows[n], 1) for n in st["fields"]})
            self.w_tags = table(rows[bag_table], 1)
            self.beta = nn.Parameter(torch.zeros(len(st["dense"])))
            self.terms.append("first")
        lat_fields = set()
        if "pair" in self.groups:
            for a, b in st["pairs"]:
                lat_fields |= {a, b}
                self.terms.append(f"pair:{a}*{b}")
        if "triple" in self.groups:
            lat_fields |= set(st["triple"])
            self.terms.append("triple")
        if "mlp" in self.groups:
            lat_fields |= set(st["mlp"]["fields"])
            n_in = 3 * d + len(st["mlp"]["dense"])
            h = int(st["mlp"]["hidden"])
            self.mlp = nn.Sequential(nn.Linear(n_in, h), nn.Tanh(), nn.Linear(h, 1, bias=False))
            self.terms.append("mlp")
        if "seq" in self.groups:
            lat_fields.add("item")
            decay = float(st["recency_decay"])
            L = feature_map.feature(self.seq).max_len
            self.register_buffer("decay_pow", decay ** torch.arange(L, dtype=torch.float32), persistent=False)
            self.terms.append("seq")
        dense_terms = st.get("dense_terms")
        if "dense" in self.groups and dense_terms:
            self.dt = dense_terms
            self.dcat_slope = table(rows[dense_terms["dcat"][1]], 1)
            self.terms += ["dense:prod", "dense:step", "dense:dcat", "dense:square"]
        # The user's latent takes its attribute fields' latents in (items: see the module docstring).
        attrs = st.get("latent_attributes", {})
        self.attrs = {"user": list(attrs["user"])} if attrs.get("user") and "user" in lat_fields else {}
        for a in self.attrs.values():
            lat_fields |= set(a)
        self.attr_scale = nn.ParameterDict({side: nn.Parameter(torch.ones(())) for side in self.attrs})
        # Latent tables (tags: the bag's own table, pooled per item).
        self.lat = nn.ModuleDict({n: table(rows[bag_table] if n == self.bag else rows[n], d) for n in sorted(lat_fields)})
        self.coef = nn.Parameter(torch.ones(len(self.terms)))
        self.bias = nn.Parameter(torch.zeros(1))

    # ---- pieces ------------------------------------------------------------------------------
    def _ids(self, batch: Batch, name: str) -> Tensor:
        return batch.sparse[:, self.col[name]]

    def _bag_mean(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        mask = (ids != 0).unsqueeze(-1).to(table.weight.dtype)
        return (table(ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def _latent(self, batch: Batch, name: str) -> Tensor:
        if name == self.bag:
            return self._bag_mean(self.lat[name], batch.bags[self.bag])
        v = self.lat[name](self._ids(batch, name))
        if name in self.attrs:
            attrs = self.attrs[name]
            mix = sum(self.lat[a](self._ids(batch, a)) for a in attrs) / len(attrs) ** 0.5
            v = v + self.attr_scale[name] * mix
        return v

    def _x(self, batch: Batch, name: str, x: Tensor) -> Tensor:
        return x[:, self.st["dense"].index(name)]

    def forward(self, batch: Batch) -> ModelOutput:
        st = self.st
        x = (batch.dense[:, self.dense_idx] - self.x_mean) / self.x_std  # [B, n_dense]
        lat: dict[str, Tensor] = {}

        def L(name: str) -> Tensor:
            if name not in lat:
                lat[name] = self._latent(batch, name)
            return lat[name]

        values: list[Tensor] = []
        for term in self.terms:
            if term == "first":
                v = sum(self.w1[n](self._ids(batch, n)).squeeze(-1) for n in st["fields"])
                v = v + self._bag_mean(self.w_tags, batch.bags[self.bag]).squeeze(-1) + x @ self.beta
            elif term.startswith("pair:"):
                a, b = term[5:].split("*")
                v = (L(a) * L(b)).sum(dim=-1)
            elif term == "triple":
                u, i, c = st["triple"]
                v = (L(u) * L(i) * L(c)).sum(dim=-1)
            elif term == "mlp":
                parts = [L(n) for n in st["mlp"]["fields"]] + [self._x(batch, n, x).unsqueeze(1) for n in st["mlp"]["dense"]]
                v = self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
            elif term == "seq":
                v = (L("item") * self._history(batch)).sum(dim=-1)
            elif term == "dense:prod":
                v = self._x(batch, self.dt["prod"][0], x) * self._x(batch, self.dt["prod"][1], x)
            elif term == "dense:step":
                v = (self._x(batch, self.dt["step"], x) > float(self.dt["step_at"])).to(x.dtype)
            elif term == "dense:dcat":
                feat, field = self.dt["dcat"]
                v = self._x(batch, feat, x) * self.dcat_slope(self._ids(batch, field)).squeeze(-1)
            else:  # dense:square
                v = -self._x(batch, self.dt["square"], x) ** 2
            values.append(v)
        logit = torch.stack(values, dim=1) @ self.coef + self.bias
        return ModelOutput(logits=logit.unsqueeze(-1))

    def _history(self, batch: Batch) -> Tensor:
        """Recency-weighted mean latent of the history (oldest first, padded at the end);
        zeros for an empty history."""
        ids = batch.sequences[self.seq]  # [B, L]
        mask = ids != 0
        n = mask.sum(dim=1, keepdim=True)  # [B, 1]
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        age = (n - 1 - pos).clamp_min(0)
        w = self.decay_pow[age] * mask  # [B, L]
        emb = self.lat["item"](ids)  # the history shares the item table
        return (emb * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
