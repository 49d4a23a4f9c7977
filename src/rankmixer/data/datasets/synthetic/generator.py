"""The planted model: ground-truth parameters from the seed, the row sampler, the true CTR.

``logit = bias + sum_g scale_g * component_g``; every component is standardised on a
calibration sample and ``bias`` is solved so that the mean CTR is ``target_ctr``:

* ``first``: per-id weights of every categorical field (field importances vary), the mean
  weight of the item's tags, and a linear term in the (log) dense features;
* ``pair``: FM-style dot products of latent vectors for ``n_pairs`` field pairs, always
  including (user, item) and (user, tags) (tags: mean latent of the item's tags);
* ``triple``: 3-way product sum_k u_k i_k c_k of user, item and a context field's latents;
* ``mlp``: a random tanh MLP on the latents of user, item and one more field plus four dense
  features;
* ``dense``: a dense x dense product, a threshold, dense x categorical (a per-id slope) and a
  square, on standardised log1p dense values;
* ``seq``: the dot product of the target item's latent with the recency-weighted mean latent
  of the history items (weight ``0.8 ** age``).

Days and drift (``days``, ``drift``): on day d the scale of component g is
``scale_g * max(0, 1 + drift * d * u_g)``, u_g fixed in [-1, 1] per component (its own random
stream), and the bias is solved again on the calibration sample, so the mean CTR stays
``target_ctr`` while the mix of interactions shifts. Day 0 is the law without drift.
``bias_drift`` then adds ``bias_drift * d`` logits on day d: the base rate moves too.

Items belong to ``n_item_clusters`` clusters; every user has a home cluster, and targets and
history items come from it with probability ``cluster_affinity``, so history, user and item
are correlated as in real logs. A user's (item's) latent vector is the sum of its cluster's
(``cluster_share`` of the variance), its attribute fields' (``attribute_share``) and its own,
so interactions partly generalise to rare users and items. Besides user, item and tags, only
fields with at most ``interaction_vocab_max`` ids take part in interactions (the huge fields
act first-order only), which keeps the interactions learnable from modest data.

The parameters do not depend on the row counts, so a larger ``rows_train`` keeps every full
block of rows of a smaller one (see :mod:`.stream`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankmixer.data.datasets.calibration import sigmoid, solve_bias
from rankmixer.data.datasets.synthetic.columns import arrow_schema, fields
from rankmixer.data.datasets.synthetic.config import SyntheticConfig
from rankmixer.data.datasets.synthetic.sampling import (
    CALIB_KEY,
    DRIFT_KEY,
    PARAM_KEY,
    ZipfSampler,
    seeded_rng,
    single_thread_blas,
)

_CALIB_ROWS = 65_536
_N_FACTORS = 4  # row-level factors behind the dense features (the first is the user's activity)
_RECENCY_DECAY = 0.8
_MLP_HIDDEN = 16
_MLP_DENSE = 4
_STR_TABLE_MAX = 1 << 22
_GROUPS = ("first", "pair", "triple", "mlp", "dense", "seq")


@dataclass
class Rows:
    """One block of sampled rows (indices, not yet strings)."""

    n: int
    ids: dict[str, np.ndarray]  # field -> int64 ids in [0, vocab)
    dense: np.ndarray  # [n, n_dense] int64 counts
    missing: np.ndarray  # [n, n_dense] bool
    hist_offsets: np.ndarray  # [n + 1] int64
    hist: np.ndarray  # [total] int64 item ids, oldest first within a row


class Generator:
    """Ground-truth parameters (from the seed), the row sampler and the true probability.

    Also holds the Arrow string tables of the ids and the item tags (built once, taken per
    block by :func:`.stream.record_batch`).
    """

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.fields = fields(cfg)
        self.vocab = {f.name: f.vocab for f in self.fields}
        self.arrow_schema = arrow_schema(cfg)
        self._samplers: dict[tuple[int, float], ZipfSampler] = {}
        rng = seeded_rng(cfg.seed, PARAM_KEY)
        d, K = cfg.latent_dim, cfg.n_item_clusters
        names = [f.name for f in self.fields]
        context = [f.name for f in self.fields if f.side == "context"]
        others = [n for n in names if n not in ("user", "item")]

        # Structure: users' home clusters and activity, user / item attribute tables.
        self.user_home = rng.integers(0, K, cfg.n_users)
        self.user_act = rng.standard_normal(cfg.n_users)
        self.attr: dict[str, np.ndarray] = {}
        for f in self.fields:
            if f.name in ("user", "item") or f.side == "context":
                continue
            owner = cfg.n_users if f.side == "user" else cfg.n_items
            self.attr[f.name] = self._zipf(rng, f.vocab, owner)

        # Item tags: 1..max_tags distinct Zipf-distributed tags per item, sorted.
        n_tag = 1 + rng.integers(0, cfg.max_tags, cfg.n_items)
        tags = self._zipf(rng, cfg.n_tags, (cfg.n_items, cfg.max_tags))
        tags[np.arange(cfg.max_tags)[None, :] >= n_tag[:, None]] = cfg.n_tags
        tags.sort(axis=1)
        valid = tags < cfg.n_tags
        valid[:, 1:] &= tags[:, 1:] != tags[:, :-1]
        counts = valid.sum(axis=1)
        offsets = np.zeros(cfg.n_items + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        flat = tags[valid]
        tag_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        self.item_tags_str = pc.binary_join(pc.cast(tag_lists, pa.list_(pa.string())), "|")
        self.tag_counts = counts

        # First-order weights; field importances vary so a few fields matter most.
        self.w1: dict[str, np.ndarray] = {}
        for n in names:
            importance = rng.uniform(0.2, 1.0)
            self.w1[n] = importance * rng.standard_normal(self.vocab[n])
        self.w_tags = w_tags = 0.6 * rng.standard_normal(cfg.n_tags)

        # Latent vectors: every field gets a table; items share their cluster's vector, users
        # their home cluster's, so in-cluster (user, item) pairs have positive affinity.
        cluster = rng.standard_normal((K, d)) / math.sqrt(d)
        self.lat: dict[str, np.ndarray] = {}
        for n in names:
            self.lat[n] = rng.standard_normal((self.vocab[n], d)) / math.sqrt(d)
        # A user's (item's) latent vector = its cluster's + its attributes' + its own, so the
        # interactions generalise to rare users and items through their attributes and history.
        self.latent_attributes: dict[str, list[str]] = {}
        for side, home in (("user", self.user_home), ("item", np.arange(cfg.n_items) % K)):
            attrs = [f.name for f in self.fields[2:] if f.side == side and f.vocab <= cfg.interaction_vocab_max]
            self.latent_attributes[side] = attrs if cfg.attribute_share else []
            c_share, a_share = cfg.cluster_share, (cfg.attribute_share if attrs else 0.0)
            own = math.sqrt(max(0.0, 1.0 - c_share - a_share)) * self.lat[side]
            self.lat[side] = own + math.sqrt(c_share) * cluster[home]
            if attrs:
                mix = sum(self.lat[a][self.attr[a]] for a in attrs) / math.sqrt(len(attrs))
                self.lat[side] += math.sqrt(a_share) * mix
        self.lat_tags = lat_tags = rng.standard_normal((cfg.n_tags, d)) / math.sqrt(d)
        # The item's tags, averaged: mean weight and mean latent per item.
        self.item_tag_w = np.zeros(cfg.n_items)
        self.lat["tags"] = np.zeros((cfg.n_items, d))
        for j in range(cfg.max_tags):
            t = np.where(valid[:, j], tags[:, j], 0)
            m = valid[:, j]
            self.item_tag_w += np.where(m, w_tags[t], 0.0)
            self.lat["tags"] += np.where(m[:, None], lat_tags[t], 0.0)
        self.item_tag_w /= counts
        self.lat["tags"] /= counts[:, None]
        # float32 tables: half the memory traffic of the gathers that dominate the model's cost.
        self.lat = {k: v.astype(np.float32) for k, v in self.lat.items()}

        self.recency = (_RECENCY_DECAY ** np.arange(cfg.seq_len + 1)).astype(np.float32)
        # Decimal strings of every id (taken, not formatted, per block); huge fields format.
        self.id_str = {
            n: pc.cast(pa.array(np.arange(self.vocab[n])), pa.string())
            for n in names
            if n == "item" or (cfg.id_type == "str" and self.vocab[n] <= _STR_TABLE_MAX)
        }

        # Which fields interact. A pair of two functions of the same user (or item) would only
        # be a per-user (per-item) effect, so pairs always join different entities.
        entity = {f.name: f.name if f.side == "context" else f.side for f in self.fields}
        entity["tags"] = "item"
        # Besides user and item, only fields small enough to learn from modest data interact.
        cand = [n for n in names if n in ("user", "item") or self.vocab[n] <= cfg.interaction_vocab_max]
        cand.append("tags")
        pairs = [("user", "item"), ("user", "tags")][: cfg.n_pairs]
        rest = [
            (a, b)
            for i, a in enumerate(cand)
            for b in cand[i + 1 :]
            if (a, b) not in pairs and entity[a] != entity[b]
        ]
        if cfg.n_pairs > len(pairs) and rest:
            pick = rng.choice(len(rest), size=min(cfg.n_pairs - len(pairs), len(rest)), replace=False)
            pairs += [rest[i] for i in sorted(pick)]
        self.pairs = pairs
        self.triple_field = context[0] if context else (others[0] if others else "tags")
        self.mlp_field = context[1] if len(context) > 1 else (others[-1] if others else "tags")
        # Dense x categorical: the field whose vocabulary is nearest 1000 (learnable slopes).
        self.dcat_field = min(names, key=lambda n: abs(math.log(self.vocab[n] / 1000.0)))
        self.dcat_slope = rng.standard_normal(self.vocab[self.dcat_field])

        # Dense features: log-normal counts driven by row factors (the first: user activity).
        nd = cfg.n_dense
        self.dense_loc = rng.uniform(-0.5, 5.0, nd)
        self.dense_scale = rng.uniform(0.8, 2.2, nd)
        self.dense_missing = rng.uniform(0.0, cfg.dense_missing_max, nd)
        self.dense_load = 0.7 * rng.standard_normal((_N_FACTORS, nd))
        self.dense_norm = np.sqrt((self.dense_load**2).sum(axis=0) + 1.0)
        self.dense_beta = rng.standard_normal(nd) * 0.5
        self.dense_pick = rng.permutation(nd) if nd else np.zeros(0, dtype=np.int64)
        n_in = 3 * d + min(_MLP_DENSE, nd)
        self.mlp_w1 = rng.standard_normal((n_in, _MLP_HIDDEN)) * (2.0 / math.sqrt(n_in))
        self.mlp_b1 = 0.5 * rng.standard_normal(_MLP_HIDDEN)
        self.mlp_w2 = rng.standard_normal(_MLP_HIDDEN)

        self.drift_direction = seeded_rng(cfg.seed, DRIFT_KEY).uniform(-1.0, 1.0, len(_GROUPS))
        self._day_bias: dict[int, float] = {}
        with single_thread_blas():
            self._calibrate()

    def _calibrate(self) -> None:
        """Standardise every term and solve the bias on a fixed sample of the train law."""
        cfg = self.cfg
        calib = self.sample(seeded_rng(cfg.seed, CALIB_KEY), _CALIB_ROWS)
        x = np.log1p(np.where(calib.missing, 0, calib.dense).astype(np.float64))
        self.x_mean = x.mean(axis=0)
        self.x_std = np.maximum(x.std(axis=0), 1e-6)
        terms = self._terms(calib)
        self.term_stats = {
            k: (float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))) for k, v in terms.items()
        }
        self.group_std = {g: 1.0 for g in _GROUPS}
        raw = self._group_values(terms)
        self.group_std = {g: (float(v.std()) if v.std() > 1e-12 else 1.0) for g, v in raw.items()}
        self._calib_values = self._group_values(terms)
        logit0 = self._logit_no_bias(self._calib_values, 0)
        self.bias = solve_bias(logit0, cfg.target_ctr)
        self._day_bias[0] = self.bias
        self.calib_logit_std = float(logit0.std())

    # -- sampling --

    def _zipf(self, rng: np.random.Generator, vocab: int, size, exponent: float | None = None) -> np.ndarray:
        """Bounded Zipf: P(id = r) ~ (r + 1) ** -s on 0 .. vocab-1, by exact inverse CDF."""
        key = (vocab, exponent or self.cfg.zipf_exponent)
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = ZipfSampler(*key)
        return sampler(rng.random(size))

    def _items(self, rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
        """Items: from the home cluster with prob. cluster_affinity (item % K == cluster), else
        from the global popularity."""
        cfg, n = self.cfg, home.shape[0]
        K = cfg.n_item_clusters
        local = rng.random(n) < cfg.cluster_affinity
        out = np.empty(n, dtype=np.int64)
        n_local = int(np.count_nonzero(local))
        out[local] = home[local] + K * self._zipf(rng, cfg.n_items // K, n_local)
        out[~local] = self._zipf(rng, cfg.n_items, n - n_local)
        return out

    def sample(self, rng: np.random.Generator, n: int) -> Rows:
        cfg = self.cfg
        user = self._zipf(rng, cfg.n_users, n, cfg.user_zipf_exponent)
        home = self.user_home[user]
        item = self._items(rng, home)
        ids = {"user": user, "item": item}
        for f in self.fields[2:]:
            if f.side == "user":
                ids[f.name] = self.attr[f.name][user]
            elif f.side == "item":
                ids[f.name] = self.attr[f.name][item]
            else:
                ids[f.name] = self._zipf(rng, f.vocab, n)
        nd = cfg.n_dense
        act = self.user_act[user]
        z = act[:, None] * self.dense_load[0]
        for f, other in enumerate(rng.standard_normal((_N_FACTORS - 1, n)), start=1):
            z += other[:, None] * self.dense_load[f]
        z += rng.standard_normal((n, nd))
        z /= self.dense_norm
        logv = self.dense_loc + self.dense_scale * np.clip(z, -6.0, 6.0)
        dense = np.maximum(np.floor(np.exp(logv)) - 1.0, 0.0).astype(np.int64)
        missing = rng.random((n, nd)) < self.dense_missing
        # History: heavier users have longer histories.
        length = rng.binomial(cfg.seq_len, sigmoid(act - 0.3))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(length, out=offsets[1:])
        hist = self._items(rng, np.repeat(home, length))
        return Rows(n, ids, dense, missing, offsets, hist)

    # -- the model --

    def _latent(self, rows: Rows, name: str) -> np.ndarray:
        if name == "tags":
            return self.lat["tags"][rows.ids["item"]]
        return self.lat[name][rows.ids[name]]

    def _terms(self, rows: Rows) -> dict[str, np.ndarray]:
        cfg = self.cfg
        x = np.log1p(np.where(rows.missing, 0, rows.dense).astype(np.float64))
        x = (x - self.x_mean) / self.x_std
        item = rows.ids["item"]
        t: dict[str, np.ndarray] = {}
        first = self.item_tag_w[item] + x @ self.dense_beta
        for name, w in self.w1.items():
            first = first + w[rows.ids[name]]
        t["first"] = first
        lat = {n: self._latent(rows, n) for n in {"user", "item", self.triple_field, self.mlp_field}}
        for a, b in self.pairs:
            la = lat[a] if a in lat else self._latent(rows, a)
            lb = lat[b] if b in lat else self._latent(rows, b)
            t[f"pair:{a}*{b}"] = np.einsum("ij,ij->i", la, lb)
        t["triple"] = np.einsum("ij,ij,ij->i", lat["user"], lat["item"], lat[self.triple_field])
        k = min(_MLP_DENSE, cfg.n_dense)
        inp = np.concatenate(
            [lat["user"], lat["item"], lat[self.mlp_field], x[:, self.dense_pick[:k]]], axis=1
        )
        t["mlp"] = np.tanh(inp @ self.mlp_w1 + self.mlp_b1) @ self.mlp_w2
        nd = cfg.n_dense
        if nd:
            p = self.dense_pick
            xs = [x[:, p[j % nd]] for j in range(5)]
            t["dense:prod"] = xs[0] * xs[1]
            t["dense:step"] = (xs[2] > 0.5).astype(np.float64)
            t["dense:dcat"] = xs[3] * self.dcat_slope[rows.ids[self.dcat_field]]
            t["dense:square"] = -(xs[4] ** 2)
        # Sequence: target item latent . recency-weighted mean latent of the history.
        lengths = np.diff(rows.hist_offsets)
        t["seq"] = np.zeros(rows.n)
        if rows.hist.size:
            nz = np.flatnonzero(lengths)
            starts = rows.hist_offsets[nz]
            age = np.repeat(rows.hist_offsets[1:], lengths) - 1 - np.arange(rows.hist.size)
            w = self.recency[age]
            sums = np.add.reduceat(self.lat["item"][rows.hist] * w[:, None], starts, axis=0)
            mean = sums / np.add.reduceat(w, starts)[:, None]
            t["seq"][nz] = np.einsum("ij,ij->i", lat["item"][nz], mean)
        return t

    def _group_values(self, terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for g in _GROUPS:
            members = [k for k in terms if k.split(":")[0] == g]
            if not members:
                continue
            acc = np.zeros(terms[members[0]].shape[0])
            for k in members:
                mu, sd = self.term_stats[k]
                acc += (terms[k] - mu) / (sd if sd > 1e-12 else 1.0)
            out[g] = acc / self.group_std[g]
        return out

    def scales(self, day: int = 0) -> dict[str, float]:
        """Each component's scale on ``day`` (see the module docstring; day 0: the config's)."""
        cfg = self.cfg
        base = {"first": cfg.first_order_scale, "pair": cfg.pairwise_scale, "triple": cfg.triple_scale,
                "mlp": cfg.mlp_scale, "dense": cfg.dense_scale, "seq": cfg.seq_scale}
        if not cfg.drift or not day:
            return base
        return {g: base[g] * max(0.0, 1.0 + cfg.drift * day * float(u)) for g, u in zip(_GROUPS, self.drift_direction)}

    def day_bias(self, day: int) -> float:
        """The bias of ``day``: the one that keeps the mean CTR at ``target_ctr`` (solved once per
        day), moved by ``bias_drift * day`` logits (a base rate that shifts over the days)."""
        if day not in self._day_bias:
            self._day_bias[day] = solve_bias(self._logit_no_bias(self._calib_values, day), self.cfg.target_ctr)
        return self._day_bias[day] + self.cfg.bias_drift * day

    def _logit_no_bias(self, values: dict[str, np.ndarray], day: int) -> np.ndarray:
        scale = self.scales(day)
        out = np.zeros(next(iter(values.values())).shape[0])
        for g, v in values.items():
            if scale[g]:
                out += scale[g] * v
        return out

    def prob(self, rows: Rows, day: int | np.ndarray = 0) -> np.ndarray:
        """The true click probability of every row (float64) on ``day`` (one day, or one per row)."""
        values = self._group_values(self._terms(rows))
        if np.ndim(day) == 0:
            return sigmoid(self.day_bias(int(day)) + self._logit_no_bias(values, int(day)))
        out = np.empty(rows.n)
        for d in np.unique(day):
            on = day == d
            out[on] = sigmoid(self.day_bias(int(d)) + self._logit_no_bias({g: v[on] for g, v in values.items()}, int(d)))
        return out

    def structure(self) -> dict:
        """The planted model's functional form without its parameters: which fields, features
        and constants each term uses (JSON-able). The model-class oracle
        (``rankmixer.models.planted``) is this form with learned parameters."""
        cfg = self.cfg
        scale = {"first": cfg.first_order_scale, "pair": cfg.pairwise_scale, "triple": cfg.triple_scale,
                 "mlp": cfg.mlp_scale, "dense": cfg.dense_scale, "seq": cfg.seq_scale}
        names = [f"I{j + 1}" for j in self.dense_pick.tolist()]
        k = min(_MLP_DENSE, cfg.n_dense)
        out: dict = {
            "latent_dim": cfg.latent_dim,
            "fields": [f.name for f in self.fields],
            "bag": "tags",
            "sequence": "hist_items",
            "dense": [f"I{j + 1}" for j in range(cfg.n_dense)],
            "groups": [g for g in _GROUPS if scale[g] and (g != "dense" or cfg.n_dense)],
            # user / item latent = its own (cluster included) + the mean-scaled sum of these
            # attribute fields' latents (the fields' values on the row)
            "latent_attributes": self.latent_attributes,
            "pairs": [list(p) for p in self.pairs],
            "triple": ["user", "item", self.triple_field],
            "mlp": {"fields": ["user", "item", self.mlp_field], "dense": names[:k], "hidden": _MLP_HIDDEN},
            "recency_decay": _RECENCY_DECAY,
        }
        if cfg.n_dense:
            xs = [names[j % cfg.n_dense] for j in range(5)]
            out["dense_terms"] = {"prod": xs[:2], "step": xs[2], "step_at": 0.5,
                                  "dcat": [xs[3], self.dcat_field], "square": xs[4]}
        return out

    def summary(self) -> dict:
        """The planted model's choices, for the meta file."""
        return {
            "bias": self.bias,
            "pairs": [list(p) for p in self.pairs],
            "triple_field": self.triple_field,
            "mlp_field": self.mlp_field,
            "dense_x_categorical_field": self.dcat_field,
            "calibration_logit_std": self.calib_logit_std,
            "vocab_sizes": {f.name: f.vocab for f in self.fields} | {"tags": self.cfg.n_tags},
            "field_side": {f.name: f.side for f in self.fields},
            "dense_missing_rate": [float(v) for v in self.dense_missing],
            "structure": self.structure(),
            **({"days": [{"day": d, "scales": self.scales(d), "bias": self.day_bias(d)}
                         for d in range(self.cfg.days + 1)]} if self.cfg.drift or self.cfg.bias_drift else {}),
        }

