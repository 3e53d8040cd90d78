"""The guest NVMe driver against the real controller model: dmesg lines, DMA operations, MSI-X, I/O, failures."""

from __future__ import annotations

from typing import Any

import pytest

from models import CostModel
from models._interrupts import msi_address
from models._nvme_wire import (
    ADMIN_CREATE_CQ, ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG, ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SECURITY_RECV,
    ADMIN_SET_FEATURES, IO_READ, IO_WRITE,
)
from models._nvme_data import IdentifyController, PowerState
from models._pci_config import PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from models.guest._dma_iommu import DMA_FROM_DEVICE, DMA_TO_DEVICE, DirectDma
from models.guest import GuestKernel
from models.guest import _nvme_prp as nvme_driver
from models.guest._nvme_core import apst_table, shutdown_timeout, status_str
from models.guest._nvme_io import dbbuf_need_event
from models.guest._nvme_pci import NvmeDriver, calc_irq_sets, group_cpus_evenly
from models.guest._nvme_prp import prp_list_chunks
from sim import ListSink, seconds
from staging import StagedGuest, staged_guest

FROM, TO = DMA_FROM_DEVICE, DMA_TO_DEVICE
PROBE_CPU = 1  # the boot's async-probe worker


class RecordingDma:
    """Delegates to a real DMA API and records (operation, direction or size, ..., cpu) in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ops: list[tuple[Any, ...]] = []

    async def map_page(self, cpu: int, paddr: int, size: int, direction: int) -> int:
        self.ops.append(("map", direction, size, cpu))
        return await self.inner.map_page(cpu, paddr, size, direction)

    async def unmap_page(self, cpu: int, iova: int, size: int, direction: int) -> None:
        self.ops.append(("unmap", direction, size, cpu))
        await self.inner.unmap_page(cpu, iova, size, direction)

    async def map_sg(self, cpu: int, segments: list[tuple[int, int]], direction: int) -> list[int]:
        self.ops.append(("map_sg", direction, sum(n for _, n in segments), cpu))
        return await self.inner.map_sg(cpu, segments, direction)

    async def unmap_sg(self, cpu: int, iovas: list[int], segments: list[tuple[int, int]], direction: int) -> None:
        self.ops.append(("unmap_sg", direction, sum(n for _, n in segments), cpu))
        await self.inner.unmap_sg(cpu, iovas, segments, direction)

    async def alloc_coherent(self, cpu: int, size: int) -> tuple[int, list[int]]:
        self.ops.append(("alloc", size, cpu))
        return await self.inner.alloc_coherent(cpu, size)

    async def free_coherent(self, cpu: int, size: int, iova: int, pages: list[int]) -> None:
        self.ops.append(("free", size, cpu))
        await self.inner.free_coherent(cpu, size, iova, pages)


def _platform(nvme: str = "vfio", smp: int = 4, **cost: int) -> StagedGuest:
    """The guest at its kernel stage (devices enumerated, no IOMMU core), the NVMe function bound to
    "nvme" with recorded direct DMA."""
    g = staged_guest("kernel", smp=smp, nvme=nvme, cost=CostModel().evolve(**cost))
    g.nvme.driver = "nvme"
    g.nvme.dma = RecordingDma(DirectDma(g.kernel, g.nvme))
    return g


def _probe(g: StagedGuest) -> tuple[NvmeDriver, int]:
    drv = NvmeDriver(g.kernel, g.nvme)
    return drv, g.run(drv.probe(PROBE_CPU))


def _texts(kernel: GuestKernel) -> list[str]:
    return [r.text for r in kernel.printk.records]


def _sync_cmds(sink: ListSink) -> list[tuple[int, int, int]]:
    """(opcode, CDW10, status) of every synchronous admin command, in completion order."""
    return [(r.fields["opcode"], r.fields["cdw10"], r.fields["status"]) for r in sink.records
            if r.event == "nvme_submit_sync_cmd"]


def _alloc(size: int) -> tuple[Any, ...]:
    return ("alloc", size, PROBE_CPU)


def _admin(direction: int, size: int) -> list[tuple[Any, ...]]:
    """An admin buffer: mapped on the probing CPU, unmapped where the admin IRQ completes it (CPU 0)."""
    return [("map", direction, size, PROBE_CPU), ("unmap", direction, size, 0)]


def _read_page() -> list[tuple[Any, ...]]:
    """A partition-scan page read through the probing CPU's I/O queue, completed on the same CPU."""
    return [("map", FROM, 4096, PROBE_CPU), ("unmap", FROM, 4096, PROBE_CPU)]


