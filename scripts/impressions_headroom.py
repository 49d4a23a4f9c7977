"""How much of the impressions set's Bayes AUC a view of the history without page context can
reach: logistic regressions (scikit-learn) on per-exposure features built from the simulator's
own arrays, fitted on half the exposures of 8,000 simulated users and scored on the other half,
for three independent draws. Writes docs/results/impressions_headroom.json.

    python scripts/impressions_headroom.py [--out docs/results/impressions_headroom.json] [--option KEY=VALUE ...]

``--option`` sets a field of the impressions config (the generator's planted model), as
``rankmixer data prepare --dataset impressions -o KEY=VALUE`` does, so a variant of the set can
be checked before it is benchmarked.

Feature sets (each with its squares and log1p, so monotone shapes are reachable):
* ``first``: the item's bias and whether its category is one of the user's (what no history gives
  directly, the ceiling of a model that learned both);
* ``+ clicked count``: plus the decayed count of earlier clicks on the item's category (the
  clicked items alone, DIN on clicks at its best);
* ``+ clicked and unclicked counts``: plus the same count of unclicked exposures (every exposure
  with its own feedback, without its page: DIN over exposures at its best);
* ``+ planted context``: plus the page-context term itself (RACP at its best).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from rankmixer.bench.headroom import parse_args, run
from rankmixer.data.datasets.impressions.config import ImpressionConfig
from rankmixer.data.datasets.impressions.simulate import Simulator

USERS = 8_000


def one_draw(sim: Simulator, seed: int) -> dict[str, float]:
    cfg = sim.cfg
    out = sim.simulate(np.random.default_rng(seed), USERS)
    T, P = cfg.requests_per_user, cfg.max_pages
    cat, click = out["cat"], out["click"]
    clicked = np.zeros(cat.shape)
    unclicked = np.zeros(cat.shape)
    for t in range(T):
        for k in range(1, min(P, t) + 1):
            same = cat[:, t - k, None, :] == cat[:, t, :, None]  # [U, I (now), I (then)]
            clicked[:, t] += cfg.context_decay ** (k - 1) * (same & click[:, t - k, None, :]).sum(-1)
            unclicked[:, t] += cfg.context_decay ** (k - 1) * (same & ~click[:, t - k, None, :]).sum(-1)
    y = click.reshape(-1)
    half = y.size // 2
    bayes = (1 - cfg.noisy_page_rate) * out["prob"] + cfg.noisy_page_rate * cfg.noisy_click_rate
    first = [sim.planted.item_bias[out["item"]], out["liked"].astype(float)]

    def fit(cols: list[np.ndarray]) -> float:
        X = np.stack([c.reshape(-1) for c in cols], 1)
        X = np.concatenate([X, X ** 2, np.log1p(np.abs(X))], 1)
        model = LogisticRegression(max_iter=2000).fit(X[:half], y[:half])
        return float(roc_auc_score(y[half:], model.predict_proba(X[half:])[:, 1]))

    return {"bayes": float(roc_auc_score(y[half:], bayes.reshape(-1)[half:])),
            "first": fit(first),
            "first + clicked count": fit([*first, clicked]),
            "first + clicked and unclicked counts": fit([*first, clicked, unclicked]),
            "first + planted context": fit([*first, out["ctx"]])}


def main() -> None:
    out, options = parse_args(__doc__, Path("docs/results/impressions_headroom.json"))
    cfg = ImpressionConfig.model_validate(options)
    sim = Simulator(cfg)
    run(out, cfg, lambda seed: one_draw(sim, seed), {"users": USERS})


if __name__ == "__main__":
    main()
