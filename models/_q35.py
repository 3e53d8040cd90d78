"""The PCI functions of the seed's q35 machine, as QEMU creates them.

``qemu-system-x86_64 -machine q35 -net nic -device virtio-iommu -device vfio-pci,...``
gives eight functions (hw/i386/pc_q35.c ``pc_q35_init``; slots auto-assigned in
creation order by ``do_pci_register_device``):

* 00:00.0 MCH, 8086:29c0, class 0600 (hw/pci-host/q35.c)
* 00:01.0 std VGA, 1234:1111 rev 2, class 0300 (hw/display/vga-pci.c)
* 00:02.0 e1000e from ``-net nic``, 8086:10d3, class 0200 (hw/net/e1000e.c)
* 00:03.0 virtio-iommu-pci, 1af4:1057 rev 1, class 00ff (hw/virtio/virtio-pci.c)
* 00:04.0 NVMe: the passed-through PM173X 144d:a824, or QEMU's 1b36:0010 rev 2
  (hw/nvme/ctrl.c); class 010802
* 00:1f.0 ICH9 LPC, 8086:2918 rev 2, class 0601, multifunction (hw/isa/lpc_ich9.c)
* 00:1f.2 ICH9 AHCI, 8086:2922 rev 2, class 010601 (hw/ide/ich.c)
* 00:1f.3 ICH9 SMBus, 8086:2930 rev 2, class 0c05 (hw/i2c/smbus_ich9.c)

BAR sizes, capability offsets and chains are the reference's (pci-nvme.md 1.3);
capabilities created by QEMU are added in QEMU's creation order so the chain comes
out reversed exactly as ``pci_add_capability`` links it.  Only the registers the
simulation needs are modelled; BARs of functions without a model get a
register-less handler (reads 0, writes ignored).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ._config import MachineConfig
from ._nvme_ident import PM173X, QEMU_NVME, NvmeIdentity
from ._pci import PciFunction, make_bdf
from ._pci_ids import (
    PCI_DEVICE_ID_INTEL_82574L,
    PCI_DEVICE_ID_INTEL_ICH9_AHCI,
    PCI_DEVICE_ID_INTEL_ICH9_LPC,
    PCI_DEVICE_ID_INTEL_ICH9_SMBUS,
    PCI_DEVICE_ID_INTEL_Q35_MCH,
    PCI_DEVICE_ID_QEMU_VGA,
    PCI_DEVICE_ID_VIRTIO_10_BASE,
    PCI_VENDOR_ID_INTEL,
    PCI_VENDOR_ID_QEMU,
    PCI_VENDOR_ID_REDHAT_QUMRANET,
)
from ._pci_caps import (
    PCI_CAP_ID_SATA,
    PCI_CAP_ID_VNDR,
    PCI_EXP_TYPE_RC_END,
    PCI_EXT_CAP_ID_DSN,
    PCI_EXT_CAP_ID_ERR,
)
from ._pci_config import ROM_SLOT, BarKind
from ._viommu_wire import VIRTIO_ID_IOMMU
from ._virtq_wire import VirtioPciCap

KIB = 1 << 10
MIB = 1 << 20

MCH_BDF = make_bdf(0, 0, 0)
VGA_BDF = make_bdf(0, 1, 0)
NIC_BDF = make_bdf(0, 2, 0)
VIOMMU_BDF = make_bdf(0, 3, 0)
NVME_BDF = make_bdf(0, 4, 0)
LPC_BDF = make_bdf(0, 0x1F, 0)
AHCI_BDF = make_bdf(0, 0x1F, 2)
SMBUS_BDF = make_bdf(0, 0x1F, 3)

#: QEMU's default MAC for the first ``-net nic`` (net/net.c qemu_macaddr_default_if_unset)
DEFAULT_MAC = bytes((0x52, 0x54, 0x00, 0x12, 0x34, 0x56))

# virtio-pci modern interface (virtio spec 4.1.4; include/standard-headers/linux/virtio_pci.h)
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5
VIRTIO_PCI_CAP_LEN = 16
VIRTIO_PCI_NOTIFY_CAP_LEN = 20
VIRTIO_PCI_CFG_CAP_LEN = 20
#: BAR4 of a modern virtio-pci function (virtio_pci_realize: modern_mem_bar_idx = 4)
VIRTIO_MODERN_BAR = 4
VIRTIO_REGION_SIZE = 0x1000
#: region order inside BAR4: common 0x0000, ISR 0x1000, device 0x2000, notify 0x3000
VIRTIO_REGIONS = (VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
                  VIRTIO_PCI_CAP_NOTIFY_CFG)
VIRTIO_NOTIFY_OFF_MULTIPLIER = 4


class RegisterlessDevice:
    """A BAR with nothing modelled behind it: reads 0, ignores writes."""

    def mmio_read(self, offset: int, size: int) -> int:
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None


def _registerless(fn: PciFunction, *bars: int) -> PciFunction:
    for index in bars:
        fn.set_bar_handler(index, RegisterlessDevice())
    return fn


# -- 00:00.0 ----------------------------------------------------------------------------------
def make_mch() -> PciFunction:
    """Q35 MCH: no BARs, no capabilities, no interrupt (hw/pci-host/q35.c mch_class_init)."""
    return PciFunction(MCH_BDF, "mch", vendor_id=PCI_VENDOR_ID_INTEL, device_id=PCI_DEVICE_ID_INTEL_Q35_MCH,
                       class_code=0x060000)


# -- 00:01.0 ----------------------------------------------------------------------------------
def make_vga() -> PciFunction:
    """std VGA: 16 MiB prefetchable framebuffer, 4 KiB MMIO (qemu-extended-regs => rev 2), 64 KiB ROM."""
    fn = PciFunction(VGA_BDF, "vga", vendor_id=PCI_VENDOR_ID_QEMU, device_id=PCI_DEVICE_ID_QEMU_VGA, revision=2,
                     class_code=0x030000)
    fn.add_bar(0, 16 * MIB, BarKind.MEM32, prefetchable=True)
    fn.add_bar(2, 4 * KIB, BarKind.MEM32)
    fn.add_bar(ROM_SLOT, 64 * KIB, BarKind.ROM)
    return _registerless(fn, 0, 2, ROM_SLOT)


# -- 00:02.0 ----------------------------------------------------------------------------------
def make_e1000e(mac: bytes = DEFAULT_MAC) -> PciFunction:
    """e1000e (82574L) as ``e1000e_pci_realize``: PCIe v1 RCiEP on the root bus, MSI-X in BAR3."""
    fn = PciFunction(NIC_BDF, "e1000e", vendor_id=PCI_VENDOR_ID_INTEL, device_id=PCI_DEVICE_ID_INTEL_82574L,
                     class_code=0x020000, subsystem=(PCI_VENDOR_ID_INTEL, 0x0000), interrupt_pin=1, express=True)
    # (e1000e_pci_realize sets the cache line size to 0x10, but the machine reset that follows,
    # pci_do_device_reset, clears it: the guest reads 0, as the reference's lspci shows)
    fn.add_bar(0, 128 * KIB, BarKind.MEM32)  # registers
    fn.add_bar(1, 128 * KIB, BarKind.MEM32)  # flash (dummy)
    fn.add_bar(2, 32, BarKind.IO)
    fn.add_bar(3, 16 * KIB, BarKind.MEM32)  # MSI-X
    fn.add_bar(ROM_SLOT, 256 * KIB, BarKind.ROM)  # efi-e1000e.rom, pow2ceil of the file
    # creation order MSI-X, PCIe, MSI, PM -> chain c8 -> d0 -> e0 -> a0
    fn.add_msix(0xA0, vectors=5, table_bar=3, table_offset=0x0000, pba_bar=3, pba_offset=0x2000)
    # pcie_endpoint_cap_v1_init: Endpoint becomes RC_END on a root bus; DEVCAP.RBER
    fn.add_express(0xE0, version=1, port_type=PCI_EXP_TYPE_RC_END, devcap=1 << 15)
    fn.add_msi(0xD0, vectors=1, is64=True, maskable=False)
    fn.add_pm(0xC8, pmc=0x0002 | 0x0020, pme_enable=True)  # PM 1.1 | DSI
    # AER v2: default uncorrectable severity DLP|SDES|FCP|RXOF|MALF, CE mask ADV_NF, ECRC
    # generation and check capable.  QEMU declares PCI_ERR_SIZEOF (0x48 B) and lets the DSN
    # at 0x140 overlap its last 8 bytes (TLP prefix log, unused by an endpoint): claim 0x40.
    aer = fn.add_ext_capability(PCI_EXT_CAP_ID_ERR, 2, 0x100, 0x40)
    cfg = fn.config
    cfg.set_w1cmask(aer + 0x04, 4, 0xFFFF_FFFF)  # uncorrectable status
    cfg.set_wmask(aer + 0x08, 4, 0xFFFF_FFFF)  # uncorrectable mask
    cfg.store(aer + 0x0C, 4, 0x0006_2030)
    cfg.set_wmask(aer + 0x0C, 4, 0xFFFF_FFFF)  # uncorrectable severity
    cfg.set_w1cmask(aer + 0x10, 4, 0xFFFF_FFFF)  # correctable status
    cfg.store(aer + 0x14, 4, 0x0000_2000)
    cfg.set_wmask(aer + 0x14, 4, 0xFFFF_FFFF)  # correctable mask
    cfg.store(aer + 0x18, 4, 0x0000_00A0)
    cfg.set_wmask(aer + 0x18, 4, 0x0000_0140)  # ECRC generation/check enable
    # Device Serial Number from the MAC: mac[0..2], ff, ff, mac[3..5] (e1000e_pci_realize)
    dsn = fn.add_ext_capability(PCI_EXT_CAP_ID_DSN, 1, 0x140, 0x0C)
    serial = int.from_bytes(mac[:3] + b"\xff\xff" + mac[3:], "big")
    cfg.store(dsn + 4, 8, serial)
    return _registerless(fn, 0, 1, 2, 3, ROM_SLOT)


# -- 00:03.0 ----------------------------------------------------------------------------------
class VirtioModernBar:
    """BAR4 of a modern virtio-pci function: four 4 KiB regions routed to a VirtioPciTransport.

    Layout of ``virtio_pci_modern_regions_init``: common cfg, ISR, device cfg,
    notify.  The notify region reads 0 (``virtio_pci_notify_read``); ISR writes
    are ignored.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def mmio_read(self, offset: int, size: int) -> int:
        region, off = divmod(offset, VIRTIO_REGION_SIZE)
        t = self.transport
        if region == 0:
            return int(t.common_read(off, size))
        if region == 1:
            return int(t.isr_read(off, size))
        if region == 2:
            return int(t.device_cfg_read(off, size))
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        region, off = divmod(offset, VIRTIO_REGION_SIZE)
        t = self.transport
        if region == 0:
            return t.common_write(off, size, value)  # type: ignore[no-any-return]
        if region == 2:
            t.device_cfg_write(off, size, value)
        elif region == 3:
            work: Coroutine[Any, Any, None] | None = t.notify_write(off, size, value)
            return work
        return None


