"""IOMMU groups of PCI functions on a root bus, as Linux 6.7 forms and numbers them.

Follows drivers/iommu/iommu.c ``pci_device_group`` (reached through
virtio-iommu's ``viommu_device_group``) and drivers/pci/pci.c ``pci_acs_enabled``:

1. DMA aliases of the device itself (``pci_for_each_dma_alias``): on a root bus
   only the device, which has no group yet.  No upstream-bridge walk on a root bus.
2. ``get_pci_alias_group``: a function that aliases us, or that we alias
   (``dma_alias_mask`` either way), lends us its group -- recursively through its
   own aliases and non-isolated siblings, each devfn visited once.
3. ``get_pci_function_alias_group``: a multifunction device without effective ACS
   (SV|RR|CR|UF) joins the group of any other non-isolated function in the same
   slot (scanned in device-list order, i.e. BDF order).
4. Otherwise a new group with ``ida_alloc`` -- the lowest free id from 0.

``pci_acs_enabled``: a quirk verdict wins; conventional PCI is never isolated;
PCIe bridges and RC event collectors are not; root/downstream ports and
*multifunction* endpoints / upstream ports / legacy endpoints / RCiEPs need the
ACS capability with the flags enabled (flags the capability lacks count as
enabled, egress control excepted); single-function endpoints and RCiEPs are.

Groups exist only for devices that went through ``iommu_probe_device`` -- with
VIOT, when their driver binds -- so numbers follow *probe order*, which the caller
passes by calling ``probe_device`` in that order.  On q35 with the seed's
drivers: ahci (00:1f.2) 0, nvme (00:04.0) 1, e1000e (00:02.0) 2, i801_smbus
(00:1f.3) joins 0, agpgart-intel (00:00.0, deferred) 3.

Only root-bus functions are modelled (no bridges, no upstream ACS path walk).
"""

from __future__ import annotations

from typing import Iterable

import attrs

#: PCI Express capability device/port types (include/uapi/linux/pci_regs.h PCI_EXP_TYPE_*)
PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_TYPE_LEG_END = 0x1
PCI_EXP_TYPE_ROOT_PORT = 0x4
PCI_EXP_TYPE_UPSTREAM = 0x5
PCI_EXP_TYPE_DOWNSTREAM = 0x6
PCI_EXP_TYPE_PCI_BRIDGE = 0x7
PCI_EXP_TYPE_PCIE_BRIDGE = 0x8
PCI_EXP_TYPE_RC_END = 0x9
PCI_EXP_TYPE_RC_EC = 0xA

#: ACS capability / control bits (pci_regs.h PCI_ACS_*)
PCI_ACS_SV = 0x01
PCI_ACS_TB = 0x02
PCI_ACS_RR = 0x04
PCI_ACS_CR = 0x08
PCI_ACS_UF = 0x10
PCI_ACS_EC = 0x20
PCI_ACS_DT = 0x40
#: what pci_device_group requires for isolation (iommu.c REQ_ACS_FLAGS)
REQ_ACS_FLAGS = PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF

_MAX_NR_DEVFNS = 256


@attrs.frozen
class PciFunctionInfo:
    """What grouping needs to know about one PCI function (from enumeration)."""

    bdf: int
    #: header type bit 7 of function 0 of the slot (pdev->multifunction)
    multifunction: bool = False
    #: PCIe capability device/port type; None for conventional PCI (no PCIe capability)
    pcie_type: int | None = None
    #: ACS extended capability register; None when the function has no ACS capability
    acs_cap: int | None = None
    #: ACS control register
    acs_ctrl: int = 0
    #: devfns on the same bus this function issues DMA as (pdev->dma_alias_mask, from quirks)
    dma_alias_devfns: tuple[int, ...] = ()
    #: pci_dev_specific_acs_enabled() verdict, None when no quirk matches
    acs_quirk: bool | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.bdf, int) or not 0 <= self.bdf <= 0xFFFF:
            raise ValueError(f"bdf must be a 16-bit integer, not {self.bdf!r}")
        if self.bdf >> 8:
            raise ValueError(f"function {self.bdf:#06x} is not on the root bus; only bus 0 is modelled")
        for devfn in self.dma_alias_devfns:
            if not 0 <= devfn < _MAX_NR_DEVFNS:
                raise ValueError(f"DMA alias devfn {devfn!r} of {self.bdf:#06x} is not 0..255")

    @property
    def devfn(self) -> int:
        return self.bdf & 0xFF

    @property
    def slot(self) -> int:
        return (self.bdf >> 3) & 0x1F


def pci_acs_flags_enabled(fn: PciFunctionInfo, acs_flags: int) -> bool:
    """``pci_acs_flags_enabled``: capability-less features count as enabled, except egress control."""
    if fn.acs_cap is None:
        return False
    acs_flags &= fn.acs_cap | PCI_ACS_EC
    return (fn.acs_ctrl & acs_flags) == acs_flags


