"""PCI config space, BAR decode, MSI/MSI-X, INTx and the bus timing, on hand-built functions."""

import pytest

from models import CostModel
from models._interrupts import InterruptController, ich9_pirq, msi_address, q35_intx_gsi
from models._pci import PciBus, PciFunction, make_bdf
from models._pci_config import PCI_COMMAND, PCI_STATUS, ROM_SLOT, BarKind, ConfigSpace, PciAccessError
from models._pci_msi import MsixEntry
from sim import ListSink, Simulator, ns, us
from staging import run_task

COST = CostModel()


class Regs:
    """A BAR handler with a register file, recording writes."""

    def __init__(self, work=None):
        self.values = {}
        self.writes = []
        self.work = work

    def mmio_read(self, offset, size):
        return self.values.get(offset, 0)

    def mmio_write(self, offset, size, value):
        self.writes.append((offset, size, value))
        self.values[offset] = value
        return self.work() if self.work else None


def make_bus():
    sink = ListSink()
    sim = Simulator(sinks=[sink])
    irq = InterruptController(sim, COST)
    return sim, sink, irq, PciBus(sim, COST, irq)


def make_fn(bdf=make_bdf(0, 5, 0), **kw):
    kw.setdefault("vendor_id", 0x1234)
    kw.setdefault("device_id", 0x5678)
    kw.setdefault("class_code", 0x020000)
    return PciFunction(bdf, "dut", **kw)


# -- config space --------------------------------------------------------------------------------
def test_config_read_only_fields_stay_read_only():
    """Writes to vendor, device, class and header type change nothing."""
    fn = make_fn()
    for off, size in ((0x00, 4), (0x08, 4), (0x0E, 1), (0x2C, 4), (0x3D, 1)):
        before = fn.config.read(off, size)
        fn.config_write(off, size, (1 << 8 * size) - 1)
        assert fn.config.read(off, size) == before


def test_command_register_keeps_only_writable_bits():
    """COMMAND takes I/O, memory, bus master, SERR and INTx disable only (pci_init_wmask)."""
    fn = make_fn()
    fn.config_write(PCI_COMMAND, 2, 0xFFFF)
    assert fn.command == 0x0507


def test_status_error_bits_are_write_one_to_clear():
    """Writing 1 to a STATUS error bit clears it; writing 0 leaves it; CAP_LIST is read-only."""
    cfg = ConfigSpace(256)
    cfg.store(PCI_STATUS, 2, 0xF910)
    cfg.write(PCI_STATUS, 2, 0x0000)
    assert cfg.read(PCI_STATUS, 2) == 0xF910
    cfg.write(PCI_STATUS, 2, 0x2010)
    assert cfg.read(PCI_STATUS, 2) == 0xD910


def test_config_access_rejects_bad_size_and_range():
    """Odd sizes, unaligned offsets and values too wide are refused with a PciAccessError."""
    _, _, _, bus = make_bus()
    with pytest.raises(PciAccessError, match="naturally aligned"):
        bus.config_read_sync(0, 0x3, 2)
    with pytest.raises(PciAccessError, match="1/2/4"):
        bus.config_read_sync(0, 0x0, 3)
    with pytest.raises(PciAccessError, match="does not fit"):
        make_fn().config.write(0x40, 1, 0x100)


def test_absent_function_and_conventional_ext_space_read_all_ones():
    """No function -> 0xffffffff (master abort, traced); a 256-byte function's 0x100+ -> all-ones."""
    _, sink, _, bus = make_bus()
    bus.add_function(make_fn())
    assert bus.config_read_sync(make_bdf(0, 6, 0), 0, 4) == 0xFFFF_FFFF
    assert bus.config_read_sync(make_bdf(0, 5, 0), 0x100, 4) == 0xFFFF_FFFF
    assert sink.events("pci") == [("pci", "master_abort")]


# -- capabilities ----------------------------------------------------------------------------------
def test_capabilities_link_at_the_head_in_creation_order_reversed():
    """pci_add_capability: auto placement from 0x40, each new capability becomes CAP_PTR."""
    fn = make_fn()
    a = fn.add_capability(0x09, 16)
    b = fn.add_capability(0x09, 20)
    c = fn.add_capability(0x05, 0x0E)
    assert (a, b, c) == (0x40, 0x50, 0x64)
    assert fn.config.read(0x34, 1) == 0x64
    assert [fn.config.read(off + 1, 1) for off in (c, b, a)] == [0x50, 0x40, 0x00]
    assert fn.config.read(PCI_STATUS, 2) & 0x10


