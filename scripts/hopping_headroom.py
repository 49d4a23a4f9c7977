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

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rankmixer.config import load_config
from rankmixer.core.hardware import machine_info
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results/hopping_headroom.json"))
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a behaviour config field (repeatable)")
    args = ap.parse_args()
    options = dict(load_config("hopping_mos", []).data.preset_options)
    for opt in args.option:
        key, sep, value = opt.partition("=")
        if not sep:
            raise SystemExit(f"--option {opt!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    if args.out.exists():  # replace only a report this script wrote
        try:
            ours = {"draws", "rows", "fit_rows"} <= set(json.loads(args.out.read_text()))
        except (ValueError, UnicodeDecodeError, TypeError):
            ours = False
        if not ours:
            raise SystemExit(f"{args.out}: exists and is not a report of this script; refusing to overwrite it")
    cfg = BehaviourConfig.model_validate(options)
    gen = Generator(cfg)
    draws = [one_draw(gen, seed) for seed in (11, 12, 13)]
    rows = [{"features": k, "auc_mean": float(np.mean([d[k] for d in draws])), "auc_sd": float(np.std([d[k] for d in draws], ddof=1))}
            for k in draws[0]]
    for r in rows:
        print(f"{r['features']:32s} {r['auc_mean']:.4f} +- {r['auc_sd']:.4f}")
    args.out.write_text(json.dumps({"machine": machine_info(), "config": cfg.model_dump(mode="json"), "fit_rows": FIT,
                                    "score_rows": SCORE, "draws": draws, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
