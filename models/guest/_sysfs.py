"""The booted guest's sysfs: ``/sys/bus/pci/devices/*`` and ``/sys/kernel/iommu_groups/*``.

What the guest's userspace (pciutils' libpci, a shell) reads about the kernel's
state after boot, computed from config space and the guest kernel's objects:

* per PCI function (drivers/pci/pci-sysfs.c): ``resource`` (the kernel's
  resources: the BARs enumeration found, ``IORESOURCE_*`` flags as
  ``pci_parse_flags`` sets them), ``irq`` (``irq_show``), the ``driver`` link, the
  ``iommu_group`` link and ``modalias``;
* the x86 header fixup ``pci_fixup_video`` (arch/x86/pci/fixup.c): the boot VGA
  device whose I/O or memory decode is on gets its ROM resource replaced by the
  shadow copy at 0xC0000 (128 KiB, ``IORESOURCE_ROM_SHADOW``);
* per IOMMU group (drivers/iommu/iommu.c): ``devices``, ``type``
  (``iommu_group_show_type``: the default domain's type) and ``reserved_regions``
  (``iommu_group_show_resv_regions``: every member's ``ops->get_resv_regions``,
  i.e. the virtio-iommu PROBE's RESV_MEM regions or the software MSI window,
  merged by ``iommu_insert_resv_region`` and printed ``0x%016llx 0x%016llx %s``).

Not modelled: Linux's interrupt numbers for MSI.  ``irq_show`` prints the
first MSI vector's Linux IRQ for a function with MSI enabled (allocated upward
from the IOAPIC's last GSI in the order drivers enable MSI); the model keeps no
Linux IRQ numbers, so ``irq`` is the INTx GSI for every function whose driver
bound (the firmware's interrupt line for the others, as ``pci_read_irq`` left it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._pci_config import PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MEMORY
from ._iova import (
    IOMMU_RESV_DIRECT,
    IOMMU_RESV_DIRECT_RELAXABLE,
    IOMMU_RESV_MSI,
    IOMMU_RESV_RESERVED,
    IOMMU_RESV_SW_MSI,
    ResvRegion,
)
from ._printk import pci_name

if TYPE_CHECKING:
    from ._kernel import GuestKernel
    from ._pci_scan import BarInfo

# include/linux/ioport.h
IORESOURCE_IO = 0x0000_0100
IORESOURCE_MEM = 0x0000_0200
IORESOURCE_PREFETCH = 0x0000_2000
IORESOURCE_READONLY = 0x0000_4000
IORESOURCE_MEM_64 = 0x0010_0000
IORESOURCE_ROM_ENABLE = 1 << 0
IORESOURCE_ROM_SHADOW = 1 << 1
IORESOURCE_PCI_FIXED = 1 << 4
#: the legacy video BIOS shadow (arch/x86/pci/fixup.c pci_fixup_video)
VIDEO_ROM_SHADOW = (0x000C_0000, 0x20000)
PCI_CLASS_DISPLAY_VGA = 0x0300
PCI_ROM_SLOT = 6

#: iommu.c iommu_group_resv_type_string
RESV_TYPE_NAMES = {
    IOMMU_RESV_DIRECT: "direct",
    IOMMU_RESV_DIRECT_RELAXABLE: "direct-relaxable",
    IOMMU_RESV_RESERVED: "reserved",
    IOMMU_RESV_MSI: "msi",
    IOMMU_RESV_SW_MSI: "msi",
}


@attrs.frozen
class PciResource:
    """One ``struct resource`` of a PCI device: inclusive [start, end] and its ``IORESOURCE_*`` flags."""

    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@attrs.frozen
class SysfsPciDevice:
    """The sysfs directory of one PCI function after boot."""

    bdf: int
    #: "0000:00:1f.2"
    name: str
    #: BARs 0-5 and the ROM (index 6); None where the kernel has no resource
    resources: tuple[PciResource | None, ...]
    irq: int
    driver: str | None
    iommu_group: int | None
    modalias: str


def _bar_resource(bar: BarInfo) -> PciResource:
    """``__pci_read_base`` / ``pci_parse_flags``: the BAR's type bits kept, IORESOURCE_* added."""
    if bar.kind == "io":
        flags = IORESOURCE_IO | 0x1
    elif bar.kind == "rom":
        flags = IORESOURCE_MEM | IORESOURCE_READONLY
    else:
        flags = IORESOURCE_MEM | (IORESOURCE_MEM_64 | 0x4 if bar.kind == "mem64" else 0)
        if bar.prefetchable:
            flags |= IORESOURCE_PREFETCH | 0x8
    return PciResource(bar.address, bar.address + bar.size - 1, flags)