def test_capability_overlap_is_refused():
    """An explicit offset that overlaps an existing capability raises."""
    fn = make_fn()
    fn.add_capability(0x01, 8, 0x40)
    with pytest.raises(PciAccessError, match="overlaps"):
        fn.add_capability(0x05, 0x0E, 0x44)


def test_capability_bytes_are_read_only():
    """A capability's ID and next pointer cannot be rewritten by the guest."""
    fn = make_fn()
    fn.add_capability(0x09, 16, 0x40)
    fn.config_write(0x40, 2, 0xFFFF)
    assert fn.config.read(0x40, 2) == 0x0009


def test_extended_capabilities_chain_from_0x100():
    """pcie_add_capability appends: 0x100 points at the next one, the last points at 0."""
    fn = make_fn(express=True)
    fn.add_ext_capability(0x01, 2, 0x100, 0x40)
    fn.add_ext_capability(0x03, 1, 0x140, 0x0C)
    assert fn.config.read(0x100, 4) == 0x1402_0001
    assert fn.config.read(0x140, 4) == 0x0001_0003
    with pytest.raises(PciAccessError, match="conventional"):
        make_fn().add_ext_capability(0x01, 1, 0x100, 8)


def test_acs_control_writable_only_where_capable():
    """ACS control accepts exactly the bits the ACS capability register advertises."""
    fn = make_fn(express=True)
    off = fn.add_acs(0x100, capability=0x001D)  # SV RR CR UF
    fn.config_write(off + 6, 2, 0xFFFF)
    assert fn.config.read(off + 4, 4) == 0x001D_001D


# -- BARs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "size", "pref", "low", "high"),
    [
        (BarKind.MEM32, 4096, False, 0xFFFF_F000, None),
        (BarKind.MEM32, 16 << 20, True, 0xFF00_0008, None),
        (BarKind.MEM64, 32 << 10, False, 0xFFFF_8004, 0xFFFF_FFFF),
        (BarKind.MEM64, 16 << 10, True, 0xFFFF_C00C, 0xFFFF_FFFF),
        (BarKind.IO, 32, False, 0xFFFF_FFE1, None),
    ],
)
def test_bar_sizing_reads_back_size_mask_with_type_bits(kind, size, pref, low, high):
    """Writing all-ones to a BAR reads back ~(size-1) | type bits; a 64-bit BAR's upper half all-ones."""
    fn = make_fn()
    fn.add_bar(0, size, kind, prefetchable=pref)
    fn.config_write(0x10, 4, 0xFFFF_FFFF)
    assert fn.config.read(0x10, 4) == low
    if high is not None:
        fn.config_write(0x14, 4, 0xFFFF_FFFF)
        assert fn.config.read(0x14, 4) == high


def test_rom_sizing_and_unimplemented_bar():
    """The ROM reads back its size mask (enable bit kept); an unimplemented BAR reads 0."""
    fn = make_fn()
    fn.add_bar(ROM_SLOT, 64 << 10, BarKind.ROM)
    fn.config_write(0x30, 4, 0xFFFF_F800)
    assert fn.config.read(0x30, 4) == 0xFFFF_0000
    fn.config_write(0x30, 4, 0xFFFF_F801)
    assert fn.config.read(0x30, 4) == 0xFFFF_0001
    fn.config_write(0x18, 4, 0xFFFF_FFFF)
    assert fn.config.read(0x18, 4) == 0


def test_bar_definitions_are_validated():
    """Non-power-of-two sizes and a 64-bit BAR over a used slot are refused."""
    fn = make_fn()
    with pytest.raises(PciAccessError, match="power of two"):
        fn.add_bar(0, 3000, BarKind.MEM32)
    fn.add_bar(1, 4096, BarKind.MEM32)
    with pytest.raises(PciAccessError, match="overlaps"):
        fn.add_bar(0, 4096, BarKind.MEM64)