# -- dmesg --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("nvme", "smp", "lines"), [
    ("vfio", 4, ["nvme nvme0: pci function 0000:00:04.0", "nvme nvme0: Shutdown timeout set to 10 seconds",
                 "nvme nvme0: 4/0/0 default/read/poll queues"]),
    ("vfio", 2, ["nvme nvme0: pci function 0000:00:04.0", "nvme nvme0: Shutdown timeout set to 10 seconds",
                 "nvme nvme0: 2/0/0 default/read/poll queues"]),
    ("emulated", 4, ["nvme nvme0: pci function 0000:00:04.0", "nvme nvme0: 4/0/0 default/read/poll queues"]),
])
def test_probe_prints_the_seed_lines_from_the_controller_identity(nvme: str, smp: int, lines: list[str]) -> None:
    """PM173X RTD3E 10 s gives the Shutdown line, QEMU's RTD3E 0 none; the queue count follows -smp."""
    g = _platform(nvme, smp)
    drv, ret = _probe(g)
    assert (ret, drv.state, drv.error) == (0, "LIVE", 0)
    assert _texts(g.kernel) == lines


# -- DMA operations, in order, with their CPUs -------------------------------------------------------------


def test_probe_dma_operations_of_the_pm173x_in_linux_order() -> None:
    """Admin CQ/SQ, Identify, effects log, timestamp, OPAL, SMART, 4 queue pairs, scan, 3 partition pages."""
    g = _platform("vfio", 4)
    _probe(g)
    expected = [_alloc(512), _alloc(2048)]
    expected += _admin(FROM, 4096)  # Identify Controller
    expected += _admin(FROM, 4096)  # Commands Supported and Effects (LPA bit 1)
    expected += _admin(TO, 8)  # Set Features Timestamp (ONCS bit 6), bounced page
    expected += _admin(FROM, 2048)  # OPAL discovery0 (OACS bit 0)
    expected += _admin(FROM, 512)  # SMART log for hwmon
    expected += [_alloc(16384), _alloc(65536)] * 4  # CQ then SQ of qid 1..4, q_depth 1024
    expected += _admin(FROM, 4096) * 5  # CNS 06h, 02h, 03h, 00h, 00h
    expected += _read_page() * 3  # LBA 0, 8, 0x18
    assert g.nvme.dma.ops == expected


def test_probe_dma_operations_of_qemus_nvme_in_linux_order() -> None:
    """Host behaviour (CTRATT.ELBAS), DBBUF pages (OACS bit 8) and Identify CNS 05h join; no OPAL."""
    g = _platform("emulated", 4)
    _probe(g)
    expected = [_alloc(512), _alloc(2048)]
    expected += _admin(FROM, 4096) + _admin(FROM, 4096)  # Identify, effects log
    expected += _admin(TO, 8) + _admin(TO, 512)  # timestamp, host behaviour
    expected += _admin(FROM, 512)  # SMART
    expected += [_alloc(40), _alloc(40)]  # dbbuf dbs/eis: (4 + 1) queues x 8 B
    expected += [_alloc(16384), _alloc(65536)] * 4
    expected += _admin(FROM, 4096) * 6  # CNS 06h, 02h, 03h, 00h, 00h, 05h
    expected += _read_page() * 3
    assert g.nvme.dma.ops == expected


