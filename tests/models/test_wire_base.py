"""The one wire-struct base (models/_wire.py): layout, round trip, hooks, offset tables, range checks."""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Self

import attrs
import pytest

from models._wire import WireStruct, WireValue, at_offsets, check_u32, check_u64


@attrs.frozen
class _Pair(WireStruct):
    FORMAT: ClassVar[str] = "<HxI"
    SIZE: ClassVar[int] = 7

    a: int
    b: int = attrs.field(default=0, validator=check_u32)


@attrs.frozen(kw_only=True)
class _Nibbles(WireStruct):
    FORMAT: ClassVar[str] = "<B"
    SIZE: ClassVar[int] = 1

    hi: int
    lo: int

    def _to_wire(self) -> tuple[WireValue, ...]:
        return (self.hi << 4 | self.lo,)

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        return cls(hi=values[0] >> 4, lo=values[0] & 0xF)


def test_fields_pack_little_endian_in_format_order():
    """Fields go to the FORMAT slots in declaration order, little-endian, pads zero."""
    raw = _Pair(0x0102, 0x03040506).pack()
    assert raw == bytes.fromhex("0201" "00" "06050403")
    assert len(raw) == _Pair.SIZE == struct.calcsize(_Pair.FORMAT)


def test_unpack_reads_at_an_offset_and_inverts_pack():
    """unpack(data, offset) reads the struct where it sits inside a larger buffer."""
    value = _Pair(7, 0xFFFF_FFFF)
    assert _Pair.unpack(b"\xaa\xbb" + value.pack(), 2) == value


def test_hooks_map_fields_that_share_a_wire_slot():
    """_to_wire / _from_wire let two fields share one byte; kw_only classes unpack too."""
    assert _Nibbles(hi=3, lo=0xA).pack() == b"\x3a"
    assert _Nibbles.unpack(b"\x3a") == _Nibbles(hi=3, lo=0xA)


def test_out_of_range_values_are_refused_at_construction():
    """check_u32 / check_u64 raise ValueError naming the field instead of truncating."""
    with pytest.raises(ValueError, match="b must be a u32, not 0x100000000"):
        _Pair(0, 1 << 32)

    @attrs.frozen
    class _Wide(WireStruct):
        FORMAT: ClassVar[str] = "<Q"
        SIZE: ClassVar[int] = 8
        x: int = attrs.field(validator=check_u64)

    with pytest.raises(ValueError, match="x must be a u64"):
        _Wide(-1)


def test_at_offsets_places_codes_and_pads_to_size():
    """at_offsets turns an (offset, code) table into a FORMAT with explicit pads."""
    fmt = at_offsets(16, ((0, "H"), (3, "B"), (8, "4s")))
    assert fmt == "<H1xB4x4s4x"
    assert struct.calcsize(fmt) == 16
    with pytest.raises(ValueError, match="overlaps"):
        at_offsets(16, ((0, "I"), (2, "H")))
    with pytest.raises(ValueError, match="beyond the size"):
        at_offsets(4, ((2, "I"),))