def test_bar_decodes_only_with_memory_space_enabled():
    """A programmed BAR answers only after COMMAND.MEM; before that the bus master-aborts (all-ones)."""
    _, sink, _, bus = make_bus()
    fn = make_fn()
    fn.add_bar(0, 4096, BarKind.MEM32)
    regs = Regs()
    regs.values[0x10] = 0xABCD
    fn.set_bar_handler(0, regs)
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, 0x10, 4, 0xFEB0_0000)
    assert bus.mmio_read_sync(0xFEB0_0010, 4) == 0xFFFF_FFFF
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0002)
    assert bus.mmio_read_sync(0xFEB0_0010, 4) == 0xABCD
    assert bus.mmio_write_sync(0xFEB0_0FFC, 4, 7) is None and regs.writes == [(0xFFC, 4, 7)]
    bus.mmio_write_sync(0xFEB0_1000, 4, 1)  # just past the BAR: ignored
    assert regs.writes == [(0xFFC, 4, 7)]
    assert [r.fields["access"] for r in sink.records if r.event == "master_abort"] == ["mmio_read", "mmio_write"]


def test_bar_holding_its_sizing_value_is_not_decoded():
    """pci_bar_address: a 32-bit BAR reaching 0xffffffff (all-ones written) is unmapped."""
    _, _, _, bus = make_bus()
    fn = make_fn()
    fn.add_bar(0, 4096, BarKind.MEM32)
    fn.set_bar_handler(0, Regs())
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0002)
    bus.config_write_sync(fn.bdf, 0x10, 4, 0xFFFF_FFFF)
    assert fn.bar_address(0) is None
    assert bus.decode_mmio(0xFFFF_F000, 4) is None


def test_io_bar_decodes_with_io_space_enabled():
    """An I/O BAR answers port accesses once COMMAND.IO is set."""
    _, _, _, bus = make_bus()
    fn = make_fn()
    fn.add_bar(2, 32, BarKind.IO)
    regs = Regs()
    fn.set_bar_handler(2, regs)
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, 0x18, 4, 0xC041)
    assert bus.io_read_sync(0xC044, 2) == 0xFFFF
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0001)
    bus.io_write_sync(0xC044, 2, 0x55)
    assert regs.writes == [(4, 2, 0x55)]
    assert fn.io_enabled and not fn.memory_enabled


def test_bar_without_handler_reads_all_ones():
    """A decoded BAR with no model plugged behind it reads all-ones, traced as bar_unbacked."""
    _, sink, _, bus = make_bus()
    fn = make_fn()
    fn.add_bar(0, 4096, BarKind.MEM32)
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, 0x10, 4, 0xFEB0_0000)
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0002)
    assert bus.mmio_read_sync(0xFEB0_001C, 4) == 0xFFFF_FFFF
    assert sink.events("dut") == [("dut", "bar_unbacked")]


# -- bus mastering -----------------------------------------------------------------------------------
def test_check_dma_allowed_follows_bus_master_enable():
    """Before COMMAND.BME the device may not DMA (traced dma_blocked); afterwards it may."""
    _, sink, _, bus = make_bus()
    fn = make_fn()
    bus.add_function(fn)
    assert fn.check_dma_allowed() is False
    assert sink.events("dut") == [("dut", "dma_blocked")]
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0004)
    assert fn.bus_master and fn.check_dma_allowed() is True


# -- MSI-X ----------------------------------------------------------------------------------------------
def test_msix_entry_layout():
    """A table entry is 16 bytes: address (8), data (4), vector control (4); reset value masked."""
    entry = MsixEntry(0x1_FEE0_3000, 0x41, 0)
    assert MsixEntry.SIZE == 16 and len(entry.pack()) == 16
    assert entry.pack() == bytes.fromhex("0030e0fe01000000" "41000000" "00000000")
    assert MsixEntry.unpack(entry.pack()) == entry
    assert MsixEntry(0, 0).masked and not entry.masked