def test_probe_admin_commands_match_the_reference_boot_order() -> None:
    """QEMU NVMe: the command/CDW10 sequence of refboot §5.4, DBBUF config after the queues, AEN last."""
    g = _platform("emulated", 4)
    _probe(g)
    creates = []
    for qid in range(1, 5):
        creates += [(ADMIN_CREATE_CQ, 0x03FF0000 | qid, 0), (ADMIN_CREATE_SQ, 0x03FF0000 | qid, 0)]
    assert _sync_cmds(g.sink) == [
        (ADMIN_IDENTIFY, 1, 0), (ADMIN_GET_LOG_PAGE, 0x03FF0005, 0), (ADMIN_SET_FEATURES, 0x0E, 0),
        (ADMIN_SET_FEATURES, 0x16, 0), (ADMIN_GET_LOG_PAGE, 0x007F0002, 0), (ADMIN_SET_FEATURES, 0x07, 0),
        *creates, (ADMIN_DBBUF_CONFIG, 0, 0), (ADMIN_SET_FEATURES, 0x0B, 0),
        (ADMIN_IDENTIFY, 6, 0), (ADMIN_IDENTIFY, 2, 0), (ADMIN_IDENTIFY, 3, 0), (ADMIN_IDENTIFY, 0, 0),
        (ADMIN_IDENTIFY, 0, 0), (ADMIN_IDENTIFY, 5, 0),
    ]


def test_probe_on_the_pm173x_survives_its_quiet_failures() -> None:
    """OPAL discovery and Identify CNS 06h fail with Invalid Field | DNR; nothing is logged, the probe goes on."""
    g = _platform("vfio", 4)
    drv, _ = _probe(g)
    cmds = _sync_cmds(g.sink)
    assert (ADMIN_SECURITY_RECV, 0x01000100, 0x4002) in cmds
    assert (ADMIN_IDENTIFY, 6, 0x4002) in cmds
    assert drv.skip_cns_cs and len(_texts(g.kernel)) == 3


# -- interrupts ---------------------------------------------------------------------------------------------


def test_probe_programs_msix_admin_on_cpu0_and_io_vectors_spread_over_the_cpus() -> None:
    """Entries 0..4 unmasked (admin -> CPU 0, queue q -> CPU q-1), the rest masked; INTx off, bus master on."""
    g = _platform("vfio", 4)
    _probe(g)
    fn = g.machine.function(g.nvme.bdf)
    assert fn.msix_enabled
    entries = [fn.msix_entry(i) for i in range(6)]
    assert [e.masked for e in entries] == [False] * 5 + [True]
    assert [e.address for e in entries[:5]] == [msi_address(c) for c in (0, 0, 1, 2, 3)]
    assert len({e.data for e in entries[:5]}) == 5  # five distinct guest vectors
    cmd = fn.config.read(PCI_COMMAND, 2)
    assert cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE) == 0x406


# -- I/O ----------------------------------------------------------------------------------------------------


def test_partition_scan_reads_the_namespace_data_into_the_page_cache() -> None:
    """The pages at LBA 0, 8 and 0x18 hold what the namespace stores there."""
    g = _platform("vfio", 4)
    assert g.machine.nvme is not None
    ns = g.machine.nvme.namespaces[1]
    for lba in (0, 8, 24):
        ns.write(lba, bytes([lba + 1]) * 4096)
    drv, _ = _probe(g)
    assert sorted(drv.page_cache) == [(1, 0), (1, 8), (1, 24)]
    for (_, lba), page in drv.page_cache.items():
        assert g.machine.memory.read(page, 4096) == bytes([lba + 1]) * 4096


def test_submit_io_round_trips_data_on_the_cpus_queue() -> None:
    """A 16 KiB write then read from CPU 3 (SGL simple): data back, mapped and unmapped on CPU 3."""
    g = _platform("emulated", 4)
    drv, _ = _probe(g)
    src, dst = g.kernel.mm.alloc_pages(2), g.kernel.mm.alloc_pages(2)
    data = bytes(range(256)) * 64
    g.machine.memory.write(src, data)
    before = len(g.nvme.dma.ops)
    assert g.run(drv.submit_io(3, IO_WRITE, 1, 1000, 32, src)) == 0
    assert g.run(drv.submit_io(3, IO_READ, 1, 1000, 32, dst)) == 0
    assert g.machine.memory.read(dst, len(data)) == data
    assert g.nvme.dma.ops[before:] == [("map", TO, 16384, 3), ("unmap", TO, 16384, 3),
                                      ("map", FROM, 16384, 3), ("unmap", FROM, 16384, 3)]