def pci_acs_enabled(fn: PciFunctionInfo, acs_flags: int) -> bool:
    """``pci_acs_enabled``: is ``fn`` effectively isolated for ``acs_flags``?"""
    if fn.acs_quirk is not None:
        return fn.acs_quirk
    if fn.pcie_type is None:  # conventional PCI / PCI-X never supports ACS
        return False
    if fn.pcie_type in (PCI_EXP_TYPE_PCIE_BRIDGE, PCI_EXP_TYPE_PCI_BRIDGE, PCI_EXP_TYPE_RC_EC):
        return False
    if fn.pcie_type in (PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_ROOT_PORT):
        return pci_acs_flags_enabled(fn, acs_flags)
    if fn.pcie_type in (PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_LEG_END, PCI_EXP_TYPE_RC_END):
        if fn.multifunction:
            return pci_acs_flags_enabled(fn, acs_flags)
    return True


def adding_message(group_id: int) -> str:
    """The ``dev_info`` text of ``iommu_group_alloc_device`` / ``__iommu_group_add_device``."""
    return f"Adding to iommu group {group_id}"


@attrs.frozen
class GroupAssignment:
    """Outcome of ``iommu_probe_device`` for one function."""

    bdf: int
    group_id: int
    #: True when the group was created for this function (it needs a new default domain)
    created: bool
    #: False when the function already had a group (upstream returns early, prints nothing)
    added: bool = True

    @property
    def message(self) -> str | None:
        return adding_message(self.group_id) if self.added else None


class IommuGroups:
    """The iommu groups of the root bus's functions, with ``iommu_group_ida`` numbering."""

    def __init__(self, functions: Iterable[PciFunctionInfo]) -> None:
        funcs = sorted(functions, key=lambda f: f.bdf)  # the PCI device list is in scan (BDF) order
        for a, b in zip(funcs, funcs[1:]):
            if a.bdf == b.bdf:
                raise ValueError(f"function {a.bdf:#06x} listed twice")
        self._functions = funcs
        self._by_devfn: dict[int, PciFunctionInfo] = {f.devfn: f for f in funcs}
        self._group_of: dict[int, int] = {}  # bdf -> group id
        self._members: dict[int, list[int]] = {}  # group id -> bdfs in join order

    def _function(self, bdf: int) -> PciFunctionInfo:
        fn = self._by_devfn.get(bdf & 0xFF) if 0 <= bdf <= 0xFF else None
        if fn is None:
            raise ValueError(f"no PCI function {bdf:#06x} on the root bus")
        return fn

    @staticmethod
    def _are_dma_aliases(a: PciFunctionInfo, b: PciFunctionInfo) -> bool:
        """``pci_devs_are_dma_aliases`` (same bus here by construction)."""
        return b.devfn in a.dma_alias_devfns or a.devfn in b.dma_alias_devfns

    def _alias_group(self, fn: PciFunctionInfo, visited: bytearray) -> int | None:
        """``get_pci_alias_group``."""
        if visited[fn.devfn]:
            return None
        visited[fn.devfn] = 1
        group = self._group_of.get(fn.bdf)
        if group is not None:
            return group
        for tmp in self._functions:
            if tmp is fn or not self._are_dma_aliases(fn, tmp):
                continue
            group = self._alias_group(tmp, visited)
            if group is None:
                group = self._function_alias_group(tmp, visited)
            if group is not None:
                return group
        return None

    def _function_alias_group(self, fn: PciFunctionInfo, visited: bytearray) -> int | None:
        """``get_pci_function_alias_group``: same-slot siblings of a non-isolated multifunction device."""
        if not fn.multifunction or pci_acs_enabled(fn, REQ_ACS_FLAGS):
            return None
        for tmp in self._functions:
            if tmp is fn or tmp.slot != fn.slot or pci_acs_enabled(tmp, REQ_ACS_FLAGS):
                continue
            group = self._alias_group(tmp, visited)
            if group is not None:
                return group
        return None

    def _ida_alloc(self) -> int:
        group_id = 0
        while group_id in self._members:
            group_id += 1
        return group_id

    def probe_device(self, bdf: int) -> GroupAssignment:
        """``iommu_probe_device`` → ``pci_device_group``: the group ``bdf`` joins or creates."""
        fn = self._function(bdf)
        if fn.bdf in self._group_of:
            return GroupAssignment(fn.bdf, self._group_of[fn.bdf], created=False, added=False)
        visited = bytearray(_MAX_NR_DEVFNS)
        group = self._alias_group(fn, visited)
        if group is None:
            group = self._function_alias_group(fn, visited)
        created = group is None
        if group is None:
            group = self._ida_alloc()
            self._members[group] = []
        self._group_of[fn.bdf] = group
        self._members[group].append(fn.bdf)
        return GroupAssignment(fn.bdf, group, created)

    def release_device(self, bdf: int) -> int | None:
        """``iommu_release_device``: leave the group; returns the group id if that freed it (ida_free)."""
        fn = self._function(bdf)
        group = self._group_of.pop(fn.bdf, None)
        if group is None:
            raise ValueError(f"function {fn.bdf:#06x} is not in an iommu group")
        members = self._members[group]
        members.remove(fn.bdf)
        if members:
            return None
        del self._members[group]
        return group

    def group_of(self, bdf: int) -> int | None:
        return self._group_of.get(self._function(bdf).bdf)

    def members(self, group_id: int) -> tuple[int, ...]:
        """BDFs of the group, in the order they joined."""
        if group_id not in self._members:
            raise ValueError(f"no iommu group {group_id!r}")
        return tuple(self._members[group_id])

    def groups(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(group id, members) for every group, by id."""
        return tuple((g, tuple(self._members[g])) for g in sorted(self._members))
