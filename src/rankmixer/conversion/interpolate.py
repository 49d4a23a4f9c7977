"""The exponential delay model and Personalized Interpolation between two fixed windows.

A click that converts does so ``D ~ Exp(beta)`` after it, so the share of its conversions
within ``t`` is ``F(t) = 1 - exp(-beta t)``, and its probability of converting within ``t`` is
``p F(t)``. Given the probabilities ``p_s``, ``p_l`` of the windows ``T_s < T_l``, the window
``T_f`` between them gets

    p(T_f) = p_s + alpha (p_l - p_s),   alpha = (F(T_f) - F(T_s)) / (F(T_l) - F(T_s)),

exact when ``p_s`` and ``p_l`` are (both are ``p F`` at their window and alpha is linear in F).
``alpha = (1 - e^{-beta (T_f - T_s)}) / (1 - e^{-beta (T_l - T_s)})``, computed with ``expm1``;
it tends to the linear ``(T_f - T_s) / (T_l - T_s)`` as ``beta -> 0`` and to 1 as
``beta -> inf``. A window outside ``[T_s, T_l]`` is refused (:class:`WindowOutOfRange`): beyond
``T_l`` nothing was trained that has seen those conversions, and below ``T_s`` the formula
extrapolates; neither is what the method claims. Times are in days.
"""

from __future__ import annotations

import numpy as np


class WindowOutOfRange(ValueError):
    """A requested conversion window outside the trained windows ``[T_s, T_l]``."""


def check_windows(short_days: float, long_days: float, window_days) -> np.ndarray:
    """``window_days`` as an array after checking ``0 < T_s < T_l`` and ``T_s <= T_f <= T_l``."""
    if not 0 < short_days < long_days:
        raise ValueError(f"the fixed windows must satisfy 0 < T_s < T_l, got T_s={short_days}, T_l={long_days}")
    t = np.asarray(window_days, dtype=np.float64)
    bad = ~((t >= short_days) & (t <= long_days))
    if bad.any():
        raise WindowOutOfRange(f"conversion window {float(t[bad].ravel()[0]):g} days is outside the trained windows "
                               f"[{short_days}, {long_days}] days ({int(bad.sum())} value(s))")
    return t


def delay_cdf(t, rate_per_day) -> np.ndarray:
    """``F(t) = 1 - exp(-beta t)``: the share of a click's conversions within ``t`` days."""
    return -np.expm1(-np.asarray(rate_per_day, dtype=np.float64) * np.asarray(t, dtype=np.float64))


def interpolation_weight(rate_per_day, short_days: float, long_days: float, window_days) -> np.ndarray:
    """``alpha`` of the window ``T_f`` for delay rate ``beta`` (arrays broadcast)."""
    t = check_windows(short_days, long_days, window_days)
    beta = np.asarray(rate_per_day, dtype=np.float64)
    if (beta < 0).any() or not np.isfinite(beta).all():
        raise ValueError("delay rates must be finite and non-negative")
    num, den = -np.expm1(-beta * (t - short_days)), -np.expm1(-beta * (long_days - short_days))
    linear = (t - short_days) / (long_days - short_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), linear)
    return np.clip(alpha, 0.0, 1.0)


def interpolate(p_short, p_long, rate_per_day, short_days: float, long_days: float, window_days) -> np.ndarray:
    """``p(T_f) = p_s + alpha (p_l - p_s)`` (arrays broadcast; see the module docstring)."""
    alpha = interpolation_weight(rate_per_day, short_days, long_days, window_days)
    p_s, p_l = np.asarray(p_short, dtype=np.float64), np.asarray(p_long, dtype=np.float64)
    return p_s + alpha * (p_l - p_s)
