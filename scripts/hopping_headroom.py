"""How much of the session-hopping set's Bayes AUC a view of the history by behaviours can reach,
against a view by sessions: logistic regressions (scikit-learn) on per-row features built from
the generator's own arrays over the positions a model sees (the newest ``hist_max_len``),
fitted on 100,000 sampled rows and scored on 50,000 more, for three independent draws. Writes
docs/results/hopping_headroom.json.

    python scripts/hopping_headroom.py [--out docs/results/hopping_headroom.json] [--option KEY=VALUE ...]

``--option`` sets a field of the behaviour config on top of data/behaviour_hopping's preset
options, so a variant of the set can be checked before it is benchmarked.

Feature sets (each standardised, with its square and log1p, so monotone shapes are reachable):
* ``first``: the planted first-order term (user, item and category biases), the ceiling of a
  model that learned every bias;
* ``+ behaviour counts``: plus how many visible behaviours share the candidate's category and
  their share of the history (target attention pooled over behaviours, at its best);
* ``+ per-session counts``: plus those counts per session index and each session's length
  (behaviour attention that also reads the session index field, at its best);
* ``+ session view``: plus the share of the visible sessions among the last ``theme_sessions``
  whose majority category is the candidate's, and whether the newest one's is (one token per
  session, attention that counts sessions);
* ``+ planted terms``: plus the planted session terms themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rankmixer.config import load_config
from rankmixer.bench.headroom import parse_args, run
from rankmixer.data.datasets.behaviour.config import BehaviourConfig
from rankmixer.data.datasets.behaviour.generator import Generator

FIT, SCORE = 100_000, 50_000


def one_draw(gen: Generator, seed: int) -> dict[str, float]:
    cfg = gen.cfg
    rng = np.random.default_rng(seed)
    n = FIT + SCORE
    rows = gen.sample(rng, n)
    h = rows.hist
    prob = gen.prob(rows)
    y = (rng.random(n) < prob).astype(int)
    terms = gen.terms(rows)
    S = cfg.max_sessions
    length = np.diff(h.offsets)
    row = np.repeat(np.arange(n), length)
    lag = h.offsets[1:][row] - np.arange(h.item.size)  # 1 = the newest
    seen = lag <= cfg.max_len
    cand = gen.catalog.category_of(rows.item)
    match = seen & (gen.catalog.category_of(h.item) == cand[row])
    index = np.minimum(h.session, S - 1)
    on = np.zeros((n, S))
    np.add.at(on, (row[match], index[match]), 1.0)
    size = np.zeros((n, S))
    np.add.at(size, (row[seen], index[seen]), 1.0)
    total = size.sum(1)
    count = on.sum(1)
    share = np.divide(count, total, out=np.zeros(n), where=total > 0)
    majority = (on > 0.5 * size) & (size > 0)
    recent = size[:, :cfg.theme_sessions] > 0
    visits = np.divide(majority[:, :cfg.theme_sessions].sum(1), recent.sum(1), out=np.zeros(n), where=recent.any(1))
    first = [terms["first"]]

    def fit(cols: list[np.ndarray]) -> float:
        X = np.stack(cols, 1)
        X = np.concatenate([X, X ** 2, np.log1p(np.abs(X))], 1)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[:FIT], y[:FIT])
        return float(roc_auc_score(y[FIT:], model.predict_proba(X[FIT:])[:, 1]))

    return {"bayes": float(roc_auc_score(y[FIT:], prob[FIT:])),
            "first": fit(first),
            "first + behaviour counts": fit([*first, count, share]),
            "first + per-session counts": fit([*first, *on.T, *size.T]),
            "first + session view": fit([*first, visits, majority[:, 0].astype(float)]),
            "first + planted terms": fit([*first, terms["theme"], terms["session"]])}


def main() -> None:
    out, options = parse_args(__doc__, Path("docs/results/hopping_headroom.json"))
    cfg = BehaviourConfig.model_validate({**load_config("hopping_mos", []).data.preset_options, **options})
    gen = Generator(cfg)
    run(out, cfg, lambda seed: one_draw(gen, seed), {"fit_rows": FIT, "score_rows": SCORE})


if __name__ == "__main__":
    main()
