"""Simulated time is an integer count of picoseconds and is never rounded silently."""

from fractions import Fraction

import pytest

from sim import format_time, ms, ns, ps, seconds, us


def test_units_convert_exactly_to_picoseconds():
    """Each unit helper scales to ps with integer results."""
    assert [ps(7), ns(1), us(1), ms(1), seconds(1)] == [7, 1_000, 1_000_000, 1_000_000_000, 1_000_000_000_000]


def test_fractional_values_are_accepted_when_exact():
    """1.5 ns is exactly 1500 ps, a Fraction of a us likewise."""
    assert ns(1.5) == 1500
    assert us(Fraction(1, 4)) == 250_000


@pytest.mark.parametrize("call", [lambda: ps(0.5), lambda: ns(0.0001), lambda: us(Fraction(1, 3))])
def test_units_refuse_silent_rounding(call):
    """A value that is not a whole number of ps raises instead of rounding."""
    with pytest.raises(ValueError, match="not a whole number of picoseconds"):
        call()


def test_units_refuse_non_numbers():
    """Strings and bools are type errors, not numbers."""
    with pytest.raises(TypeError):
        ns("5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ns(True)


def test_format_time_uses_the_largest_exact_unit():
    """Messages show 3 ms rather than 3000000000 ps."""
    assert [format_time(ms(3)), format_time(us(7)), format_time(ns(2)), format_time(5), format_time(0)] == [
        "3 ms", "7 us", "2 ns", "5 ps", "0 ps",
    ]


def test_timer_takes_cocotb_units_and_refuses_to_round():
    import warnings

    import pytest

    from sim import Timer

    assert Timer(10, unit="ns").delay == 10_000
    assert Timer(1.5, unit="us").delay == 1_500_000
    assert Timer(2, unit="sec").delay == 2 * 10**12
    assert Timer(3000, unit="fs").delay == 3
    assert Timer(10).delay == Timer(10, unit="step").delay == Timer(10, "ps").delay == 10
    with pytest.raises(ValueError, match="not a whole number of picoseconds"):
        Timer(1500, unit="fs")
    with pytest.raises(ValueError, match=r"unknown time unit 'days'"):
        Timer(1, unit="days")
    with pytest.warns(DeprecationWarning, match="cocotb 1.x's spelling; use unit="):
        assert Timer(5, units="ns").delay == 5000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Timer(5, unit="ns")  # the cocotb 2 spelling warns nothing
