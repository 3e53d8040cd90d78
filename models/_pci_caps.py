"""Capability lists of a PCI function: the standard chain from 0x34, the extended chain from 0x100.

PCI Local Bus Specification 3.0, 6.7 (capabilities list) and PCI Express Base
7.6/7.9 (extended capabilities), as QEMU hw/pci/pci.c ``pci_add_capability``
and hw/pci/pcie.c ``pcie_add_capability`` build them:

* a standard capability goes at a given offset or the first free run at or after
  0x40, is linked at the *head* of the list (so the chain is the reverse of
  creation order) and sets STATUS.CAP_LIST;
* extended capabilities are appended from 0x100, each header's next pointer
  patched into the previous one;
* the bytes a capability claims become read-only (its builder then opens the
  writable fields), and no two capabilities may overlap (QEMU ``PCIDevice.used``).

The builders for the simple capabilities live here too: Power Management
(PCI PM 1.2, 3.2), PCI Express (``pcie_cap_init``, ``pcie_cap_deverr_init``)
and ACS (``pcie_acs_init``).  MSI and MSI-X are in ``_pci_msi.py``.
"""

from __future__ import annotations

from ._pci_config import (
    PCI_CAPABILITY_LIST,
    PCI_CONFIG_HEADER_SIZE,
    PCI_CONFIG_SPACE_SIZE,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCIE_CONFIG_SPACE_SIZE,
    ConfigSpace,
    PciAccessError,
)

# -- capability IDs and PCIe capability registers (include/uapi/linux/pci_regs.h) -----------
PCI_CAP_ID_PM = 0x01
PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_VNDR = 0x09
PCI_CAP_ID_EXP = 0x10
PCI_CAP_ID_MSIX = 0x11
PCI_CAP_ID_SATA = 0x12
PCI_EXT_CAP_ID_ERR = 0x01
PCI_EXT_CAP_ID_DSN = 0x03
PCI_EXT_CAP_ID_ACS = 0x0D

PCI_EXP_FLAGS = 0x02
PCI_EXP_DEVCAP = 0x04
PCI_EXP_DEVCTL = 0x08
PCI_EXP_DEVSTA = 0x0A
PCI_EXP_DEVCAP2 = 0x24
PCI_EXP_SIZEOF_V1 = 0x14
PCI_EXP_SIZEOF_V2 = 0x3C
PCI_EXP_TYPE_RC_END = 0x9


