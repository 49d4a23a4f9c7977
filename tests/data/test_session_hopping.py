"""The session-hopping histories of the behaviour generator (``history: sessions``): the
sessions a splitter cuts from the generated time gaps are the planted ones, the two session
terms equal a plain-Python loop over the sessions, and the labels follow the planted model."""

from __future__ import annotations

import numpy as np
import pytest

from rankmixer.data.datasets.behaviour.config import BehaviourConfig
from rankmixer.data.datasets.behaviour.generator import Generator
from rankmixer.data.datasets.synthetic.sampling import seeded_rng
from rankmixer.data.schema import SessionSplit
from tests.data.test_sessions import reference, run

CFG = dict(history="sessions", seq_len_max=40, n_users=300, n_items=400, n_categories=20, n_interests=3,
           first_order_scale=0.3, attention_scale=0.0, recency_scale=0.0, return_scale=0.0,
           theme_scale=1.0, session_scale=1.0, theme_sessions=4)


@pytest.fixture(scope="module")
def sampled():
    gen = Generator(BehaviourConfig(**CFG))
    return gen, gen.sample(seeded_rng(7, 3), 600)


def rows_of(rows):
    h = rows.hist
    for r in range(rows.n):
        a, b = h.offsets[r], h.offsets[r + 1]
        yield r, h.dt[a:b], h.session[a:b], h.session_theme[a:b]


def test_a_splitter_recovers_the_planted_sessions(sampled):
    _, rows = sampled
    lists, planted = [], []
    for _, dt, session, _ in rows_of(rows):
        lists.append([str(int(t)) for t in dt] or None)
        planted.append(session.tolist())
        assert (np.diff(dt) <= 0).all()  # oldest first: gaps to the request never grow
    split = SessionSplit(of="dt", gap=1800, max_sessions=1000)
    got = run(lists, split)
    assert [g or [] for g in got] == planted
    # the loop reference agrees, so the splitter and the generator agree through an independent walk
    assert [reference([float(t) for t in dt], 1800, None, 1000) for _, dt, _, _ in rows_of(rows)] == planted
    assert sum(len(set(s)) > 1 for s in planted) > 100  # many rows hold several sessions


def test_session_terms_against_a_loop(sampled):
    gen, rows = sampled
    terms = gen.terms(rows)
    cand_cat = rows.item % CFG["n_categories"]
    for r, _, session, theme in rows_of(rows):
        themes = {}  # session index -> its theme
        for s, t in zip(session.tolist(), theme.tolist()):
            assert themes.setdefault(s, t) == t  # one theme per session
        recent = [themes[s] for s in themes if s < CFG["theme_sessions"]]
        share = sum(t == cand_cat[r] for t in recent) / len(recent) if recent else 0.0
        assert terms["theme"][r] == pytest.approx(share)
        assert terms["session"][r] == float(bool(themes) and themes[0] == cand_cat[r])
    assert terms["session"].std() > 0.2 and terms["theme"].std() > 0.1


def test_sessions_follow_the_users_themes(sampled):
    gen, rows = sampled
    h = rows.hist
    row = np.repeat(np.arange(rows.n), np.diff(h.offsets))
    own = (gen.base_interests[rows.user][row] == h.session_theme[:, None]).any(axis=1)
    # off-theme sessions are the explorations (explore_rate 0.2) and chance hits of a theme
    assert 0.7 < own.mean() < 0.95
    on_theme = (h.item % CFG["n_categories"]) == h.session_theme
    assert on_theme.mean() > 0.85  # theme_noise 0.1 (and noise can land on the theme)


def test_session_scales_need_session_histories():
    with pytest.raises(ValueError, match="history: sessions"):
        BehaviourConfig(theme_scale=1.0)
    with pytest.raises(ValueError, match="session_pause_min"):
        BehaviourConfig(history="sessions", session_pause_min=100.0, within_gap_mean=60.0)