def test_submit_io_without_sgls_builds_a_prp_list_from_the_dma_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvme.sgl_threshold=0: a 16 KiB buffer is one mapped segment plus a "prp list 256" block (a coherent page)."""
    monkeypatch.setattr(nvme_driver, "SGL_THRESHOLD", 0)
    g = _platform("vfio", 4)
    drv, _ = _probe(g)
    src, dst = g.kernel.mm.alloc_pages(2), g.kernel.mm.alloc_pages(2)
    data = bytes(range(251)) * 65 + bytes(1)
    g.machine.memory.write(src, data)
    before = len(g.nvme.dma.ops)
    assert g.run(drv.submit_io(2, IO_WRITE, 1, 64, 32, src)) == 0
    assert g.run(drv.submit_io(2, IO_READ, 1, 64, 32, dst)) == 0
    assert g.machine.memory.read(dst, len(data)) == data
    assert g.nvme.dma.ops[before:] == [("map_sg", TO, 16384, 2), ("alloc", 4096, 2), ("unmap_sg", TO, 16384, 2),
                                      ("map_sg", FROM, 16384, 2), ("unmap_sg", FROM, 16384, 2)]


def test_submit_io_refuses_a_request_beyond_the_namespace() -> None:
    """A read past the namespace end is refused by the driver before it reaches the controller."""
    g = _platform("vfio", 4)
    drv, _ = _probe(g)
    with pytest.raises(ValueError, match="do not fit nvme0n1"):
        g.run(drv.submit_io(0, IO_READ, 1, drv.namespaces[1].nsze, 1, g.kernel.mm.alloc_pages(0)))


# -- failures -----------------------------------------------------------------------------------------------


def test_probe_of_a_controller_that_never_becomes_ready_fails_like_linux() -> None:
    """CSTS.RDY stays 0 past (CAP.TO + 1) / 2 s: the Linux message, -ENODEV, MSI-X and bus mastering off."""
    g = _platform("vfio", 4, nvme_enable_ps=seconds(100))
    drv, ret = _probe(g)
    assert (ret, drv.error) == (-19, -19)
    assert _texts(g.kernel) == ["nvme nvme0: pci function 0000:00:04.0",
                                "nvme nvme0: Device not ready; aborting initialisation, CSTS=0x0"]
    assert 30 * 10**12 < g.sim.now < 31 * 10**12  # PM173X CAP.TO = 0x3c: 30 s
    fn = g.machine.function(g.nvme.bdf)
    assert not fn.msix_enabled and not fn.bus_master


def test_probe_whose_identify_times_out_disables_the_controller() -> None:
    """No completion within admin_timeout (60 s): nvme_timeout's line, Identify fails with -EINTR, probe -EIO."""
    g = _platform("vfio", 4, nvme_cmd_service_ps=seconds(100))
    drv, ret = _probe(g)
    assert ret == -5
    assert _texts(g.kernel) == ["nvme nvme0: pci function 0000:00:04.0",
                                "nvme nvme0: I/O tag 0 (0000) QID 0 timeout, disable controller",
                                "nvme nvme0: Identify Controller failed (-4)"]
    assert g.nvme.dma.ops[-3:] == [("unmap", FROM, 4096, PROBE_CPU), ("free", 2048, PROBE_CPU),
                                  ("free", 512, PROBE_CPU)]
    assert not g.machine.function(g.nvme.bdf).bus_master


# -- the real dma-iommu ---------------------------------------------------------------------------------------


