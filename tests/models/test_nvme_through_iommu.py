"""The NVMe controller inside the full machine, its DMA translated through the IOMMU at access time.

Mappings are made with real virtio-iommu requests (guest memory -> request
queue -> notify BAR -> device -> IOMMU notifiers -> host VFIO), the
controller is driven through its BAR0 on the PCI bus, and its completions
arrive as MSI-X messages through the interrupt controller.  With ``--nvme
emulated`` each DMA is translated by the vIOMMU (``virtio_iommu_translate``);
with ``--nvme vfio`` by the host IOMMU page table that VFIO programmed.
"""

from __future__ import annotations

from typing import Any

import pytest

from models import MachineConfig
from models._machine import build_machine
from models._nvme_wire import IO_READ, IO_WRITE, SUCCESS, SubmissionEntry
from models._viommu_wire import FaultEvent
from models.guest._pci_scan import enumerate_bus
from models.guest._raw_requests import ReplayRequest, encode_request, writable_size
from models.guest._raw_viommu import RawViommuDriver, raw_viommu_platform
from sim import Lock, Simulator
from staging import run_task
from test_nvme_controller import PAGE, RW, NvmeHostDriver, up
from test_nvme_random_io import WINDOW, workload

MSIX_CAP = 0x11
VECTOR_BASE = 0x40
DOMAIN = 1
STATUS_DATA_TRANSFER_ERROR = 0x4


class _PendingMaps:
    """Collects the host driver's page mappings until they are sent as MAP requests."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, int]] = []

    def map(self, iova: int, gpa: int, size: int, perm: int = RW) -> None:
        self.pending += [(iova + off, gpa + off, perm) for off in range(0, size, PAGE)]


class MachineNvmeDriver(NvmeHostDriver):
    """The raw NVMe host driver of the controller tests, moved onto the real machine."""

    def __init__(self, machine: Any, viommu: RawViommuDriver) -> None:
        super().__init__(machine.sim, machine.config.nvme)
        self.machine = machine
        self.memory = machine.memory
        self.ctrl = machine.nvme
        self.viommu = viommu
        self.port = _PendingMaps()  # type: ignore[assignment]
        self.maps_sent = 0
        self.unmaps_sent = 0
        self._mapping = Lock(name="flush_maps")  # a submitter waits for maps another task is sending

    async def attach(self, info: Any) -> None:
        """Linux's pci_enable_device/pci_set_master, MSI-X set-up, and ATTACH of the endpoint."""
        bus, bdf = self.machine.bus, info.bdf
        self.bar0 = info.bar(0).address
        bus.config_write_sync(bdf, 0x04, 2, bus.config_read_sync(bdf, 0x04, 2) | 0x6)  # memory + bus master
        cap = next(off for cid, off in info.capabilities if cid == MSIX_CAP)
        table = bus.config_read_sync(bdf, cap + 4, 4)
        table_addr = info.bar(table & 7).address + (table & ~7)
        nvec = (bus.config_read_sync(bdf, cap + 2, 2) & 0x7FF) + 1
        for v in range(min(nvec, 8)):
            entry = table_addr + 16 * v
            bus.mmio_write_sync(entry, 4, 0xFEE0_0000)
            bus.mmio_write_sync(entry + 4, 4, 0)
            bus.mmio_write_sync(entry + 8, 4, VECTOR_BASE + v)
            bus.mmio_write_sync(entry + 12, 4, 0)  # unmasked
            self.machine.irq.register_msi(VECTOR_BASE + v, lambda v=v: self._msix(v))
        bus.config_write_sync(bdf, cap + 2, 2, 0x8000)  # MSI-X enable
        await self.request(ReplayRequest("attach", domain=DOMAIN, endpoint=bdf))

    async def request(self, req: ReplayRequest) -> int:
        done = await self.viommu.submit(encode_request(req), writable_size(req))
        assert done.status == 0, (req, done)
        return done.status

    async def flush_maps(self) -> None:
        async with self._mapping:
            pending, self.port.pending = self.port.pending, []  # type: ignore[attr-defined]
            for iova, gpa, perm in pending:
                await self.request(ReplayRequest("map", domain=DOMAIN, virt_start=iova, virt_end=iova + PAGE - 1,
                                                 phys_start=gpa, flags=perm))
                self.maps_sent += 1

    async def unmap(self, iova: int, size: int) -> None:
        await self.request(ReplayRequest("unmap", domain=DOMAIN, virt_start=iova, virt_end=iova + size - 1))
        self.unmaps_sent += 1

    def read32(self, off: int) -> int:
        return int(self.machine.bus.mmio_read_sync(self.bar0 + off, 4))

    def write32(self, off: int, value: int) -> None:
        self.machine.bus.mmio_write_sync(self.bar0 + off, 4, value)

    async def submit(self, qid: int, sqe: SubmissionEntry, timeout: int = 20_000_000_000) -> Any:
        await self.flush_maps()
        return await super().submit(qid, sqe, timeout)