def pci_devices(kernel: GuestKernel) -> tuple[SysfsPciDevice, ...]:
    """``/sys/bus/pci/devices/*`` of the booted ``kernel``, in BDF order."""
    from ._lspci_modules import pci_modalias

    bus = kernel.machine.bus
    out: list[SysfsPciDevice] = []
    vga_seen = False
    for bdf in sorted(kernel.devices):
        dev = kernel.devices[bdf]
        info = dev.info
        resources: list[PciResource | None] = [None] * (PCI_ROM_SLOT + 1)
        for bar in info.bars:
            resources[bar.index] = _bar_resource(bar)
        if info.class_code >> 8 == PCI_CLASS_DISPLAY_VGA and not vga_seen:
            # pci_fixup_video: the first VGA device with decode on becomes vga_default_device
            if bus.config_read_sync(bdf, PCI_COMMAND, 2) & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY):
                vga_seen = True
                start, size = VIDEO_ROM_SHADOW
                resources[PCI_ROM_SLOT] = PciResource(
                    start, start + size - 1, IORESOURCE_MEM | IORESOURCE_ROM_SHADOW | IORESOURCE_PCI_FIXED)
        irq = info.irq_line
        if dev.driver is not None and info.gsi is not None:
            irq = info.gsi  # pcibios_alloc_irq at probe: the ACPI _PRT routing
        out.append(SysfsPciDevice(
            bdf=bdf, name=pci_name(bdf), resources=tuple(resources), irq=irq, driver=dev.driver,
            iommu_group=dev.iommu_group,
            modalias=pci_modalias(info.vendor_id, info.device_id, info.subsystem_vendor_id, info.subsystem_id,
                                  info.class_code)))
    return tuple(out)


# -- IOMMU groups -------------------------------------------------------------------------------
@attrs.frozen
class SysfsIommuGroup:
    """``/sys/kernel/iommu_groups/N``."""

    number: int
    #: member device names, as ``ls devices`` lists them
    devices: tuple[str, ...]
    #: ``type``: "DMA", "DMA-FQ" or "identity" (the default domain's type)
    type: str
    #: ``reserved_regions``, merged and sorted
    reserved_regions: tuple[ResvRegion, ...]


def insert_resv_region(new: ResvRegion, regions: list[ResvRegion]) -> list[ResvRegion]:
    """``iommu_insert_resv_region``: sort ``new`` in by start (then type), then merge overlapping or
    adjacent regions of ``new``'s type; regions of other types keep their places."""
    index = len(regions)
    for i, region in enumerate(regions):
        if new.start < region.start or (new.start == region.start and new.type <= region.type):
            index = i
            break
    pending = regions[:index] + [new] + regions[index:]
    stack: list[ResvRegion] = []
    for region in pending:
        if region.type != new.type:
            stack.append(region)
            continue
        top_index = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].type == region.type), None)
        if top_index is None:
            stack.append(region)
            continue
        top = stack[top_index]
        top_end = top.start + top.length - 1
        if region.start > top_end + 1:
            stack.append(region)
        else:
            end = max(top_end, region.start + region.length - 1)
            stack[top_index] = ResvRegion(top.start, end - top.start + 1, top.type)
    return stack


def format_reserved_regions(regions: tuple[ResvRegion, ...]) -> str:
    """The ``reserved_regions`` file: ``0x%016llx 0x%016llx %s`` per region (start, end, type)."""
    return "".join(f"0x{r.start:016x} 0x{r.start + r.length - 1:016x} {RESV_TYPE_NAMES[r.type]}\n"
                   for r in regions)


def iommu_groups(kernel: GuestKernel) -> tuple[SysfsIommuGroup, ...]:
    """``/sys/kernel/iommu_groups/*`` of the booted ``kernel``, by group number."""
    core = kernel.iommu
    if not core.registered:
        return ()
    out: list[SysfsIommuGroup] = []
    for number, members in core.groups.groups():
        regions: list[ResvRegion] = []
        for bdf in members:
            endpoint = core.endpoints.get(bdf)
            if endpoint is None:
                continue
            for region in core.ops.get_resv_regions(endpoint):
                regions = insert_resv_region(region, regions)
        domain = core.domain_of(kernel.devices[members[0]])
        out.append(SysfsIommuGroup(number, tuple(sorted(pci_name(bdf) for bdf in members)),
                                   domain.type if domain is not None else "blocked", tuple(regions)))
    return tuple(out)


def render_iommu_groups(groups: tuple[SysfsIommuGroup, ...]) -> str:
    """The groups as the reference captures' sysfs dump lists them: ``group N: devices=... type=T``
    (``ls devices | tr '\\n' ' '``, hence the space after the last device), then each
    ``reserved_regions`` line indented by ``    resv: ``."""
    lines: list[str] = []
    for g in groups:
        lines.append(f"group {g.number}: devices={''.join(name + ' ' for name in g.devices)} type={g.type}\n")
        lines.extend(f"    resv: {line}\n" for line in format_reserved_regions(g.reserved_regions).splitlines())
    return "".join(lines)
