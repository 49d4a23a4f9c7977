"""The synthetic set over days with drift: each day's component scales against the formula,
every training row's probability against the generator's law of its day (recomputed from the
same random stream), the day-d shard, the mean CTR held at its target on every day, and drift 0
leaving the data unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from rankmixer.data.datasets.synthetic import SyntheticConfig, generate
from rankmixer.data.datasets.synthetic.generator import Generator
from rankmixer.data.datasets.synthetic.sampling import DRIFT_KEY, SPLIT_KEY, seeded_rng
from rankmixer.data.datasets.synthetic.stream import block

BASE = dict(rows_train=1_000, rows_valid=300, rows_test=300, n_users=500, n_items=400, vocab_max=300,
            n_tags=30, n_item_clusters=5, seed=3)
SCALES = {"first": 0.8, "pair": 0.9, "triple": 0.5, "mlp": 0.5, "dense": 0.6, "seq": 0.6}  # the config's


def test_day_scales_follow_the_formula():
    gen = Generator(SyntheticConfig(**BASE, days=4, drift=0.3))
    u = seeded_rng(3, DRIFT_KEY).uniform(-1.0, 1.0, 6)
    for day in range(5):
        want = {g: s * max(0.0, 1.0 + 0.3 * day * u[j]) for j, (g, s) in enumerate(SCALES.items())}
        assert gen.scales(day) == pytest.approx(want, rel=1e-12)
    assert gen.scales(0) == SCALES


def test_train_rows_follow_the_law_of_their_day():
    cfg = SyntheticConfig(**BASE, days=4, drift=0.5)
    gen = Generator(cfg)
    _, p, _ = block(gen, "train", 0, cfg.rows_train)
    rows = gen.sample(seeded_rng(cfg.seed, SPLIT_KEY["train"], 0), cfg.rows_train)
    by_day = [gen.prob(rows, d) for d in range(4)]
    day = np.arange(cfg.rows_train) * 4 // cfg.rows_train  # 250 rows a day, in order
    assert np.array_equal(p, np.choose(day, by_day))
    assert not np.allclose(by_day[0], by_day[3])  # the law does drift
    _, p_valid, _ = block(gen, "valid", 0, cfg.rows_valid)  # valid: the day after training
    assert np.array_equal(p_valid, gen.prob(gen.sample(seeded_rng(cfg.seed, SPLIT_KEY["valid"], 0), 300), 4))


def test_the_mean_ctr_stays_at_its_target_every_day():
    gen = Generator(SyntheticConfig(**BASE, days=4, drift=0.5, target_ctr=0.2))
    rows = gen.sample(seeded_rng(11, 99), 20_000)
    for d in range(5):
        assert gen.prob(rows, d).mean() == pytest.approx(0.2, abs=0.01)


def test_one_days_shard(tmp_path):
    cfg = SyntheticConfig(**BASE, days=4, drift=0.5, train_day=2)
    assert cfg.rows("train") == 250 and cfg.rows("valid") == 300
    gen = Generator(cfg)
    _, p, _ = block(gen, "train", 0, 250)
    full, _, _ = block(Generator(SyntheticConfig(**BASE, days=4, drift=0.5)), "train", 0, 1000)
    assert not np.array_equal(p, full[500:750])  # rows of their own, from the day's law
    meta = generate(cfg, tmp_path / "shard", progress=False)
    assert meta["splits"]["train"]["rows"] == 250
    assert [d["day"] for d in meta["planted_model"]["days"]] == [0, 1, 2, 3, 4]


def test_no_drift_leaves_the_data_unchanged():
    plain, gen = Generator(SyntheticConfig(**BASE)), Generator(SyntheticConfig(**BASE, days=4))
    for split in ("train", "test"):
        assert np.array_equal(block(plain, split, 0, 300)[1], block(gen, split, 0, 300)[1])


@pytest.mark.parametrize("options, message", [({"days": 4, "train_day": 4}, "train_day 4"),
                                              ({"days": 2000}, "one row per day")])
def test_bad_day_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**{**BASE, **options})
