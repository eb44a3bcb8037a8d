"""Counter windows: increase and rate over a range, resets as Prometheus, and the bound."""

from __future__ import annotations

from vigie.core.window import MAX_SERIES, POINTS, Window

LAB = (("channel", "lab"),)


def test_increase_needs_the_whole_window_then_counts_growth() -> None:
    """Nothing is said until the history covers the range; then the growth over it."""
    window = Window(600.0)
    for minute in range(10):
        window.record([(LAB, float(minute * 3))], minute * 60.0)
        assert window.increase(LAB, minute * 60.0) is None
    window.record([(LAB, 30.0)], 600.0)
    assert window.increase(LAB, 600.0) == 30.0
    window.record([(LAB, 30.0)], 660.0)
    assert window.increase(LAB, 660.0) == 27.0
    assert window.rate(LAB, 660.0) == 27.0 / 600.0


def test_a_counter_reset_counts_the_new_value_in_full() -> None:
    """A counter going down restarted from zero: 10 -> 2 is an increase of 2, not -8."""
    window = Window(120.0)
    for at, value in ((0.0, 5.0), (60.0, 10.0), (120.0, 2.0)):
        window.record([(LAB, value)], at)
    assert window.increase(LAB, 120.0) == 7.0


def test_points_per_series_and_series_are_bounded() -> None:
    """A fast check keeps no more points than the bound, and the increase stays exact."""
    window = Window(3600.0)
    for second in range(0, 7200):
        window.record([(LAB, float(second))], float(second))
    assert window.size() <= POINTS + 3
    assert window.increase(LAB, 7199.0) is not None
    assert 3599.0 <= (window.increase(LAB, 7199.0) or 0) <= 3599.0 + 3600.0 / POINTS
    many = Window(60.0)
    many.record([((("n", str(i)),), 1.0) for i in range(MAX_SERIES + 5)], 0.0)
    assert len(many.labels()) == MAX_SERIES and many.ignored == 5


def test_a_series_gone_for_a_whole_window_is_forgotten() -> None:
    """A channel no longer reported leaves the window once its last point is out of range."""
    window = Window(60.0)
    window.record([(LAB, 1.0)], 0.0)
    window.record([((("channel", "adt"),), 1.0)], 61.0)
    assert window.labels() == [(("channel", "adt"),)]
