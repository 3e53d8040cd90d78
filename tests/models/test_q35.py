"""The q35 machine: its functions as the reference describes them, firmware layout and Linux's scan."""

import pytest

from models import MachineConfig
from models._machine import build_machine
from models._pci import make_bdf
from models._pci_config import PCI_COMMAND
from models._q35 import VIRTIO_MODERN_BAR, VirtioPciCap
from models.guest._firmware import firmware_setup
from models.guest._pci_scan import enumerate_bus, scan_root_bus
from sim import Simulator

SEED = MachineConfig()


def machine(**changes):
    return build_machine(SEED.evolve(**changes), Simulator())


def bdf(text):
    dev, fn = text.split(".")
    return make_bdf(0, int(dev, 16), int(fn))


def sized(m, slot, reg, value=0xFFFF_FFFF):
    bus = m.bus
    bus.config_write_sync(bdf(slot), reg, 4, value)
    return bus.config_read_sync(bdf(slot), reg, 4)


def test_default_machine_has_the_eight_functions_in_bdf_order():
    """MCH, VGA, e1000e, virtio-iommu, NVMe, LPC, AHCI, SMBus at the seed's addresses."""
    m = machine()
    assert [(f"{f.bdf >> 3:02x}.{f.bdf & 7}", f.name) for f in m.functions] == [
        ("00.0", "mch"), ("01.0", "vga"), ("02.0", "e1000e"), ("03.0", "virtio-iommu-pci"), ("04.0", "nvme"),
        ("1f.0", "ich9-lpc"), ("1f.2", "ich9-ahci"), ("1f.3", "ich9-smbus"),
    ]
    assert m.function(0x20) is m.nvme_pci and m.function(0x18) is m.viommu_pci
    with pytest.raises(LookupError, match="00:05.0"):
        m.function(0x28)


def test_machine_variants_add_and_remove_functions():
    """nvme=none drops 00:04.0; viommu=none lets QEMU give the NVMe the next free slot, 00:03.0."""
    assert machine(nvme="none").nvme_pci is None
    m = machine(viommu="none")
    assert m.viommu_pci is None and m.nvme_pci is not None and m.nvme_pci.bdf == bdf("03.0")


@pytest.mark.parametrize(
    ("slot", "reg", "readback"),
    [
        ("01.0", 0x10, 0xFF00_0008),  # VGA framebuffer: 16 MiB prefetchable
        ("01.0", 0x18, 0xFFFF_F000),  # VGA MMIO 4 KiB
        ("02.0", 0x10, 0xFFFE_0000),  # e1000e registers 128 KiB
        ("02.0", 0x14, 0xFFFE_0000),  # e1000e flash 128 KiB
        ("02.0", 0x18, 0xFFFF_FFE1),  # e1000e I/O 32 B
        ("02.0", 0x1C, 0xFFFF_C000),  # e1000e MSI-X 16 KiB
        ("03.0", 0x20, 0xFFFF_C00C),  # virtio BAR4: 64-bit prefetchable 16 KiB
        ("03.0", 0x24, 0xFFFF_FFFF),
        ("03.0", 0x10, 0x0000_0000),  # no legacy BAR0
        ("04.0", 0x10, 0xFFFF_8004),  # PM173X BAR0: 64-bit 32 KiB
        ("04.0", 0x14, 0xFFFF_FFFF),
        ("1f.2", 0x20, 0xFFFF_FFE1),  # AHCI index/data 32 B
        ("1f.2", 0x24, 0xFFFF_F000),  # AHCI ABAR 4 KiB
        ("1f.3", 0x20, 0xFFFF_FFC1),  # SMBus I/O 64 B
        ("00.0", 0x10, 0x0000_0000),  # MCH: no BARs
    ],
)
def test_bar_readback_masks_match_the_reference(slot, reg, readback):
    """Writing all-ones to each BAR reads back the reference's size mask with type bits."""
    assert sized(machine(), slot, reg) == readback


@pytest.mark.parametrize(("slot", "readback"), [("01.0", 0xFFFF_0000), ("02.0", 0xFFFC_0000), ("04.0", 0xFFFF_0000)])
def test_rom_readback_masks(slot, readback):
    """ROMs: VGA 64 KiB, e1000e 256 KiB, the passed-through PM173X 64 KiB."""
    assert sized(machine(), slot, 0x30, 0xFFFF_F800) == readback