class VirtioPciFunction(PciFunction):
    """A modern-only virtio-pci function on the root bus (QEMU ``virtio_pci_device_plugged``).

    No legacy I/O BAR (``virtio_pci_force_virtio_1``), no PCIe/PM capability
    (conventional on the root bus), and -- for virtio-iommu, which has no
    ``vectors`` property -- no MSI-X: the driver runs on INTx + ISR.  BAR4 is
    64-bit prefetchable, ``pow2ceil(0x3000 + 4 * 1024)`` = 16 KiB.  The
    vendor capabilities are added COMMON, ISR, DEVICE, NOTIFY, PCI_CFG at the
    first free offsets, giving the chain 84 -> 70 -> 60 -> 50 -> 40.  The
    PCI_CFG capability is a window into BAR4 (``virtio_write_config`` /
    ``virtio_read_config``: its ``bar`` field is ignored, as in QEMU).
    """

    def __init__(self, bdf: int, name: str, *, virtio_id: int, class_code: int) -> None:
        super().__init__(bdf, name, vendor_id=PCI_VENDOR_ID_REDHAT_QUMRANET,
                         device_id=PCI_DEVICE_ID_VIRTIO_10_BASE + virtio_id, revision=1,
                         class_code=class_code, interrupt_pin=1)
        self.add_bar(VIRTIO_MODERN_BAR, 4 * VIRTIO_REGION_SIZE, BarKind.MEM64, prefetchable=True)
        cfg = self.config
        for index, cfg_type in enumerate(VIRTIO_REGIONS):
            notify = cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG
            cap = self._add_vendor_cap(cfg_type, VIRTIO_PCI_NOTIFY_CAP_LEN if notify else VIRTIO_PCI_CAP_LEN,
                                       VIRTIO_MODERN_BAR, index * VIRTIO_REGION_SIZE, VIRTIO_REGION_SIZE)
            if notify:
                cfg.store(cap + VirtioPciCap.SIZE, 4, VIRTIO_NOTIFY_OFF_MULTIPLIER)
        self._cfg_cap = self._add_vendor_cap(VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_CFG_CAP_LEN, 0, 0, 0)
        # the PCI_CFG window's bar, offset, length and data are guest-writable
        cfg.set_wmask(self._cfg_cap + 4, 1, 0xFF)
        cfg.set_wmask(self._cfg_cap + 8, 4, 0xFFFF_FFFF)
        cfg.set_wmask(self._cfg_cap + 12, 4, 0xFFFF_FFFF)
        cfg.set_wmask(self._cfg_cap + 16, 4, 0xFFFF_FFFF)
        self.transport: Any = None

    def _add_vendor_cap(self, cfg_type: int, cap_len: int, bar: int, offset: int, length: int) -> int:
        cap = self.add_capability(PCI_CAP_ID_VNDR, cap_len)
        next_cap = self.config.read(cap + 1, 1)
        self.config.store_bytes(cap, VirtioPciCap(PCI_CAP_ID_VNDR, next_cap, cap_len, cfg_type, bar, 0, offset,
                                                  length).pack())
        return cap

    def plug(self, transport: Any) -> None:
        """Route BAR4 to ``transport`` (a VirtioPciTransport) and take its INTx line."""
        self.transport = transport
        self.set_bar_handler(VIRTIO_MODERN_BAR, VirtioModernBar(transport))
        transport.on_irq = self.set_intx

    def _window(self, offset: int, size: int) -> tuple[int, int] | None:
        """(BAR offset, length) of a PCI_CFG access that touches the data bytes, else None."""
        data = self._cfg_cap + 16
        if offset >= data + 4 or offset + size <= data:
            return None
        length = self.config.read(self._cfg_cap + 12, 4)
        if length not in (1, 2, 4):
            return None
        bar_off = self.config.read(self._cfg_cap + 8, 4) & ~(length - 1)
        if bar_off + length > 4 * VIRTIO_REGION_SIZE:
            return None
        return bar_off, length

    def _config_read_hook(self, offset: int, size: int) -> None:
        window = self._window(offset, size)
        if window is not None:
            bar_off, length = window
            self.config.store(self._cfg_cap + 16, length, self.bar_read(VIRTIO_MODERN_BAR, bar_off, length))

    def _config_write_hook(self, offset: int, size: int, value: int) -> Coroutine[Any, Any, None] | None:
        window = self._window(offset, size)
        if window is None:
            return None
        bar_off, length = window
        data = self.config.read(self._cfg_cap + 16, length)
        return self.bar_write(VIRTIO_MODERN_BAR, bar_off, length, data)


