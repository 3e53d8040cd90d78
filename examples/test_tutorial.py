"""Tutorial: three complete viommu-sim tests to copy and change.

Run them with ``python -m pytest examples/``.  Installing viommu-sim
registers its pytest plugin, which provides the ``sim`` and ``platform``
fixtures and the ``--viommu-seed`` option; nothing else needs configuring.

A ``@testbench.test`` body runs *inside* the simulation: it awaits the
kernel's triggers (``testbench.sleep``, ``Timer``, ``Event`` ...) and every
``timeout`` is simulated time, not wall-clock time.
"""

import testbench


# 1. Boot a machine and read the guest's kernel log.
@testbench.test(timeout=testbench.seconds(2))  # a boot takes about 1.2 s of simulated time
async def test_boot_brings_up_the_nvme_behind_the_viommu(platform):
    # platform(...) takes MachineConfig's options (smp, memory, nvme, iommu_policy,
    # guest_kernel, flavor, ...), builds that machine and boots the Linux-like guest on it.
    p = await platform(nvme="emulated", smp=2)
    # dmesg(pattern) returns the log lines that contain the pattern.
    assert "virtio_iommu virtio0: input address: 64 bits" in p.dmesg("virtio_iommu")
    assert "nvme nvme0: 2/0/0 default/read/poll queues" in p.dmesg("nvme nvme0")
    # The NVMe is attached to a vIOMMU domain: its DMA is translated from now on.
    assert p.machine.viommu.domain_of(0x20) is not None  # 0x20 = BDF 00:04.0


# 2. Watch the device with a Monitor while the guest reads a block.
NVME_READ = 0x02  # NVMe I/O opcode Read


@testbench.test(timeout=testbench.seconds(2))
@testbench.parametrize(iommu_policy=["lazy", "strict"])  # one test per value, named in the test id
async def test_nvme_read_dma_lands_in_a_page_the_guest_mapped_first(sim, platform, iommu_policy):
    p = await platform(nvme="emulated", iommu_policy=iommu_policy)
    # A Monitor collects the trace records models emit, from the moment it is created.
    # Here two of the device's events (QEMU's trace-event names): MAP requests, and the
    # results of translating the controller's DMA accesses, in one ordered list.
    seen = testbench.Monitor(sim, source="virtio-iommu", event=("virtio_iommu_map", "virtio_iommu_translate_out"))

    buf = p.kernel.mm.alloc_pages(0)  # one guest page to read into
    status = await p.nvme_driver.submit_io(0, NVME_READ, 1, 0, 8, buf)  # CPU 0, nsid 1, LBA 0, 8 blocks
    assert status == 0

    # The controller also fetched the command and posted the completion (queues mapped at
    # boot).  The read's data is the access translated onto our buffer, at some IOVA; a MAP
    # earlier in the trace must have mapped that IOVA device-writable (flags bit 1).
    records = [(r.event, r.fields) for r in seen.records]
    data = next(i for i, (ev, f) in enumerate(records) if ev.endswith("translate_out") and f["phys_addr"] == buf)
    iova = records[data][1]["virt_addr"]
    maps = [f for ev, f in records[:data] if ev == "virtio_iommu_map" and f["virt_start"] <= iova <= f["virt_end"]]
    assert len(maps) == 1 and maps[0]["flags"] & 2


# 3. Random stimulus that replays: draw it from sim.rng.
NVME_WRITE = 0x01


@testbench.test(timeout=testbench.seconds(3))
async def test_random_blocks_written_through_the_iommu_read_back_equal(sim, platform):
    p = await platform(nvme="vfio")  # the passed-through NVMe: DMA translated by the host IOMMU
    # sim.rng(name) is a random.Random seeded from the test's seed: the same draws on every
    # run, other draws under another --viommu-seed, and a failure prints the seed to replay it.
    rng = sim.rng("tutorial")
    memory, nvme = p.machine.memory, p.nvme_driver
    src, dst = p.kernel.mm.alloc_pages(0), p.kernel.mm.alloc_pages(0)
    for _ in range(5):
        lba = 8 * rng.randrange(1000)
        data = rng.randbytes(4096)
        memory.write(src, data)
        assert await nvme.submit_io(rng.randrange(4), NVME_WRITE, 1, lba, 8, src) == 0
        assert await nvme.submit_io(rng.randrange(4), NVME_READ, 1, lba, 8, dst) == 0
        assert memory.read(dst, 4096) == data
    # The host IOMMU never refused an access.
    assert p.machine.nvme_dma.faults == []
