"""The one base of every guest-visible wire structure: a frozen attrs value that packs to bytes.

A wire structure is a frozen attrs class with two class constants: ``FORMAT``, a
little-endian :mod:`struct` format (``"<..."``) that lays the structure out, and
``SIZE``, the byte size the specification gives it (the layout tests pin that the
two agree).  ``pack()`` writes the wire values in ``FORMAT`` order; ``unpack(data,
offset)`` reads them back and builds the value.  By default the wire values are the
attrs fields in declaration order; a structure whose fields do not map one to one
onto wire slots (a status and a phase bit sharing a half-word, a type nibble next
to a subtype nibble, a request head the device ignores) overrides ``_to_wire`` /
``_from_wire``.

``at_offsets`` builds a ``FORMAT`` from the (offset, code) table in which the NVMe
specification describes its 4 KiB Identify pages, so those pages use the same base.
``check_u32`` / ``check_u64`` are attrs validators that refuse, at construction, a
value wider than its wire slot (instead of letting ``pack`` truncate or fail later).

The structures themselves live with their protocol: models/_virtq_wire.py (virtio
split ring and virtio-pci), models/_viommu_wire.py (virtio-iommu), models/_nvme_wire.py
and models/_nvme_data.py (NVMe).
"""

from __future__ import annotations

import operator
import re
import struct
from collections.abc import Callable
from typing import Any, ClassVar, Self

import attrs

#: what one wire slot holds: an integer, or the raw bytes of an ``Ns`` field
WireValue = int | bytes

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1


def check_u32(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    """attrs validator: ``value`` fits an unsigned 32-bit wire field."""
    if not 0 <= value <= U32:
        raise ValueError(f"{attr.name} must be a u32, not {value:#x}")


def check_u64(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    """attrs validator: ``value`` fits an unsigned 64-bit wire field."""
    if not 0 <= value <= U64:
        raise ValueError(f"{attr.name} must be a u64, not {value:#x}")


_FIELD_NAMES: dict[type[WireStruct], tuple[str, ...]] = {}
_GETTERS: dict[type[WireStruct], Callable[[Any], tuple[Any, ...]]] = {}
_POSITIONAL: dict[type[WireStruct], bool] = {}


def _field_names(cls: type[WireStruct]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        fields = attrs.fields(cls)
        names = _FIELD_NAMES[cls] = tuple(a.name for a in fields)
        _POSITIONAL[cls] = not any(a.kw_only for a in fields) and all(a.init for a in fields)
    return names


def _getter(cls: type[WireStruct]) -> Callable[[Any], tuple[Any, ...]]:
    """``attrs.astuple(value, recurse=False)`` for ``cls``, as one C-level call (an attrgetter)."""
    get = _GETTERS.get(cls)
    if get is None:
        names = _field_names(cls)
        if len(names) == 1:
            one = operator.attrgetter(names[0])
            get = _GETTERS[cls] = lambda value: (one(value),)
        else:
            get = _GETTERS[cls] = operator.attrgetter(*names)
    return get


class WireStruct:
    """Base of a frozen attrs wire structure: ``pack()`` / ``unpack()`` through ``FORMAT``."""

    FORMAT: ClassVar[str]
    SIZE: ClassVar[int]
    # set by attrs on every subclass; declared so the attrs helpers accept ``self``
    __attrs_attrs__: ClassVar[Any]

    def _to_wire(self) -> tuple[WireValue, ...]:
        """The values of the ``FORMAT`` slots, in order (default: the attrs fields)."""
        values: tuple[WireValue, ...] = _getter(type(self))(self)
        return values

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        """The structure whose ``FORMAT`` slots hold ``values`` (default: the attrs fields)."""
        names = _field_names(cls)
        if _POSITIONAL[cls]:
            return cls(*values)
        return cls(**dict(zip(names, values)))

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, *self._to_wire())

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        return cls._from_wire(struct.unpack_from(cls.FORMAT, data, offset))


_CODE = re.compile(r"(\d*)([xcbB?hHiIlLqQnNefdspP])")


def at_offsets(size: int, fields: tuple[tuple[int, str], ...]) -> str:
    """A little-endian FORMAT putting each struct ``code`` at its byte ``offset``, zero padded to ``size``.

    ``fields`` must be in increasing offset order and must not overlap; each code is one
    :mod:`struct` item (``"H"``, ``"Q"``, ``"20s"``...).
    """
    parts = ["<"]
    pos = 0
    for offset, code in fields:
        if _CODE.fullmatch(code) is None:
            raise ValueError(f"{code!r} is not a single struct code")
        if offset < pos:
            raise ValueError(f"field at {offset} overlaps the previous one (ends at {pos})")
        if offset > pos:
            parts.append(f"{offset - pos}x")
        parts.append(code)
        pos = offset + struct.calcsize("<" + code)
    if pos > size:
        raise ValueError(f"fields end at {pos}, beyond the size {size}")
    if size > pos:
        parts.append(f"{size - pos}x")
    return "".join(parts)
