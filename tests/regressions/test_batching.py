"""Request batching: Linux 6.8+ queues MAPs and lazy UNMAPs so one NVMe I/O costs one kick, not two."""

import pytest

import testbench
from testbench import ms, sleep, us

READ = 0x02
IOS = 16


async def kicks_per_io(sim, platform, **options):
    policy = options.get("iommu_policy", "lazy")
    testbench.sample_request_coverage(sim, policy)
    p = await platform(nvme="emulated", **options)
    kicks = []
    mon = testbench.Monitor(sim, source="virtio-iommu-pci", event="virtio_pci_notify_write")
    mon.add_callback(lambda rec: kicks.append(rec.time))
    buf = p.kernel.mm.alloc_pages(0)
    start = len(kicks)
    for i in range(IOS):
        assert await p.nvme_driver.submit_io(1, READ, 1, 8 * i, 8, buf) == 0
    return (len(kicks) - start) / IOS


@testbench.test
@testbench.parametrize(kernel=["6.7", "6.12"], policy=["strict", "lazy"])
async def test_kicks_per_io_follow_the_kernels_batching(sim, platform, kernel, policy):
    """6.7 (always strict for virtio-iommu) and 6.12 strict kick twice per I/O (MAP, UNMAP); 6.12 lazy kicks once:
    the UNMAP rides on the next MAP's iotlb_sync_map kick."""
    got = await kicks_per_io(sim, platform, guest_kernel=kernel, iommu_policy=policy)
    expected = 1.0 if (kernel, policy) == ("6.12", "lazy") else 2.0
    assert got == pytest.approx(expected, abs=1 / IOS)


@testbench.test
async def test_lazy_unmaps_left_at_the_end_are_flushed_by_the_flush_queue_timer(sim, platform):
    """After the last 6.12 lazy I/O, its queued UNMAP reaches the device when the 10 ms flush-queue timer fires
    (plus the flush's own kick: 100 us of slack)."""
    p = await platform(nvme="emulated", guest_kernel="6.12", iommu_policy="lazy")
    unmaps = testbench.Monitor(sim, source="virtio-iommu", event="virtio_iommu_unmap")
    buf = p.kernel.mm.alloc_pages(0)
    assert await p.nvme_driver.submit_io(1, READ, 1, 0, 8, buf) == 0
    done = sim.now
    before = len(unmaps.records)
    await sleep(ms(11))
    late = unmaps.records[before:]
    assert late and all(ms(10) <= r.time - done <= ms(10) + us(100) for r in late), (done, [r.time for r in late])
