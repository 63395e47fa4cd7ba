"""The live rate behind the host console's sell-out projection (demand's estimator
tests backtest it on synthetic spikes)."""

from __future__ import annotations

import pytest

from livestream import live_rate


def test_live_rate_of_a_steady_sale_is_that_rate():
    assert live_rate.live_rate([20] * 30, elapsed_seconds=600) == pytest.approx(2.0)
    # Open for 5 s only: 10 units in those 5 s, not diluted by the window.
    assert live_rate.live_rate([10] + [0] * 29, elapsed_seconds=5) == pytest.approx(2.0)
    assert live_rate.live_sell_out_seconds(remaining=10, rate_per_second=2.0) == 5.0
    assert live_rate.live_sell_out_seconds(remaining=10, rate_per_second=0.0) is None