def msix_setup(vectors=4):
    sim, sink, irq, bus = make_bus()
    fn = make_fn(express=True)
    fn.add_bar(0, 16 << 10, BarKind.MEM64)
    fn.add_msix(None, vectors=vectors, table_bar=0, table_offset=0x2000, pba_bar=0, pba_offset=0x3000)
    fn.set_bar_handler(0, Regs())
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, 0x10, 4, 0xFEBD_4000)
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0006)
    fired = []
    irq.register_msi(0x41, lambda: fired.append(("v41", sim.now)))
    irq.register_msi(0x42, lambda: fired.append(("v42", sim.now)))
    # program vector 1 -> APIC 3, vector 0x41; vector 2 -> 0x42
    for v, vec in ((1, 0x41), (2, 0x42)):
        base = 0xFEBD_4000 + 0x2000 + 16 * v
        bus.mmio_write_sync(base, 4, msi_address(3))
        bus.mmio_write_sync(base + 4, 4, 0)
        bus.mmio_write_sync(base + 8, 4, vec)
    return sim, sink, irq, bus, fn, fired


def test_msix_vectors_start_masked_and_disabled():
    """Reset state: every table entry masked; notifying sets the pending bit instead of delivering."""
    sim, _, _, bus, fn, fired = msix_setup()
    assert bus.mmio_read_sync(0xFEBD_4000 + 0x2000 + 16 + 12, 4) == 1
    fn.msix_notify(1)
    sim.run_sync()
    assert fired == [] and fn.msix_pending(1)
    assert bus.mmio_read_sync(0xFEBD_4000 + 0x3000, 4) == 0b10


def test_msix_masked_vector_pends_then_unmask_delivers():
    """With MSI-X on, a masked vector pends; clearing its mask bit delivers it once and clears the PBA bit."""
    sim, _, _, bus, fn, fired = msix_setup()
    cap = 0x40
    assert not fn.msix_enabled
    bus.config_write_sync(fn.bdf, cap + 2, 2, 0x8000)  # enable
    assert fn.msix_enabled
    fn.msix_notify(1)
    assert fn.msix_pending(1)
    bus.mmio_write_sync(0xFEBD_4000 + 0x2000 + 16 + 12, 4, 0)  # unmask vector 1
    assert not fn.msix_pending(1)
    sim.run_sync()
    assert fired == [("v41", COST.irq_delivery_ps)]
    fn.msix_notify(1)
    sim.run_sync()
    assert [f[0] for f in fired] == ["v41", "v41"]


def test_msix_function_mask_holds_all_vectors():
    """The function mask pends every vector; clearing it delivers the pending ones."""
    sim, _, _, bus, fn, fired = msix_setup()
    bus.mmio_write_sync(0xFEBD_4000 + 0x2000 + 16 + 12, 4, 0)
    bus.mmio_write_sync(0xFEBD_4000 + 0x2000 + 32 + 12, 4, 0)
    bus.config_write_sync(fn.bdf, 0x42, 2, 0xC000)  # enable + mask all
    fn.msix_notify(2)
    fn.msix_notify(1)
    sim.run_sync()
    assert fired == []
    bus.config_write_sync(fn.bdf, 0x42, 2, 0x8000)
    sim.run_sync()
    assert [f[0] for f in fired] == ["v41", "v42"]


def test_msix_messages_need_bus_mastering():
    """An unmasked vector of a function with BME clear is dropped (traced msi_blocked)."""
    sim, sink, _, bus, fn, fired = msix_setup()
    bus.config_write_sync(fn.bdf, 0x42, 2, 0x8000)
    bus.mmio_write_sync(0xFEBD_4000 + 0x2000 + 16 + 12, 4, 0)
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0002)
    fn.msix_notify(1)
    sim.run_sync()
    assert fired == [] and ("dut", "msi_blocked") in sink.events("dut")


def test_msix_table_rejects_sub_dword_access():
    """Table accesses must be 4 or 8 bytes: a 2-byte read returns all-ones, traced."""
    _, sink, _, bus, _, _ = msix_setup()
    assert bus.mmio_read_sync(0xFEBD_4000 + 0x2000, 2) == 0xFFFF
    assert ("dut", "msix_bad_access") in sink.events("dut")


def test_msix_8_byte_table_write_is_two_dwords():
    """A qword write to an entry's address fills address low and high."""
    _, _, _, bus, _, _ = msix_setup()
    bus.mmio_write_sync(0xFEBD_4000 + 0x2000 + 48, 8, 0x1_FEE0_1000)
    assert bus.mmio_read_sync(0xFEBD_4000 + 0x2000 + 48, 4) == 0xFEE0_1000
    assert bus.mmio_read_sync(0xFEBD_4000 + 0x2000 + 52, 4) == 0x1