def make_virtio_iommu(bdf: int = VIOMMU_BDF) -> VirtioPciFunction:
    """virtio-iommu-pci: device 0x1040+23, class PCI_CLASS_OTHERS written as 0x00ff (base 00, sub ff)."""
    return VirtioPciFunction(bdf, "virtio-iommu-pci", virtio_id=VIRTIO_ID_IOMMU, class_code=0x00FF00)


# -- 00:04.0 ----------------------------------------------------------------------------------
def _nvme_function(bdf: int, identity: NvmeIdentity, *, passthrough: bool) -> PciFunction:
    """The NVMe function's identity and BAR0/MSI-X geometry, from the controller model's identity."""
    fn = PciFunction(bdf, "nvme", vendor_id=identity.pci_vendor, device_id=identity.pci_device,
                     revision=identity.pci_revision, class_code=identity.pci_class,
                     subsystem=(identity.pci_subsystem_vendor, identity.pci_subsystem), interrupt_pin=1,
                     express=True, passthrough=passthrough)
    fn.add_bar(0, identity.bar0_size, BarKind.MEM64)
    return fn


def _add_nvme_msix(fn: PciFunction, offset: int | None, identity: NvmeIdentity) -> None:
    fn.add_msix(offset, vectors=identity.msix_vectors, table_bar=0, table_offset=identity.msix_table_offset,
                pba_bar=0, pba_offset=identity.msix_pba_offset)


