"""``lspci`` as the guest's pciutils prints it, from config space, the pinned pci.ids and the booted guest's sysfs.

pciutils 3.9.0 (the reference guest's), lspci.c, lib/names.c and ls-tree.c;
the capability lines are in ``_lspci_caps.py``, the kernel's side (resources,
IRQ, driver, IOMMU group, modalias) in ``_sysfs.py``, the module index ``-k``
reads in ``_lspci_modules.py``.  Formats carried over, code written anew:

* slot ``BB:DD.F`` (the domain only when non-zero -- never here), devices sorted by address;
* names (``pci_lookup_name``): the class is the subclass name, else
  ``"<base class> [bbss]"``, else ``"Class bbss"``; a device is
  ``"<vendor> <device>"``, ``"<vendor> Device dddd"`` or ``"Device vvvv:dddd"``; a
  subsystem is named from the per-device subsystem entry (else the device's own
  name when the subsystem ids are the device's); ``-n`` prints numbers only,
  ``-nn`` both (``"name [num]"``, ``"Device [vvvv:dddd]"``);
* ``" (rev RR)"`` only when the revision is non-zero; with ``-v`` the
  programming interface when non-zero or named;
* ``-v``: Subsystem, a Flags line, the regions (``resource`` from sysfs, the
  type bits of each resource, ``[disabled]`` from COMMAND), the expansion ROM,
  capability headers; ``-vv``/``-vvv``: Control and Status decoded, Latency (only
  with bus mastering on), Interrupt pin and IRQ, IOMMU group, ``Region N:``,
  capability details; every device followed by a blank line;
* ``-k`` (and any ``-v``): "Kernel driver in use:" from the driver link and
  "Kernel modules:" from the kernel build's module index;
* ``-t``: the bus tree of ls-tree.c (``-[0000:00]-+-00.0``, ``\\-`` for the
  last function), with ``-v`` each function's vendor/device name.

The ID database is ``models/data/pci.ids`` (package data of ``models``), a
subset of the real file pinned to the names of the seed guest's era (see its header).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .._pci import format_bdf
from .._pci_config import PCI_REVISION_ID
from ._lspci_caps import ConfigBytes, flag, show_caps

if TYPE_CHECKING:
    from .._seams import CpuBus  # the guest's view of the host bridge
    from ._kernel import GuestKernel
    from ._lspci_modules import KernelBuild
    from ._sysfs import SysfsPciDevice

#: models/data/pci.ids, found from the ``models`` package directory (this file is in models/guest)
PCI_IDS_PATH = Path(__file__).resolve().parents[1] / "data" / "pci.ids"

#: the name modes of ``pci_lookup_name``: names, ``-n`` numbers, ``-nn`` both
NAMES, NUMERIC, MIXED = 0, 1, 2


class PciIdsError(ValueError):
    """A line of a pci.ids file that is not in its format."""


def _format_name(mode: int, name: str | None, num: str, unknown: str) -> str:
    """lib/names.c ``format_name``."""
    if mode == NUMERIC:
        return num
    if name is None:
        return f"{unknown} [{num}]" if mode == MIXED else f"{unknown} {num}"
    return f"{name} [{num}]" if mode == MIXED else name


def _format_pair(mode: int, vendor: str | None, device: str | None, num: str) -> str:
    """lib/names.c ``format_name_pair``; ``num`` is ``vvvv:dddd``."""
    if mode == NUMERIC:
        return num
    if mode == MIXED:
        if vendor is None:
            return f"Device [{num}]"
        return f"{vendor} {device} [{num}]" if device is not None else f"{vendor} Device [{num}]"
    if vendor is None:
        return f"Device {num}"
    return f"{vendor} {device}" if device is not None else f"{vendor} Device {num[5:]}"


class PciIds:
    """Vendor, device, subsystem, class, subclass and prog-if names parsed from a pci.ids file."""

    def __init__(self, text: str) -> None:
        self.vendors: dict[int, str] = {}
        self.devices: dict[tuple[int, int], str] = {}
        self.subsystems: dict[tuple[int, int, int, int], str] = {}
        self.classes: dict[int, str] = {}
        self.subclasses: dict[tuple[int, int], str] = {}
        self.prog_ifs: dict[tuple[int, int, int], str] = {}
        vendor: int | None = None
        device: int | None = None
        klass: int | None = None
        subclass: int | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("C "):
                    code, name = line[2:].split(None, 1)
                    klass, vendor, subclass = int(code, 16), None, None
                    self.classes[klass] = name
                elif line.startswith("\t\t"):
                    if klass is not None and subclass is not None:
                        code, name = line[2:].split(None, 1)
                        self.prog_ifs[(klass, subclass, int(code, 16))] = name
                    elif vendor is not None and device is not None:
                        sv, sd, name = line[2:].split(None, 2)
                        self.subsystems[(vendor, device, int(sv, 16), int(sd, 16))] = name
                    # else: an entry under something this parser does not keep; skipped
                elif line.startswith("\t"):
                    code, name = line[1:].split(None, 1)
                    if klass is not None:
                        subclass = int(code, 16)
                        self.subclasses[(klass, subclass)] = name
                    elif vendor is not None:
                        device = int(code, 16)
                        self.devices[(vendor, device)] = name
                    else:
                        raise PciIdsError("indented entry outside a vendor or class")
                else:
                    code, name = line.split(None, 1)
                    vendor, device, klass = int(code, 16), None, None
                    self.vendors[vendor] = name
            except ValueError as exc:
                raise PciIdsError(f"pci.ids line {lineno}: {raw!r}: {exc}") from None

    @classmethod
    def load(cls, path: Path = PCI_IDS_PATH) -> PciIds:
        return cls(path.read_text(encoding="utf-8"))

    def class_name(self, class_word: int, mode: int = NAMES) -> str:
        """The class part of an lspci line for the 16-bit class word ``base << 8 | sub``."""
        name = self.subclasses.get((class_word >> 8, class_word & 0xFF))
        if name is None:
            name = self.classes.get(class_word >> 8)
            if name is not None and mode != NUMERIC:
                mode = MIXED  # the base class name carries the full class number
        return _format_name(mode, name, f"{class_word:04x}", "Class")

    def device_name(self, vendor_id: int, device_id: int, mode: int = NAMES) -> str:
        """The vendor/device part of an lspci line."""
        return _format_pair(mode, self.vendors.get(vendor_id), self.devices.get((vendor_id, device_id)),
                            f"{vendor_id:04x}:{device_id:04x}")

    def subsystem_name(self, vendor_id: int, device_id: int, sub_vendor: int, sub_device: int,
                       mode: int = NAMES) -> str:
        """The Subsystem line's name (``id_lookup_subsys``: the per-device entry, else the device's name
        when the subsystem is the device itself)."""
        name = self.subsystems.get((vendor_id, device_id, sub_vendor, sub_device))
        if name is None and (vendor_id, device_id) == (sub_vendor, sub_device):
            name = self.devices.get((vendor_id, device_id))
        return _format_pair(mode, self.vendors.get(sub_vendor), name, f"{sub_vendor:04x}:{sub_device:04x}")

    def prog_if_name(self, class_word: int, prog_if: int) -> str | None:
        return self.prog_ifs.get((class_word >> 8, class_word & 0xFF, prog_if))


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


# -- the booted guest's lspci -----------------------------------------------------------------
@attrs.frozen
class LspciOptions:
    """lspci's display switches: ``-n`` count, ``-v`` count, ``-k``, ``-t``."""

    numeric: int = 0
    verbose: int = 0
    kernel: bool = False
    tree: bool = False

    @property
    def mode(self) -> int:
        return MIXED if self.numeric > 1 else NUMERIC if self.numeric else NAMES