# -- MSI --------------------------------------------------------------------------------------------------
def test_msi_delivers_programmed_message():
    """An enabled 64-bit MSI sends its data to its address; disabled it sends nothing."""
    sim, _, irq, bus = make_bus()
    fn = make_fn()
    cap = fn.add_msi(0x80)
    bus.add_function(fn)
    fired = []
    irq.register_msi(0x21, lambda: fired.append(sim.now))
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0004)
    bus.config_write_sync(fn.bdf, cap + 4, 4, msi_address(3))
    bus.config_write_sync(fn.bdf, cap + 0xC, 2, 0x21)
    fn.msi_notify()
    sim.run_sync()
    assert fired == []
    bus.config_write_sync(fn.bdf, cap + 2, 2, 0x0001)
    fn.msi_notify()
    sim.run_sync()
    assert fired == [COST.irq_delivery_ps]


def test_maskable_msi_pends_while_masked():
    """Per-vector masking: masked -> pending bit; unmasking delivers and clears it."""
    sim, _, irq, bus = make_bus()
    fn = make_fn()
    cap = fn.add_msi(None, maskable=True)
    bus.add_function(fn)
    fired = []
    irq.register_msi(0x30, lambda: fired.append(1))
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0004)
    bus.config_write_sync(fn.bdf, cap + 4, 4, msi_address(0))
    bus.config_write_sync(fn.bdf, cap + 0xC, 2, 0x30)
    bus.config_write_sync(fn.bdf, cap + 0x10, 4, 1)  # mask
    bus.config_write_sync(fn.bdf, cap + 2, 2, 0x0001)
    fn.msi_notify()
    assert bus.config_read_sync(fn.bdf, cap + 0x14, 4) == 1
    bus.config_write_sync(fn.bdf, cap + 0x14, 4, 0)  # pending is read-only
    assert bus.config_read_sync(fn.bdf, cap + 0x14, 4) == 1
    bus.config_write_sync(fn.bdf, cap + 0x10, 4, 0)
    sim.run_sync()
    assert fired == [1] and bus.config_read_sync(fn.bdf, cap + 0x14, 4) == 0


# -- INTx and the interrupt controller --------------------------------------------------------------------
def test_q35_intx_routing_matches_ich9():
    """Slots 0-24 rotate over PIRQ E-H, slot 31 uses D31IR (INTA->PIRQA), GSI = 16 + PIRQ."""
    assert [q35_intx_gsi(s, 1) for s in (0, 1, 2, 3, 4, 31)] == [20, 21, 22, 23, 20, 16]
    assert [q35_intx_gsi(31, p) for p in (1, 2, 3, 4)] == [16, 17, 18, 19]
    assert [ich9_pirq(30, p) for p in (1, 2, 3, 4)] == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="pin"):
        q35_intx_gsi(3, 0)


def test_intx_is_a_wired_or_gated_by_intx_disable():
    """Two functions share GSI 20; the line falls only when both deassert; INTx disable masks one."""
    sim, _, irq, bus = make_bus()
    a = make_fn(make_bdf(0, 4, 0), interrupt_pin=1)
    b = make_fn(make_bdf(0, 8, 0), interrupt_pin=1)
    bus.add_function(a)
    bus.add_function(b)
    calls = []
    irq.register_intx(20, lambda: calls.append(sim.now))
    a.set_intx(True)
    b.set_intx(True)
    assert irq.line(20).value == 1 and a.config.read(PCI_STATUS, 2) & 0x8
    a.set_intx(False)
    assert irq.line(20).value == 1
    bus.config_write_sync(b.bdf, PCI_COMMAND, 2, 0x0400)
    assert irq.line(20).value == 0 and b.config.read(PCI_STATUS, 2) & 0x8
    bus.config_write_sync(b.bdf, PCI_COMMAND, 2, 0x0000)
    sim.run_sync()
    assert calls == [COST.irq_delivery_ps, COST.irq_delivery_ps]  # two rising edges


