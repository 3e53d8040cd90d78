"""Device DMA ports: what a port counts."""

import pytest

from models import DirectDmaPort, DmaFault, GuestMemory
from models._dma import DmaPortStats

GIB = 1 << 30


def test_statistics_count_completed_accesses_and_their_bytes() -> None:
    """Two writes and a read (one across a page boundary) are counted; a refused access is not."""
    bus_master = [True]
    port = DirectDmaPort(GuestMemory(GIB), "test", lambda: bus_master[0])
    port.dma_write(0x1000, b"\x11" * 16)
    port.dma_write(0x1FF8, b"\x22" * 16)
    assert port.dma_read(0x1FF8, 16) == b"\x22" * 16
    bus_master[0] = False
    with pytest.raises(DmaFault):
        port.dma_read(0x1000, 8)
    assert port.statistics() == DmaPortStats(reads=1, writes=2, bytes=48)