def read_config(bus: CpuBus, bdf: int, size: int) -> ConfigBytes:
    """The function's config space through dword reads, as the sysfs ``config`` file returns it."""
    return ConfigBytes(b"".join(bus.config_read_sync(bdf, off, 4).to_bytes(4, "little") for off in range(0, size, 4)))


def _size(x: int) -> str:
    """lspci.c ``show_size``."""
    if not x:
        return ""
    suffix = ""
    for unit in ("K", "M", "G", "T"):
        if x % 1024:
            break
        x //= 1024
        suffix = unit
    return f" [size={x}{suffix}]"


_COMMAND_BITS = (("I/O", 0x1), ("Mem", 0x2), ("BusMaster", 0x4), ("SpecCycle", 0x8), ("MemWINV", 0x10),
                 ("VGASnoop", 0x20), ("ParErr", 0x40), ("Stepping", 0x80), ("SERR", 0x100), ("FastB2B", 0x200),
                 ("DisINTx", 0x400))
_DEVSEL = {0x000: "fast", 0x200: "medium", 0x400: "slow"}


class _Lister:
    """One lspci run over the booted guest."""

    def __init__(self, kernel: GuestKernel, options: LspciOptions, ids: PciIds, build: KernelBuild) -> None:
        from ._sysfs import pci_devices

        self.opts = options
        self.ids = ids
        self.build = build
        self.devices = pci_devices(kernel)
        self.configs = {d.bdf: read_config(kernel.machine.bus, d.bdf,
                                           0x1000 if kernel.devices[d.bdf].info.pcie_type is not None else 0x100)
                        for d in self.devices}

    def terse(self, dev: SysfsPciDevice, cfg: ConfigBytes) -> str:
        mode, ids = self.opts.mode, self.ids
        class_word = cfg.w(0x0A)
        out = [f"{format_bdf(dev.bdf)} {ids.class_name(class_word, mode)}: {ids.device_name(cfg.w(0), cfg.w(2), mode)}"]
        if cfg.b(8):
            out.append(f" (rev {cfg.b(8):02x})")
        if self.opts.verbose:
            prog_if = cfg.b(9)
            name = ids.prog_if_name(class_word, prog_if)
            if prog_if or name is not None:
                out.append(f" (prog-if {prog_if:02x}" + (f" [{name}]" if name is not None else "") + ")")
        out.append("\n")
        if self.opts.verbose or self.opts.kernel:
            sv, sd = cfg.w(0x2C), cfg.w(0x2E)
            if sv and sv != 0xFFFF:
                out.append(f"\tSubsystem: {ids.subsystem_name(cfg.w(0), cfg.w(2), sv, sd, mode)}\n")
        return "".join(out)

    def kernel_lines(self, dev: SysfsPciDevice) -> str:
        """ls-kernel.c ``show_kernel``."""
        out = f"\tKernel driver in use: {dev.driver}\n" if dev.driver is not None else ""
        modules = self.build.modules_for(dev.modalias)
        return out + ("\tKernel modules: " + ", ".join(modules) + "\n" if modules else "")

    def bases(self, dev: SysfsPciDevice, cfg: ConfigBytes) -> str:
        """lspci.c ``show_bases`` (six BARs) and ``show_rom``."""
        from ._sysfs import IORESOURCE_IO, IORESOURCE_MEM_64, IORESOURCE_PREFETCH

        cmd, out = cfg.w(0x04), []
        for i, res in enumerate(dev.resources[:6]):
            if res is None:
                continue
            out.append(f"\tRegion {i}: " if self.opts.verbose > 1 else "\t")
            if res.flags & IORESOURCE_IO:
                out.append(f"I/O ports at {res.start & ~3:04x}" + ("" if cmd & 0x1 else " [disabled]"))
            else:
                bits = "64-bit" if res.flags & IORESOURCE_MEM_64 else "32-bit"
                pref = "" if res.flags & IORESOURCE_PREFETCH else "non-"
                out.append(f"Memory at {res.start & ~0xF:08x} ({bits}, {pref}prefetchable)"
                           + ("" if cmd & 0x2 else " [disabled]"))
            out.append(_size(res.size) + "\n")
        rom, reg = dev.resources[6], cfg.l(0x30)
        if rom is not None or reg:
            start = rom.start if rom is not None else 0
            virtual = bool(start & 0xFFFF_F800 and not reg & 0xFFFF_F800)
            flg = start if virtual else reg
            text = "\tExpansion ROM at " + (f"{start & 0xFFFF_F800:08x}" if start & 0xFFFF_F800 else
                                            "<ignored>" if flg & 0xFFFF_F800 else "<unassigned>")
            text += " [virtual]" if virtual else ""
            if not flg & 0x1:
                text += " [disabled]"
            elif not virtual and not cmd & 0x2:
                text += " [disabled by cmd]"
            out.append(text + _size(rom.size if rom is not None else 0) + "\n")
        return "".join(out)

    def verbose(self, dev: SysfsPciDevice, cfg: ConfigBytes) -> str:
        """lspci.c ``show_verbose`` for a type-0 header."""
        v = self.opts.verbose
        out = [self.terse(dev, cfg)]
        bist, min_gnt, max_lat = cfg.b(0x0F), cfg.b(0x3E), cfg.b(0x3F)
        cmd, status = cfg.w(0x04), cfg.w(0x06)
        devsel = _DEVSEL.get(status & 0x600, "??")
        group = dev.iommu_group
        if v > 1:
            out.append("\tControl: " + " ".join(f"{name}{flag(cmd, bit)}" for name, bit in _COMMAND_BITS) + "\n")
            out.append(f"\tStatus: Cap{flag(status, 0x10)} 66MHz{flag(status, 0x20)} UDF{flag(status, 0x40)} "
                       f"FastB2B{flag(status, 0x80)} ParErr{flag(status, 0x100)} DEVSEL={devsel} "
                       f">TAbort{flag(status, 0x800)} <TAbort{flag(status, 0x1000)} <MAbort{flag(status, 0x2000)} "
                       f">SERR{flag(status, 0x4000)} <PERR{flag(status, 0x8000)} INTx{flag(status, 0x8)}\n")
            if cmd & 0x4:
                line = f"\tLatency: {cfg.b(0x0D)}"
                if min_gnt or max_lat:
                    parts = ([f"{min_gnt * 250}ns min"] if min_gnt else []) + (
                        [f"{max_lat * 250}ns max"] if max_lat else [])
                    line += " (" + ", ".join(parts) + ")"
                if cfg.b(0x0C):
                    line += f", Cache Line Size: {cfg.b(0x0C) * 4} bytes"
                out.append(line + "\n")
            pin = cfg.b(0x3D)
            if pin or dev.irq:
                out.append(f"\tInterrupt: pin {chr(ord('A') + pin - 1) if pin else '?'} routed to IRQ {dev.irq}\n")
            if group is not None:
                out.append(f"\tIOMMU group: {group}\n")
        else:
            flags = ["bus master, "] if cmd & 0x4 else []
            flags += [text for bit, text in ((0x20, "VGA palette snoop, "), (0x80, "stepping, "),
                                             (0x200, "fast Back2Back, ")) if cmd & bit]
            flags += [text for bit, text in ((0x20, "66MHz, "), (0x40, "user-definable features, ")) if status & bit]
            line = "\tFlags: " + "".join(flags) + f"{devsel} devsel"
            line += f", latency {cfg.b(0x0D)}" if cmd & 0x4 else ""
            line += f", IRQ {dev.irq}" if dev.irq else ""
            line += f", IOMMU group {group}" if group is not None else ""
            out.append(line + "\n")
        if bist & 0x80:
            out.append("\tBIST is running\n" if bist & 0x40 else f"\tBIST result: {bist & 0x0F:02x}\n")
        out.append(self.bases(dev, cfg))
        has_mem_bar = any(r is not None and not r.flags & 0x100 for r in dev.resources[:6])
        out.append(show_caps(cfg, v, has_mem_bar))
        return "".join(out)

    def listing(self) -> str:
        if self.opts.tree:
            return self.tree()
        out: list[str] = []
        for dev in self.devices:
            cfg = self.configs[dev.bdf]
            out.append(self.verbose(dev, cfg) if self.opts.verbose else self.terse(dev, cfg))
            if self.opts.kernel or self.opts.verbose:
                out.append(self.kernel_lines(dev))
            if self.opts.verbose:
                out.append("\n")
        return "".join(out)

    def tree(self) -> str:
        """ls-tree.c ``show_forest`` for the one host bridge and its root bus (no bridges on q35's bus 0)."""
        prefix = "-[0000:00]-"
        names = []
        for dev in self.devices:
            cfg = self.configs[dev.bdf]
            name = f"{dev.bdf >> 3 & 0x1F:02x}.{dev.bdf & 7:x}"
            if self.opts.verbose:
                name += "  " + self.ids.device_name(cfg.w(0), cfg.w(2), self.opts.mode)
            names.append(name)
        if not names:
            return prefix + "\n"
        if len(names) == 1:
            return prefix + "--" + names[0] + "\n"
        lines = [prefix + "+-" + names[0]]
        lines += [" " * len(prefix) + "+-" + name for name in names[1:-1]]
        lines.append(" " * len(prefix) + "\\-" + names[-1])
        return "".join(line + "\n" for line in lines)


def lspci_listing(kernel: GuestKernel, options: LspciOptions = LspciOptions(), ids: PciIds | None = None,
                  build: KernelBuild | None = None) -> str:
    """What ``lspci`` with ``options`` prints on the booted ``kernel`` (its build: ``kernel_build`` of its version)."""
    from ._lspci_modules import kernel_build

    names = ids if ids is not None else PciIds.load()
    if build is None:
        build = kernel_build(kernel.config.guest_kernel)
    return _Lister(kernel, options, names, build).listing()