class CapabilityChain:
    """The two capability lists of one function and the config bytes they claim.

    ``owner`` is the function; it only names the device in error messages.
    """

    def __init__(self, config: ConfigSpace, owner: object) -> None:
        self.config = config
        self._owner = owner
        # bytes claimed by the header and capabilities (QEMU PCIDevice.used)
        self._used = bytearray(config.size)
        self._used[:PCI_CONFIG_HEADER_SIZE] = b"\xff" * PCI_CONFIG_HEADER_SIZE
        self._last_ext_cap = 0

    def add(self, cap_id: int, size: int, offset: int | None = None) -> int:
        """``pci_add_capability``: place (first free run >= 0x40 if ``offset`` is None), link at the head."""
        used = self._used
        if offset is None:
            start = PCI_CONFIG_HEADER_SIZE
            for i in range(PCI_CONFIG_HEADER_SIZE, PCI_CONFIG_SPACE_SIZE):
                if used[i]:
                    start = i + 1
                elif i - start + 1 == size:
                    offset = start
                    break
            else:
                raise PciAccessError(f"{self._owner!r}: no room for a {size}-byte capability")
        if offset < PCI_CONFIG_HEADER_SIZE or offset + size > PCI_CONFIG_SPACE_SIZE or offset & 3:
            raise PciAccessError(f"capability offset 0x{offset:x} must be dword-aligned in 0x40..0xff")
        if any(used[offset : offset + size]):
            raise PciAccessError(f"{self._owner!r}: capability 0x{cap_id:02x} at 0x{offset:x} overlaps another")
        cfg = self.config
        cfg.store(offset, 1, cap_id)
        cfg.store(offset + 1, 1, cfg.read(PCI_CAPABILITY_LIST, 1))
        cfg.store(PCI_CAPABILITY_LIST, 1, offset)
        cfg.store(PCI_STATUS, 2, cfg.read(PCI_STATUS, 2) | PCI_STATUS_CAP_LIST)
        aligned = (size + 3) & ~3
        used[offset : offset + aligned] = b"\xff" * aligned
        cfg.clear_masks(offset, size)
        return offset

    def add_ext(self, cap_id: int, version: int, offset: int, size: int) -> int:
        """``pcie_add_capability``: an extended capability at ``offset`` appended to the chain from 0x100."""
        cfg = self.config
        if cfg.size != PCIE_CONFIG_SPACE_SIZE:
            raise PciAccessError(f"{self._owner!r} is conventional PCI: no extended capabilities")
        if offset < PCI_CONFIG_SPACE_SIZE or offset & 3 or offset + size > cfg.size:
            raise PciAccessError(f"extended capability offset 0x{offset:x} must be dword-aligned in 0x100..0xfff")
        if self._last_ext_cap == 0 and offset != PCI_CONFIG_SPACE_SIZE:
            raise PciAccessError("the first extended capability must sit at 0x100")
        if any(self._used[offset : offset + size]):
            raise PciAccessError(f"{self._owner!r}: extended capability at 0x{offset:x} overlaps another")
        cfg.store(offset, 4, cap_id | version << 16)
        if self._last_ext_cap:
            prev = self._last_ext_cap
            cfg.store(prev, 4, cfg.read(prev, 4) & 0x000F_FFFF | offset << 20)
        self._last_ext_cap = offset
        self._used[offset : offset + size] = b"\xff" * size
        cfg.clear_masks(offset, size)
        return offset

    def add_pm(self, offset: int | None, pmc: int, pmcsr: int = 0, *, pme_enable: bool = False) -> int:
        """Power Management capability (8 bytes): PMC read-only, PMCSR power state writable."""
        off = self.add(PCI_CAP_ID_PM, 8, offset)
        cfg = self.config
        cfg.store(off + 2, 2, pmc)
        cfg.store(off + 4, 2, pmcsr)
        cfg.set_wmask(off + 4, 2, 0x0003 | (0x0100 if pme_enable else 0))
        if pme_enable:
            cfg.set_w1cmask(off + 4, 2, 0x8000)
        return off

    def add_express(self, offset: int, *, version: int, port_type: int, devcap: int = 0, devcap2: int = 0) -> int:
        """PCI Express capability (v1: 0x14 B, v2: 0x3C B); DEVCTL error-reporting enables writable."""
        if version not in (1, 2):
            raise PciAccessError(f"PCIe capability version is 1 or 2, not {version}")
        if self.config.size != PCIE_CONFIG_SPACE_SIZE:
            raise PciAccessError(f"{self._owner!r} has a 256-byte config space: create it with express=True")
        off = self.add(PCI_CAP_ID_EXP, PCI_EXP_SIZEOF_V1 if version == 1 else PCI_EXP_SIZEOF_V2, offset)
        cfg = self.config
        cfg.store(off + PCI_EXP_FLAGS, 2, version | port_type << 4)
        cfg.store(off + PCI_EXP_DEVCAP, 4, devcap)
        cfg.set_wmask(off + PCI_EXP_DEVCTL, 2, 0x000F)  # pcie_cap_deverr_init: CERE|NFERE|FERE|URRE
        cfg.set_w1cmask(off + PCI_EXP_DEVSTA, 2, 0x000F)
        if version == 2:
            cfg.store(off + PCI_EXP_DEVCAP2, 4, devcap2)
        return off

    def add_acs(self, offset: int, capability: int) -> int:
        """ACS extended capability (8 B): control bits writable where the capability has them."""
        off = self.add_ext(PCI_EXT_CAP_ID_ACS, 1, offset, 8)
        self.config.store(off + 4, 2, capability)
        self.config.set_wmask(off + 6, 2, capability & 0x7F)
        return off