def run_on_machine(body: Any, nvme: str, seed: int = 0) -> tuple[Any, MachineNvmeDriver]:
    sim = Simulator(seed=seed)
    machine = build_machine(MachineConfig(nvme=nvme), sim)
    box: dict[str, Any] = {}

    async def main() -> Any:
        viommu = await raw_viommu_platform(machine)
        info = next(i for i in enumerate_bus(machine.bus, machine.memory) if i.bdf == machine.nvme_pci.bdf)
        drv = box["drv"] = MachineNvmeDriver(machine, viommu)
        await drv.attach(info)
        return await body(drv)

    return run_task(sim, main(), name="test"), box["drv"]


@pytest.mark.parametrize("nvme", ["emulated", "vfio"])
def test_ten_thousand_random_commands_through_the_iommu_leave_the_disk_equal_to_the_reference(nvme):
    """10,000 seeded reads/writes with every DMA translated at access time end with the expected disk."""
    state, drv = run_on_machine(lambda d: workload(d, 10_000), nvme, seed=11)
    ctrl = drv.machine.nvme
    assert (state["done"], state["bad"]) == (10_000, [])
    assert ctrl.namespaces[1].read(0, WINDOW) == state["ref"]
    assert ctrl.statistics().dma_faults == 0
    assert drv.maps_sent > 600
    viommu = drv.machine.viommu
    assert viommu.faults_reported == 0
    if nvme == "vfio":
        assert drv.machine.nvme_dma.faults == []
        assert len(drv.machine.host.container(drv.machine.nvme_pci.bdf).mappings()) == drv.maps_sent
    else:
        assert drv.machine.nvme_dma.statistics().reads > 10_000  # SQ fetches and data, each through translate()


async def _read_before_and_after_unmap(drv: MachineNvmeDriver) -> dict[str, Any]:
    await up(drv, queues=1, depth=8)
    buf = drv.alloc(PAGE)
    write = await drv.submit(1, SubmissionEntry(opcode=IO_WRITE, nsid=1, prp1=buf.iova, cdw10=0, cdw12=7))
    before = await drv.submit(1, SubmissionEntry(opcode=IO_READ, nsid=1, prp1=buf.iova, cdw10=0, cdw12=7))
    await drv.unmap(buf.iova, PAGE)  # the UNMAP request has completed when this returns
    after = await drv.submit(1, SubmissionEntry(opcode=IO_READ, nsid=1, prp1=buf.iova, cdw10=0, cdw12=7))
    return {"write": write.status, "before": before.status, "after": after.status, "iova": buf.iova,
            "events": drv.viommu.harvest_events()}


def test_dma_after_unmap_completed_faults_and_before_does_not_on_the_emulated_nvme():
    """QEMU's NVMe: the read before UNMAP succeeds; after it, the vIOMMU faults and the command fails."""
    out, drv = run_on_machine(_read_before_and_after_unmap, "emulated")
    assert (out["write"], out["before"]) == (SUCCESS, SUCCESS)
    assert out["after"] & 0x7FF == STATUS_DATA_TRANSFER_ERROR
    faults = [FaultEvent.unpack(e) for e in out["events"]]
    assert [(f.endpoint, f.address) for f in faults] == [(drv.machine.nvme_pci.bdf, out["iova"])]


def test_dma_after_unmap_completed_faults_on_the_host_iommu_for_the_vfio_nvme():
    """The passed-through NVMe: after UNMAP the host IOMMU refuses the write and logs it; the vIOMMU never hears."""
    out, drv = run_on_machine(_read_before_and_after_unmap, "vfio")
    assert (out["write"], out["before"]) == (SUCCESS, SUCCESS)
    faults = drv.machine.nvme_dma.faults
    assert [(f.iova, f.access) for f in faults] == [(out["iova"], 2)]
    assert out["events"] == []