def test_emulated_nvme_identity_and_bar():
    """QEMU's NVMe: 1b36:0010 rev 2, class 010802, BAR0 64-bit 16 KiB, subsystem 1af4:1100."""
    m = machine(nvme="emulated")
    assert m.bus.config_read_sync(0x20, 0, 4) == 0x0010_1B36
    assert m.bus.config_read_sync(0x20, 0x08, 4) == 0x0108_0202
    assert m.bus.config_read_sync(0x20, 0x2C, 4) == 0x1100_1AF4
    assert sized(m, "04.0", 0x10) == 0xFFFF_C004


def devices(**changes):
    m = machine(**changes)
    return m, {d.slot_name: d for d in enumerate_bus(m.bus, m.memory)}


def test_capability_chains_walk_to_the_reference_offsets():
    """Each function's capability list, as the guest walks it from CAP_PTR."""
    _, devs = devices()
    chains = {name: [(hex(i), hex(o)) for i, o in d.capabilities] for name, d in devs.items()}
    assert chains["00:02.0"] == [("0x1", "0xc8"), ("0x5", "0xd0"), ("0x10", "0xe0"), ("0x11", "0xa0")]
    assert chains["00:03.0"] == [("0x9", "0x84"), ("0x9", "0x70"), ("0x9", "0x60"), ("0x9", "0x50"), ("0x9", "0x40")]
    assert chains["00:04.0"] == [("0x1", "0x40"), ("0x5", "0x50"), ("0x10", "0x70"), ("0x11", "0xb0")]
    assert chains["00:1f.2"] == [("0x5", "0x80"), ("0x12", "0xa8")]
    assert chains["00:00.0"] == chains["00:01.0"] == chains["00:1f.0"] == chains["00:1f.3"] == []
    assert devs["00:02.0"].ext_capabilities == ((0x01, 0x100), (0x03, 0x140))
    _, emu = devices(nvme="emulated")
    assert emu["00:04.0"].capabilities == ((0x11, 0x40), (0x10, 0x80), (0x01, 0x60))


def test_virtio_pci_cap_layout():
    """struct virtio_pci_cap: 16 bytes, offset at byte 8 and length at byte 12, little-endian."""
    cap = VirtioPciCap(0x09, 0x50, 16, 1, 4, 0, 0x2000, 0x1000)
    assert VirtioPciCap.SIZE == 16
    assert cap.pack() == bytes.fromhex("0950100104000000" "00200000" "00100000")
    assert VirtioPciCap.unpack(cap.pack()) == cap


def test_virtio_vendor_capabilities_describe_bar4():
    """Each virtio capability read from config space names its region of BAR4; notify multiplier 4."""
    m = machine()
    caps = [VirtioPciCap.unpack(m.viommu_pci.config.read_bytes(c, 16)) for c in (0x84, 0x70, 0x60, 0x50, 0x40)]
    assert caps == [
        VirtioPciCap(9, 0x70, 20, 5, 0, 0, 0, 0),
        VirtioPciCap(9, 0x60, 20, 2, 4, 0, 0x3000, 0x1000),
        VirtioPciCap(9, 0x50, 16, 4, 4, 0, 0x2000, 0x1000),
        VirtioPciCap(9, 0x40, 16, 3, 4, 0, 0x1000, 0x1000),
        VirtioPciCap(9, 0x00, 16, 1, 4, 0, 0x0000, 0x1000),
    ]
    assert m.bus.config_read_sync(0x18, 0x70 + 16, 4) == 4


def test_e1000e_serial_number_comes_from_the_mac():
    """DSN = 52-54-00-ff-ff-12-34-56 for QEMU's default MAC."""
    m = machine()
    assert m.bus.config_read_sync(0x10, 0x144, 4) == 0xFF12_3456
    assert m.bus.config_read_sync(0x10, 0x148, 4) == 0x5254_00FF


def test_multifunction_and_pcie_type_as_linux_sees_them():
    """Only slot 1f is multifunction; e1000e and the NVMe are RC integrated endpoints; none has ACS."""
    _, devs = devices()
    assert {n for n, d in devs.items() if d.multifunction} == {"00:1f.0", "00:1f.2", "00:1f.3"}
    assert devs["00:1f.0"].header_type == 0x80 and devs["00:1f.3"].header_type == 0x80
    assert {n: d.pcie_type for n, d in devs.items() if d.pcie_type is not None} == {"00:02.0": 9, "00:04.0": 9}
    assert all(d.acs_cap is None for d in devs.values())


