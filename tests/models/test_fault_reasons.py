"""Fault events say what went wrong: an unmapped page and a permission miss are told apart.

The virtio spec has one reason, VIRTIO_IOMMU_FAULT_R_MAPPING, for "unmapped or wrong
permission"; the record's flags tell which (READ/WRITE: the access the mapping does not permit,
neither: no mapping).  ``describe_fault`` says it in words, and the DMA port's fault (what the
device model and the DMA-safety scoreboard report) carries that description.
"""

from __future__ import annotations

import pytest

from models import DmaFault, MachineConfig, ViommuDmaPort
from models._viommu import VirtioIommu
from models._viommu_wire import (
    FAULT_F_ADDRESS,
    FAULT_F_EXEC,
    FAULT_F_READ,
    FAULT_F_WRITE,
    FAULT_R_DOMAIN,
    FAULT_R_MAPPING,
    FAULT_R_UNKNOWN,
    AttachReq,
    FaultEvent,
    MapReq,
    Status,
    describe_fault,
)
from sim import Simulator

Q35_BDFS = (0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB)
AHCI = 0xFA
READ, WRITE = 1, 2


def mapped_device() -> VirtioIommu:
    """AHCI attached to domain 1: 0x10000 read-only, 0x11000 write-only, nothing at 0x20000."""
    dev = VirtioIommu(Simulator(), MachineConfig(), endpoints=Q35_BDFS)
    for req in (AttachReq(1, AHCI), MapReq(1, 0x10000, 0x10FFF, 0x7000000, 1), MapReq(1, 0x11000, 0x11FFF, 0x8000000, 2)):
        assert dev.process_request(req.pack(), 4).status == Status.OK
    return dev


@pytest.mark.parametrize(("reason", "flags", "text"), [
    (FAULT_R_MAPPING, FAULT_F_ADDRESS, "page not mapped (VIRTIO_IOMMU_FAULT_R_MAPPING, flags ADDRESS)"),
    (FAULT_R_MAPPING, FAULT_F_WRITE | FAULT_F_ADDRESS,
     "write not permitted by the mapping (VIRTIO_IOMMU_FAULT_R_MAPPING, flags WRITE|ADDRESS)"),
    (FAULT_R_MAPPING, FAULT_F_READ | FAULT_F_ADDRESS,
     "read not permitted by the mapping (VIRTIO_IOMMU_FAULT_R_MAPPING, flags READ|ADDRESS)"),
    (FAULT_R_MAPPING, FAULT_F_READ | FAULT_F_WRITE | FAULT_F_EXEC,
     "read and write and exec not permitted by the mapping (VIRTIO_IOMMU_FAULT_R_MAPPING, flags READ|WRITE|EXEC)"),
    (FAULT_R_DOMAIN, FAULT_F_ADDRESS, "endpoint attached to no domain (VIRTIO_IOMMU_FAULT_R_DOMAIN, flags ADDRESS)"),
    (FAULT_R_UNKNOWN, 0, "unknown endpoint (VIRTIO_IOMMU_FAULT_R_UNKNOWN, flags none)"),
    (7, FAULT_F_ADDRESS, "fault of an unknown reason (reason 7, flags ADDRESS)"),
])
def test_describe_fault_names_the_reason_and_the_denied_access(reason: int, flags: int, text: str) -> None:
    """The words say unmapped vs not permitted; the spec's names of the reason and flags follow."""
    assert describe_fault(reason, flags) == text
    assert FaultEvent(reason, flags, AHCI, 0x1000).description == text


def test_unmapped_page_and_permission_miss_report_different_faults() -> None:
    """A DMA to no mapping and a write to a read-only mapping are both R_MAPPING, but their records
    (flags) and descriptions differ."""
    dev = mapped_device()
    unmapped = dev.translate(AHCI, 0x20000, WRITE)
    denied = dev.translate(AHCI, 0x10000, WRITE)
    assert unmapped.fault == FaultEvent(FAULT_R_MAPPING, FAULT_F_ADDRESS, AHCI, 0x20000)
    assert denied.fault == FaultEvent(FAULT_R_MAPPING, FAULT_F_WRITE | FAULT_F_ADDRESS, AHCI, 0x10000)
    assert unmapped.fault_description == "page not mapped (VIRTIO_IOMMU_FAULT_R_MAPPING, flags ADDRESS)"
    assert denied.fault_description == ("write not permitted by the mapping (VIRTIO_IOMMU_FAULT_R_MAPPING, "
                                        "flags WRITE|ADDRESS)")
    assert dev.translate(AHCI, 0x10000, READ).fault_description == ""


@pytest.mark.parametrize(("iova", "write", "message"), [
    (0x20000, False, "device read at IOVA 0x20000 faulted: virtio-iommu fault: page not mapped "
                     "(VIRTIO_IOMMU_FAULT_R_MAPPING, flags ADDRESS)"),
    (0x10000, True, "device write at IOVA 0x10000 faulted: virtio-iommu fault: write not permitted by the mapping "
                    "(VIRTIO_IOMMU_FAULT_R_MAPPING, flags WRITE|ADDRESS)"),
    (0x11000, False, "device read at IOVA 0x11000 faulted: virtio-iommu fault: read not permitted by the mapping "
                     "(VIRTIO_IOMMU_FAULT_R_MAPPING, flags READ|ADDRESS)"),
])
def test_dma_port_fault_says_whether_the_page_was_unmapped_or_the_access_not_permitted(
        iova: int, write: bool, message: str) -> None:
    """An emulated device's refused DMA names the fault in words (the scoreboards quote it)."""
    dev = mapped_device()
    port = ViommuDmaPort(None, dev, AHCI, "rogue", lambda: True)  # faults before any memory access
    with pytest.raises(DmaFault) as err:
        if write:
            port.dma_write(iova, b"x" * 8)
        else:
            port.dma_read(iova, 8)
    assert str(err.value) == message
