"""``lspci`` in its default format, read through config space and named from a pinned pci.ids.

pciutils rules (lspci.c ``show_terse``/``show_slot_name``, lib/names.c ``pci_lookup_name``):

* slot ``BB:DD.F`` (the domain only when non-zero -- never here), devices sorted by address;
* class from the 16-bit class word (config 0x0b:0x0a): the subclass name if
  pci.ids has one; else ``"<base class name> [bbss]"``; else ``"Class bbss"``;
  the programming interface appears only with ``-v``;
* vendor/device: ``"<vendor> <device>"``; ``"Device vvvv:dddd"`` for an unknown
  vendor; ``"<vendor> Device dddd"`` for a known vendor's unknown device;
* ``" (rev RR)"`` only when the revision byte is non-zero.

This is the guest's userspace tool: it reads the bus the way the guest's lspci
does (config space, after firmware and kernel enumerated it).  The ID database
is ``models/data/pci.ids`` (package data of ``models``), a subset of the real
file pinned to the names of the seed guest's era (see its header).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .._pci import format_bdf
from .._pci_config import PCI_REVISION_ID

if TYPE_CHECKING:
    from .._seams import CpuBus  # the guest's view of the host bridge

#: models/data/pci.ids, found from the ``models`` package directory (this file is in models/guest)
PCI_IDS_PATH = Path(__file__).resolve().parents[1] / "data" / "pci.ids"


class PciIdsError(ValueError):
    """A line of a pci.ids file that is not in its format."""


class PciIds:
    """Vendor, device, class and subclass names parsed from a pci.ids file."""

    def __init__(self, text: str) -> None:
        self.vendors: dict[int, str] = {}
        self.devices: dict[tuple[int, int], str] = {}
        self.classes: dict[int, str] = {}
        self.subclasses: dict[tuple[int, int], str] = {}
        vendor: int | None = None
        klass: int | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("C "):
                    code, name = line[2:].split(None, 1)
                    klass, vendor = int(code, 16), None
                    self.classes[klass] = name
                elif line.startswith("\t\t"):
                    continue  # subsystem / programming interface entries: not used by the default format
                elif line.startswith("\t"):
                    code, name = line[1:].split(None, 1)
                    if klass is not None:
                        self.subclasses[(klass, int(code, 16))] = name
                    elif vendor is not None:
                        self.devices[(vendor, int(code, 16))] = name
                    else:
                        raise PciIdsError("indented entry outside a vendor or class")
                else:
                    code, name = line.split(None, 1)
                    vendor, klass = int(code, 16), None
                    self.vendors[vendor] = name
            except ValueError as exc:
                raise PciIdsError(f"pci.ids line {lineno}: {raw!r}: {exc}") from None

    @classmethod
    def load(cls, path: Path = PCI_IDS_PATH) -> PciIds:
        return cls(path.read_text(encoding="utf-8"))

    def class_name(self, class_word: int) -> str:
        """The class part of an lspci line for the 16-bit class word ``base << 8 | sub``."""
        base, sub = class_word >> 8, class_word & 0xFF
        name = self.subclasses.get((base, sub))
        if name is not None:
            return name
        base_name = self.classes.get(base)
        if base_name is not None:
            return f"{base_name} [{class_word:04x}]"
        return f"Class {class_word:04x}"

    def device_name(self, vendor_id: int, device_id: int) -> str:
        """The vendor/device part of an lspci line (``format_name_pair``)."""
        vendor = self.vendors.get(vendor_id)
        if vendor is None:
            return f"Device {vendor_id:04x}:{device_id:04x}"
        device = self.devices.get((vendor_id, device_id))
        if device is None:
            return f"{vendor} Device {device_id:04x}"
        return f"{vendor} {device}"


def lspci_line(bus: CpuBus, bdf: int, ids: PciIds) -> str:
    """One line of ``lspci`` for the function at ``bdf``, from its config space."""
    ids_word = bus.config_read_sync(bdf, 0, 4)
    class_rev = bus.config_read_sync(bdf, PCI_REVISION_ID, 4)
    line = f"{format_bdf(bdf)} {ids.class_name(class_rev >> 16)}: {ids.device_name(ids_word & 0xFFFF, ids_word >> 16)}"
    revision = class_rev & 0xFF
    return f"{line} (rev {revision:02x})" if revision else line


def lspci(bus: CpuBus, bdfs: Iterable[int], ids: PciIds | None = None) -> str:
    """``lspci`` output for the functions ``bdfs`` (those the guest enumerated), sorted by address."""
    names = ids if ids is not None else PciIds.load()
    return "".join(lspci_line(bus, bdf, names) + "\n" for bdf in sorted(bdfs))