def test_intx_gsis_match_the_reference_guest():
    """e1000e 22, virtio-iommu 23, NVMe 20, AHCI and SMBus 16 (lspci/proc/interrupts of the reference)."""
    _, devs = devices()
    assert {n: d.gsi for n, d in devs.items() if d.gsi is not None} == {
        "00:02.0": 22, "00:03.0": 23, "00:04.0": 20, "00:1f.2": 16, "00:1f.3": 16}


def bars(devs):
    return {(n, b.index): (b.kind, b.address, b.size) for n, d in devs.items() for b in d.bars}


def test_firmware_layout_of_a_2g_guest_matches_the_reference_boot():
    """2 GiB, emulated NVMe: every address the reference boot's guest logged (SeaBIOS, no 64-bit window)."""
    _, devs = devices(memory="2G", nvme="emulated")
    assert bars(devs) == {
        ("00:01.0", 0): ("mem32", 0xFD00_0000, 16 << 20),
        ("00:01.0", 2): ("mem32", 0xFEBD_8000, 4 << 10),
        ("00:01.0", 6): ("rom", 0xFEBC_0000, 64 << 10),
        ("00:02.0", 0): ("mem32", 0xFEB8_0000, 128 << 10),
        ("00:02.0", 1): ("mem32", 0xFEBA_0000, 128 << 10),
        ("00:02.0", 2): ("io", 0xC040, 32),
        ("00:02.0", 3): ("mem32", 0xFEBD_0000, 16 << 10),
        ("00:02.0", 6): ("rom", 0xFEB4_0000, 256 << 10),
        ("00:03.0", 4): ("mem64", 0xFE00_0000, 16 << 10),
        ("00:04.0", 0): ("mem64", 0xFEBD_4000, 16 << 10),
        ("00:1f.2", 4): ("io", 0xC060, 32),
        ("00:1f.2", 5): ("mem32", 0xFEBD_9000, 4 << 10),
        ("00:1f.3", 4): ("io", 0x0700, 64),
    }


def test_firmware_puts_64bit_bars_high_on_the_seed_machine():
    """64 GiB + 46 phys bits: NVMe BAR0 at 0x3800_0000_0000, virtio BAR4 at 0x3800_4000_0000, so the
    queue-0 doorbell is the seed backtrace's address 61573724909568."""
    m, devs = devices()
    assert devs["00:04.0"].bar(0).address == 0x3800_0000_0000
    bar4 = devs["00:03.0"].bar(VIRTIO_MODERN_BAR).address
    assert bar4 == 0x3800_4000_0000
    assert bar4 + 0x3000 == 61573724909568
    assert m.bus.decode_mmio(bar4 + 0x3000, 2) == (m.viommu_pci, VIRTIO_MODERN_BAR, 0x3000)


def test_firmware_enables_decode_but_not_bus_mastering():
    """SeaBIOS sets I/O, memory and SERR; bus mastering is left to the drivers."""
    m, _ = devices()
    assert {f.command for f in m.functions} == {0x0103}


def test_firmware_reports_its_windows():
    """32-bit window above MMCONFIG up to the IOAPIC; the padded 64-bit window under 2^46."""
    m = machine()
    layout = firmware_setup(m.bus, m.memory)
    assert (layout.io_base, layout.mem32_start, layout.mem32_end) == (0xC000, 0xC000_0000, 0xFEC0_0000)
    assert (layout.mem64_start, layout.mem64_end) == (0x3800_0000_0000, 0x3800_8000_0000)
    small = machine(memory="2G")
    assert firmware_setup(small.bus, small.memory).mem64_start == 0


def test_linux_scan_keeps_firmware_addresses_and_restores_command():
    """Scanning twice gives the same records; sizing leaves COMMAND and every BAR as it found them."""
    m, devs = devices()
    before = [m.bus.config_read_sync(f.bdf, PCI_COMMAND, 2) for f in m.functions]
    again = {d.slot_name: d for d in scan_root_bus(m.bus)}
    assert again == devs
    assert [m.bus.config_read_sync(f.bdf, PCI_COMMAND, 2) for f in m.functions] == before