def test_eoi_redelivers_a_still_asserted_line():
    """Level semantics: EOI while the line is high delivers again; after deassert it does not."""
    sim, _, irq, bus = make_bus()
    fn = make_fn(make_bdf(0, 3, 0), interrupt_pin=1)
    bus.add_function(fn)
    calls = []
    irq.register_intx(23, lambda: calls.append(1))
    fn.set_intx(True)
    irq.eoi(23)
    fn.set_intx(False)
    irq.eoi(23)
    sim.run_sync()
    assert calls == [1, 1]


def test_msi_handlers_register_once_and_unregister():
    """A vector takes one handler; after unregister its messages are spurious until re-registered."""
    sim, _, irq, _ = make_bus()
    calls = []
    irq.register_msi(0x50, lambda: calls.append(1))
    with pytest.raises(ValueError, match="already"):
        irq.register_msi(0x50, lambda: None)
    irq.unregister_msi(0x50)
    assert irq.deliver_msi(msi_address(1), 0x50, "x") is False
    irq.register_msi(0x50, lambda: calls.append(2))
    assert irq.deliver_msi(msi_address(1), 0x50, "x") is True
    sim.run_sync()
    assert calls == [2] and irq.msi_counts == {0x50: 1}


def test_msi_outside_the_apic_window_or_with_low_vector_is_refused():
    """A message outside 0xFEExxxxx or naming vector < 16 reaches no handler and counts as spurious."""
    sim, sink, irq, _ = make_bus()
    assert irq.deliver_msi(0xFED0_0000, 0x30, "x") is False
    assert irq.deliver_msi(msi_address(0), 0x0F, "x") is False
    assert irq.deliver_msi(msi_address(0), 0x31, "x") is False  # no handler
    assert irq.spurious == 3
    assert [e for _, e in sink.events("irq")] == ["msi_bad_address", "msi_illegal_vector", "msi"]


# -- timing ------------------------------------------------------------------------------------------------
def timed_setup(passthrough):
    sim, sink, irq, bus = make_bus()
    fn = make_fn(express=True, passthrough=passthrough)
    fn.add_bar(0, 16 << 10, BarKind.MEM64)
    fn.add_msix(None, vectors=2, table_bar=0, table_offset=0x2000, pba_bar=0, pba_offset=0x3000)
    log = []

    async def in_exit_work():
        from sim import Timer

        await Timer(us(3))
        log.append(("work done", sim.now))

    fn.set_bar_handler(0, Regs(work=in_exit_work))
    bus.add_function(fn)
    bus.config_write_sync(fn.bdf, 0x10, 4, 0xFEBD_4000)
    bus.config_write_sync(fn.bdf, PCI_COMMAND, 2, 0x0002)
    return sim, bus, fn, log


def test_trapped_mmio_costs_a_vmexit_and_awaits_in_exit_work():
    """A trapped write takes vmexit_mmio_ps, then the handler's coroutine runs before the write returns."""
    sim, bus, _, log = timed_setup(passthrough=False)

    async def vcpu():
        await bus.mmio_write(0xFEBD_4000 + 0x1000, 4, 1)
        log.append(("write returned", sim.now))
        await bus.mmio_read(0xFEBD_4000, 4)
        log.append(("read returned", sim.now))
        await bus.config_read(0x28, 0, 4)
        log.append(("config returned", sim.now))

    run_task(sim, vcpu())
    t = COST.vmexit_mmio_ps + us(3)
    assert log == [("work done", t), ("write returned", t), ("read returned", t + COST.vmexit_mmio_ps),
                   ("config returned", t + COST.vmexit_mmio_ps + COST.config_access_ps)]


def test_passthrough_bar_costs_passthrough_except_msix_table():
    """A VFIO BAR: reads/writes cost the passthrough parameters, the MSI-X table still exits."""
    sim, bus, _, log = timed_setup(passthrough=True)
    times = []

    async def vcpu():
        await bus.mmio_read(0xFEBD_4000 + 0x1C, 4)
        times.append(sim.now)
        await bus.mmio_read(0xFEBD_4000 + 0x2000, 4)
        times.append(sim.now)

    run_task(sim, vcpu())
    r = COST.mmio_read_passthrough_ps
    assert times == [r, r + COST.vmexit_mmio_ps]
    assert COST.mmio_read_passthrough_ps == ns(500)