def make_nvme_vfio(bdf: int = NVME_BDF) -> PciFunction:
    """A Samsung PM173X (144d:a824) passed through with vfio-pci.

    Verified (host dmesg): IDs, rev 0, class 010802, BAR0 64-bit non-prefetchable
    32 KiB, 64 KiB ROM, pin A.  vfio rewrites the PCIe type to RC_END and hides
    SR-IOV/ARI; no extended capability is modelled.  Subsystem IDs and the MSI-X
    geometry are those of the controller model's identity (``models._nvme_ident.PM173X``,
    which lists its guesses).  GUESSED capability offsets (the reference's typical
    Samsung layout, to be measured with ``lspci -xxxx`` on the host): PM @0x40,
    MSI @0x50 (64-bit, 32 vectors, no masking), PCIe v2 @0x70, MSI-X @0xb0.
    """
    fn = _nvme_function(bdf, PM173X, passthrough=True)
    fn.add_bar(ROM_SLOT, 64 * KIB, BarKind.ROM)
    # a real device's list runs in ascending order: add in reverse (each new cap goes to the head)
    _add_nvme_msix(fn, 0xB0, PM173X)
    fn.add_express(0x70, version=2, port_type=PCI_EXP_TYPE_RC_END, devcap=1 << 15 | 1 << 28)
    fn.add_msi(0x50, vectors=32, is64=True, maskable=False)
    fn.add_pm(0x40, pmc=0x0003, pmcsr=0x0008)
    return _registerless(fn, ROM_SLOT)


