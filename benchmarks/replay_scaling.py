"""Request cost against the number of live mappings, through the full stack.

For N = 10^3 and 10^5: ATTACH the VFIO-backed NVMe (endpoint 00:04.0), MAP N
disjoint 4 KiB pages, then UNMAP them, every request through guest memory, the
split virtqueue, the notify BAR, the virtio-iommu device, the IOMMU notifiers
and the host VFIO container.  Prints requests per wall second for each N, the
memory per live mapping (tracemalloc, device + host tables while all N are
mapped), and, last, ``per-request cost ratio 1e5/1e3: X.XX`` (target <= 1.5:
cost grows with log n, not n).
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import trio

from models import MachineConfig, build_machine
from models.guest import ReplayRequest, encode_request, raw_viommu_platform, writable_size
from sim import Simulator

PAGE = 4096
BASE_IOVA = 1 << 32
BASE_PHYS = 0x1_0000_0000
NVME = 0x20


def run(n: int, measure_memory: bool = False) -> tuple[float, float | None]:
    sim = Simulator()
    machine = build_machine(MachineConfig(), sim)
    result: dict[str, float] = {}

    async def main() -> None:
        drv = await raw_viommu_platform(machine)
        attach = ReplayRequest("attach", domain=1, endpoint=NVME)
        done = await drv.submit(encode_request(attach), writable_size(attach))
        assert done.status == 0, done
        maps = [ReplayRequest("map", domain=1, virt_start=BASE_IOVA + i * PAGE, virt_end=BASE_IOVA + i * PAGE + PAGE - 1,
                              phys_start=BASE_PHYS + i * PAGE, flags=3) for i in range(n)]
        unmaps = [ReplayRequest("unmap", domain=1, virt_start=m.virt_start, virt_end=m.virt_end) for m in maps]
        wlen = writable_size(maps[0])
        gc.collect()
        if measure_memory:
            tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0] if measure_memory else 0
        t0 = time.perf_counter()
        for m in maps:
            assert (await drv.submit(encode_request(m), wlen)).status == 0
        if measure_memory:
            result["mem"] = (tracemalloc.get_traced_memory()[0] - base) / n
            tracemalloc.stop()
        for u in unmaps:
            assert (await drv.submit(encode_request(u), wlen)).status == 0
        result["wall"] = time.perf_counter() - t0

    task = sim.spawn(main(), name="bench")
    trio.run(sim.run, task)
    assert not machine.viommu.mappings(1)
    return 2 * n / result["wall"], result.get("mem")


def main() -> None:
    small, _ = run(1_000)
    large, _ = run(100_000)
    _, mem = run(10_000, measure_memory=True)
    print(f"N=1000:   {small:,.0f} requests/s (MAP+UNMAP through guest memory, virtqueue, notify BAR, device, VFIO)")
    print(f"N=100000: {large:,.0f} requests/s")
    print(f"memory per live mapping (device + host tables, N=10000): {mem:,.0f} bytes")
    print(f"per-request cost ratio 1e5/1e3: {small / large:.2f}")


if __name__ == "__main__":
    main()
