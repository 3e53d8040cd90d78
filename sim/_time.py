"""Simulated time: an integer count of picoseconds.

The kernel's clock is a plain ``int`` (``SimTime``).  Conversions from human
units refuse to round: ``ns(1.5)`` is exact (1500 ps) but ``ps(0.5)`` raises,
the same rule cocotb's ``Timer(round_mode="error")`` applies.  Floats are
accepted only when the product is an exact integer number of picoseconds.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Union

SimTime = int
Number = Union[int, float, Fraction, Decimal]

PS_PER_NS = 1_000
PS_PER_US = 1_000_000
PS_PER_MS = 1_000_000_000
PS_PER_S = 1_000_000_000_000


def _exact(value: Number, scale: int, unit: str) -> SimTime:
    if isinstance(value, bool):
        raise TypeError(f"{unit}() takes a number, not a bool")
    if isinstance(value, int):
        return value * scale
    if isinstance(value, float):
        product = Fraction(value) * scale
    elif isinstance(value, (Fraction, Decimal)):
        product = Fraction(value) * scale
    else:
        raise TypeError(f"{unit}() takes an int, float, Fraction or Decimal, not {type(value).__name__}")
    if product.denominator != 1:
        msg = (
            f"{value!r} {unit} is not a whole number of picoseconds; "
            "simulated time is an integer count of ps and is never rounded silently"
        )
        raise ValueError(msg)
    return int(product)


def ps(value: Number) -> SimTime:
    """``value`` picoseconds as SimTime."""
    return _exact(value, 1, "ps")


def ns(value: Number) -> SimTime:
    """``value`` nanoseconds as SimTime (picoseconds)."""
    return _exact(value, PS_PER_NS, "ns")


def us(value: Number) -> SimTime:
    """``value`` microseconds as SimTime (picoseconds)."""
    return _exact(value, PS_PER_US, "us")


def ms(value: Number) -> SimTime:
    """``value`` milliseconds as SimTime (picoseconds)."""
    return _exact(value, PS_PER_MS, "ms")


def seconds(value: Number) -> SimTime:
    """``value`` seconds as SimTime (picoseconds)."""
    return _exact(value, PS_PER_S, "s")


#: cocotb's time units and their size in ps; ``step`` is the simulator's precision, here 1 ps
TIME_UNITS: dict[str, Fraction] = {
    "fs": Fraction(1, 1000), "ps": Fraction(1), "ns": Fraction(PS_PER_NS), "us": Fraction(PS_PER_US),
    "ms": Fraction(PS_PER_MS), "sec": Fraction(PS_PER_S), "step": Fraction(1),
}


def to_ps(value: Number, unit: str) -> SimTime:
    """``value`` in cocotb's ``unit`` (fs, ps, ns, us, ms, sec or step) as SimTime; refuses to round."""
    scale = TIME_UNITS.get(unit)
    if scale is None:
        raise ValueError(f"unknown time unit {unit!r} (one of {', '.join(TIME_UNITS)})")
    if scale.denominator == 1:
        return _exact(value, int(scale), unit)
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction, Decimal)):
        raise TypeError(f"{unit}() takes an int, float, Fraction or Decimal, not {type(value).__name__}")
    product = Fraction(value) * scale
    if product.denominator != 1:
        raise ValueError(f"{value!r} {unit} is not a whole number of picoseconds; "
                         "simulated time is an integer count of ps and is never rounded silently")
    return int(product)


def format_time(t: SimTime) -> str:
    """Render a SimTime for messages: the largest unit that keeps it exact-ish."""
    if t % PS_PER_MS == 0 and t:
        return f"{t // PS_PER_MS} ms"
    if t % PS_PER_US == 0 and t:
        return f"{t // PS_PER_US} us"
    if t % PS_PER_NS == 0 and t:
        return f"{t // PS_PER_NS} ns"
    return f"{t} ps"