def make_nvme_emulated(bdf: int = NVME_BDF) -> PciFunction:
    """QEMU's own NVMe controller (hw/nvme/ctrl.c ``nvme_init_pci``, defaults max_ioqpairs=64, msix_qsize=65).

    BAR0 64-bit 16 KiB = pow2ceil(registers 4 KiB + 65 doorbell pairs -> table at
    0x2000, 65 entries -> PBA at 0x3000); PM 1.2 @0x60 (NoSoftRst), PCIe v2 @0x80
    (RC_END, FLR), MSI-X auto-placed @0x40; chain 40 -> 80 -> 60.
    """
    fn = _nvme_function(bdf, QEMU_NVME, passthrough=False)
    fn.add_pm(0x60, pmc=0x0003, pmcsr=0x0008)
    fn.add_express(0x80, version=2, port_type=PCI_EXP_TYPE_RC_END, devcap=1 << 15 | 1 << 28,
                   devcap2=1 << 20 | 1 << 21)  # ExtFmt, EETLPPrefix
    _add_nvme_msix(fn, None, QEMU_NVME)
    return fn


# -- 00:1f.x ----------------------------------------------------------------------------------
def make_lpc() -> PciFunction:
    """ICH9 LPC bridge: function 0 of the multifunction slot 1f; no BARs (ICH9_A2_LPC_REVISION = 2)."""
    return PciFunction(LPC_BDF, "ich9-lpc", vendor_id=PCI_VENDOR_ID_INTEL, device_id=PCI_DEVICE_ID_INTEL_ICH9_LPC,
                       revision=2, class_code=0x060100, multifunction=True)


