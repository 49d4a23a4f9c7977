"""The conversions benchmark's pure parts: the nearest window and the beta-recovery summary."""

from __future__ import annotations

import numpy as np
import pytest

from rankmixer.bench.conversions import beta_recovery, nearest_window


def test_nearest_window():
    assert [nearest_window(t, 1, 7) for t in (2, 3, 4, 5, 6)] == [1, 1, 7, 7, 7]  # a tie goes to the long one


def test_beta_recovery_by_hand():
    fitted = {"global": {"rate_per_day": 1.0},
              "advertisers": {"0": {"rate_per_day": 1.1, "rate_mle": 1.2, "conversions": 10, "clicks": 50},
                              "1": {"rate_per_day": 1.8, "rate_mle": None, "conversions": 0, "clicks": 5},
                              "2": {"rate_per_day": 0.45, "rate_mle": 0.4, "conversions": 9, "clicks": 40}}}
    planted = np.array([1.0, 2.0, 0.5])
    out = beta_recovery(fitted, planted)
    assert out["fitted"]["median_abs_rel_error"] == pytest.approx(0.1)  # errors 0.1, 0.1, 0.1
    assert out["mle"]["advertisers"] == 2 and out["mle"]["mean_abs_rel_error"] == pytest.approx(0.2)
    assert out["global"]["median_abs_rel_error"] == pytest.approx(0.5)  # |1/1-1|, |1/2-1|, |1/0.5-1| -> 0, .5, 1
    assert out["fitted"]["log_rate_correlation"] == pytest.approx(0.9863, abs=1e-4)  # numpy.corrcoef of the logs
