"""Personalized Interpolation against hand computations and the exponential delay law."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankmixer.conversion.interpolate import WindowOutOfRange, delay_cdf, interpolate, interpolation_weight


def test_by_hand_half_life_one_day():
    # beta = ln 2: F(1) = 1/2, F(2) = 3/4, F(3) = 7/8, so alpha(2) = (3/4 - 1/2) / (7/8 - 1/2) = 2/3
    beta = math.log(2)
    assert interpolation_weight(beta, 1, 3, 2) == pytest.approx(2 / 3)
    assert interpolate(0.1, 0.4, beta, 1, 3, 2) == pytest.approx(0.1 + 2 / 3 * 0.3)
    assert delay_cdf([1, 2, 3], beta) == pytest.approx([0.5, 0.75, 0.875])


def test_endpoints_and_limits():
    assert interpolate(0.1, 0.3, 0.7, 1, 7, 1) == pytest.approx(0.1)
    assert interpolate(0.1, 0.3, 0.7, 1, 7, 7) == pytest.approx(0.3)
    assert interpolation_weight(0.0, 1, 7, 4) == pytest.approx(0.5)  # no delay information: linear
    assert interpolation_weight(1e-9, 1, 7, 4) == pytest.approx(0.5, rel=1e-6)
    assert interpolation_weight(50.0, 1, 7, 2) == pytest.approx(1.0)  # everything converts at once


def test_exact_under_the_exponential_law():
    """With p_s = p F(T_s) and p_l = p F(T_l) the interpolation gives p F(T_f) exactly."""
    rng = np.random.default_rng(0)
    p, beta = rng.uniform(0.01, 0.5, 100), rng.uniform(0.05, 5.0, 100)
    for t in (1.0, 2.0, 3.5, 7.0):
        got = interpolate(p * delay_cdf(1, beta), p * delay_cdf(7, beta), beta, 1, 7, t)
        assert got == pytest.approx(p * (1 - np.exp(-beta * t)), rel=1e-9)


def test_windows_outside_the_trained_range_are_refused():
    for t in (0.5, 7.5, [2, 8]):
        with pytest.raises(WindowOutOfRange, match=r"outside the trained windows \[1, 7\]"):
            interpolate(0.1, 0.2, 0.5, 1, 7, t)
    with pytest.raises(ValueError, match="0 < T_s < T_l"):
        interpolate(0.1, 0.2, 0.5, 7, 1, 3)
    with pytest.raises(ValueError, match="finite and non-negative"):
        interpolate(0.1, 0.2, -1.0, 1, 7, 3)