def make_ahci() -> PciFunction:
    """ICH9 AHCI: index/data I/O BAR4, ABAR BAR5, SATA cap @0xa8 then MSI @0x80 (chain 80 -> a8)."""
    fn = PciFunction(AHCI_BDF, "ich9-ahci", vendor_id=PCI_VENDOR_ID_INTEL, device_id=PCI_DEVICE_ID_INTEL_ICH9_AHCI,
                     revision=2, class_code=0x010601, multifunction=True, interrupt_pin=1)
    # (ich9-ahci's cache line size of 8 is cleared likewise by pci_do_device_reset)
    fn.config.store(0x90, 1, 0x40)  # MAP: AHCI mode
    fn.add_bar(4, 32, BarKind.IO)
    fn.add_bar(5, 4 * KIB, BarKind.MEM32)
    sata = fn.add_capability(PCI_CAP_ID_SATA, 8, 0xA8)
    fn.config.store(sata + 2, 2, 0x0010)  # revision 1.0
    fn.config.store(sata + 4, 4, 0x0000_0048)  # BARLOC 8 (BAR4), BAROFST 4 dwords
    fn.add_msi(0x80, vectors=1, is64=True, maskable=False)
    from ._ahci import AhciHba

    fn.set_bar_handler(5, AhciHba())
    return _registerless(fn, 4)


def make_smbus() -> PciFunction:
    """ICH9 SMBus: 64-byte I/O BAR4 (HOSTC at config 0x40)."""
    fn = PciFunction(SMBUS_BDF, "ich9-smbus", vendor_id=PCI_VENDOR_ID_INTEL, device_id=PCI_DEVICE_ID_INTEL_ICH9_SMBUS,
                     revision=2, class_code=0x0C0500, multifunction=True, interrupt_pin=1)
    fn.add_bar(4, 64, BarKind.IO)
    return _registerless(fn, 4)


def q35_functions(config: MachineConfig) -> list[PciFunction]:
    """The functions of the machine ``config`` describes, in BDF order.

    The ``-device`` items (virtio-iommu, then the NVMe) take the next free slots
    after VGA and the NIC, as QEMU assigns them: 00:03.0 and 00:04.0 on the seed's
    machine; without the virtio-iommu the NVMe lands at 00:03.0.
    """
    functions = [make_mch(), make_vga(), make_e1000e()]
    slot = NIC_BDF >> 3 & 0x1F
    if config.viommu == "on":
        slot += 1
        functions.append(make_virtio_iommu(make_bdf(0, slot, 0)))
    if config.nvme != "none":
        slot += 1
        make = make_nvme_vfio if config.nvme == "vfio" else make_nvme_emulated
        functions.append(make(make_bdf(0, slot, 0)))
    functions += [make_lpc(), make_ahci(), make_smbus()]
    return functions