class RecordingTransport:
    """Stands in for the virtio layer's VirtioPciTransport (not part of this layer)."""

    def __init__(self):
        self.log = []
        self.on_irq = None

    def common_read(self, off, size):
        self.log.append(("common_read", off, size))
        return 0x1234

    def common_write(self, off, size, value):
        self.log.append(("common_write", off, size, value))

    def isr_read(self, off, size):
        return 1

    def device_cfg_read(self, off, size):
        return 0

    def device_cfg_write(self, off, size, value):
        self.log.append(("device_cfg_write", off, size, value))

    def notify_write(self, off, size, value):
        self.log.append(("notify", off, size, value))
        return None


def test_virtio_bar4_routes_regions_and_intx():
    """BAR4 offsets reach common/ISR/device/notify; the transport's INTx callback drives GSI 23."""
    m, devs = devices()
    t = RecordingTransport()
    m.viommu_pci.plug(t)
    base = devs["00:03.0"].bar(VIRTIO_MODERN_BAR).address
    assert m.bus.mmio_read_sync(base + 0x14, 2) == 0x1234
    assert m.bus.mmio_read_sync(base + 0x1000, 1) == 1
    m.bus.mmio_write_sync(base + 0x3000 + 4, 2, 1)
    t.on_irq(True)
    assert m.irq.line(23).value == 1
    t.on_irq(False)
    assert t.log == [("common_read", 0x14, 2), ("notify", 4, 2, 1)] and m.irq.line(23).value == 0


def test_virtio_pci_cfg_window_reaches_bar4():
    """The PCI_CFG capability: set offset/length, then writing/reading its data accesses BAR4."""
    m = machine()
    t = RecordingTransport()
    m.viommu_pci.plug(t)
    bus = m.bus
    bus.config_write_sync(0x18, 0x84 + 8, 4, 0x3000)  # offset: notify
    bus.config_write_sync(0x18, 0x84 + 12, 4, 2)  # length
    bus.config_write_sync(0x18, 0x84 + 16, 4, 0x0001)
    bus.config_write_sync(0x18, 0x84 + 8, 4, 0x0014)  # offset: common cfg, device_status
    assert bus.config_read_sync(0x18, 0x84 + 16, 2) == 0x1234
    assert t.log == [("notify", 0, 2, 1), ("common_read", 0x14, 2)]


def test_plug_virtio_backend_builds_the_transport():
    """plug_virtio_backend puts the virtio layer's transport for the real virtio-iommu behind BAR4."""
    pytest.importorskip("models._virtio_pci")
    viommu = pytest.importorskip("models._viommu")
    m, devs = devices()
    device = viommu.VirtioIommu(m.sim, m.config, endpoints=[f.bdf for f in m.functions if f is not m.viommu_pci])
    transport = m.plug_virtio_backend(device)
    assert m.viommu_pci.transport is transport and transport.on_irq == m.viommu_pci.set_intx
    base = devs["00:03.0"].bar(VIRTIO_MODERN_BAR).address
    assert m.bus.mmio_read_sync(base + 0x12, 2) == 2  # common cfg num_queues: requestq + eventq
    with pytest.raises(LookupError, match="viommu=none"):
        machine(viommu="none").plug_virtio_backend(device)


@pytest.mark.parametrize("nvme", ["vfio", "emulated"])
def test_nvme_function_publishes_the_controller_identity(nvme):
    """IDs, subsystem and MSI-X geometry in config space agree with the NVMe model's identity."""
    from models._nvme_ident import PM173X, QEMU_NVME

    ident = PM173X if nvme == "vfio" else QEMU_NVME
    m, devs = devices(nvme=nvme)
    d = devs["00:04.0"]
    assert (d.vendor_id, d.device_id, d.subsystem_vendor_id, d.subsystem_id, d.revision, d.class_code) == (
        ident.pci_vendor, ident.pci_device, ident.pci_subsystem_vendor, ident.pci_subsystem, ident.pci_revision,
        ident.pci_class)
    assert d.bar(0).size == ident.bar0_size
    msix = dict(d.capabilities)[0x11]
    read = lambda off: m.bus.config_read_sync(d.bdf, msix + off, 4)  # noqa: E731
    assert ((read(0) >> 16 & 0x7FF) + 1, read(4), read(8)) == (
        ident.msix_vectors, ident.msix_table_offset, ident.msix_pba_offset)
    assert m.nvme_pci.passthrough is (nvme == "vfio")