def test_probe_through_the_virtio_iommu_maps_the_seeds_iova_for_the_first_partition_read() -> None:
    """Strict 6.7 domain, vfio, -smp 4: the NVMe MAP/UNMAP sequence of linux-guest.md §4.5, 0xFFF7A000 included."""
    g = staged_guest("nvme", iommu_policy="strict")  # virtio-iommu probed, then dma_configure + nvme_probe on CPU 1
    assert g.probe_cpu == PROBE_CPU and g.nvme_driver is not None and g.nvme_driver.error == 0
    seq = []
    for r in g.sink.records:
        if r.event == "virtio_iommu_map":
            pages = (r.fields["virt_end"] + 1 - r.fields["virt_start"]) >> 12
            seq.append(f"M{r.fields['virt_start'] >> 12:x}" + (f"+{pages:x}" if pages > 1 else "")
                       + f"/{r.fields['flags']}")
        elif r.event == "virtio_iommu_unmap":
            seq.append(f"U{r.fields['virt_start'] >> 12:x}")
    assert " ".join(seq) == (
        "Mfffff/3 Mffffe/3 Mffffd/2 Uffffd Mffffc/2 Uffffc Mffffb/1 Uffffb Mffffa/2 Uffffa Mffff9/2 Uffff9 "
        "Mffff4+4/3 Mfffe0+10/3 Mfffdc+4/3 Mfffc0+10/3 Mfffbc+4/3 Mfffa0+10/3 Mfff9c+4/3 Mfff80+10/3 "
        "Mfff7f/2 Ufff7f Mfff7e/2 Ufff7e Mfff7d/2 Ufff7d Mfff7c/2 Ufff7c Mfff7b/2 Ufff7b "
        "Mfff7a/2 Ufff7a Mfff7a/2 Ufff7a Mfff7a/2 Ufff7a")


# -- pure decisions -------------------------------------------------------------------------------------------


def test_shutdown_timeout_clamps_rtd3e_seconds_between_the_module_default_and_60() -> None:
    """0 -> 5 (silent); 10 000 000 us -> 10; 10 999 999 -> 10; 2 s -> 5; 100 s -> 60."""
    assert [shutdown_timeout(v) for v in (0, 10_000_000, 10_999_999, 2_000_000, 100_000_000)] == [5, 10, 10, 5, 60]


def test_irq_sets_and_cpu_groups_follow_nvme_calc_irq_sets_and_group_cpus_evenly() -> None:
    """write_queues 0: every vector is a default queue; CPU groups are consecutive, the first ones larger."""
    assert [calc_irq_sets(n) for n in (0, 1, 4)] == [(1, 0), (1, 0), (4, 0)]
    assert calc_irq_sets(4, write_queues=1) == (1, 3)
    assert group_cpus_evenly(4, 4) == [[0], [1], [2], [3]]
    assert group_cpus_evenly(4, 3) == [[0, 1], [2], [3]]
    assert group_cpus_evenly(5, 2) == [[0, 1, 2], [3, 4]]


def test_dbbuf_need_event_asks_for_mmio_only_when_the_event_index_was_passed() -> None:
    """new 1, old 0: needed when the controller's event index is 0, not when it is still behind at 0xFFFF."""
    assert dbbuf_need_event(0, 1, 0) is True
    assert dbbuf_need_event(5, 7, 6) is False
    assert dbbuf_need_event(0xFFFF, 1, 0xFFFF) is True


def test_prp_list_pages_keep_the_last_slot_of_a_full_page_for_the_link() -> None:
    """1000 entries: 511 + link, then 489; 30 entries fit one list."""
    chunks = prp_list_chunks(list(range(1000)))
    assert [len(c) for c in chunks] == [511, 489] and chunks[1][0] == 511
    assert prp_list_chunks(list(range(30))) == [list(range(30))]


def test_apst_table_points_operational_states_at_the_deepest_acceptable_idle_state() -> None:
    """PS2 non-operational with 5 ms total latency: PS0 and PS1 go to it after the 100 ms primary timeout."""
    ctrl = IdentifyController(apsta=1, npss=2, psd=(PowerState(mp=900), PowerState(mp=500),
                                                    PowerState(mp=5, flags=0x2, enlat=2000, exlat=3000)))
    table = apst_table(ctrl)
    entry = 2 << 3 | 100 << 8
    assert table == entry.to_bytes(8, "little") * 2 + bytes(240)


def test_status_str_prints_the_kernels_hex_for_zero_and_the_dnr_tail() -> None:
    """Linux's %#x prints 0x0; DNR and MORE add their words."""
    assert status_str(0x4002) == "Invalid Field in Command (sct 0x0 / sc 0x2) DNR "
    assert status_str(0x0004) == "Data Transfer Error (sct 0x0 / sc 0x4) "
