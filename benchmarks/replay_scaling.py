"""Request cost against the number of live mappings, through the full stack.

For N = 10^3 and 10^5: ATTACH the VFIO-backed NVMe (endpoint 00:04.0), MAP N
disjoint 4 KiB pages, then UNMAP them, every request through guest memory, the
split virtqueue, the notify BAR, the virtio-iommu device, the IOMMU notifiers
and the host VFIO container.  Prints requests per wall second for each N, the
memory per live mapping (tracemalloc, device + host tables while all N are
mapped), each N's CPU per request in the unit of issue 12 (the CPU of one SimPy timer
wake-up, measured in this process on ``benchmarks/kernel_vs_simpy.py``'s workload), and, last,
``per-request cost ratio 1e5/1e3: X.XX`` (target <= 1.5: cost grows with log n, not n).

    python benchmarks/replay_scaling.py                        # N = 1,000 and 100,000
    python benchmarks/replay_scaling.py --small 100 --large 1000   # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import trio

from models import MachineConfig, build_machine
from models.guest import ReplayRequest, encode_request, raw_viommu_platform, writable_size
from sim import Simulator

PAGE = 4096
BASE_IOVA = 1 << 32
BASE_PHYS = 0x1_0000_0000
NVME = 0x20


def run(n: int, measure_memory: bool = False) -> tuple[float, float | None, float]:
    """(requests per wall second, bytes per live mapping or None, CPU seconds per request) for N."""
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
        t0, c0 = time.perf_counter(), time.process_time()
        for m in maps:
            assert (await drv.submit(encode_request(m), wlen)).status == 0
        if measure_memory:
            result["mem"] = (tracemalloc.get_traced_memory()[0] - base) / n
            tracemalloc.stop()
        for u in unmaps:
            assert (await drv.submit(encode_request(u), wlen)).status == 0
        result["wall"] = time.perf_counter() - t0
        result["cpu"] = time.process_time() - c0

    task = sim.spawn(main(), name="bench")
    trio.run(sim.run, task)
    assert machine.viommu is not None and not machine.viommu.mappings(1)
    return 2 * n / result["wall"], result.get("mem"), result["cpu"] / (2 * n)


def simpy_wakeup_cpu() -> float:
    """CPU seconds of one SimPy timer wake-up (``kernel_vs_simpy.simpy_wakeup_cpu``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kernel_vs_simpy import simpy_wakeup_cpu as measure

    return measure()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--small", type=int, default=1_000, help="the smaller N (default 1,000)")
    ap.add_argument("--large", type=int, default=100_000, help="the larger N (default 100,000)")
    args = ap.parse_args()
    unit = simpy_wakeup_cpu()
    small, _, cpu_small = run(args.small)
    large, _, cpu_large = run(args.large)
    _, mem, _ = run(min(10_000, args.large), measure_memory=True)
    print(f"unit: one SimPy timer wake-up = {unit * 1e6:.3f} us CPU (this process)")
    print(f"N={args.small}: {small:,.0f} requests/s, {cpu_small / unit:.0f} SimPy wake-ups of CPU per request "
          f"(MAP+UNMAP through guest memory, virtqueue, notify BAR, device, VFIO)")
    print(f"N={args.large}: {large:,.0f} requests/s, {cpu_large / unit:.0f} SimPy wake-ups of CPU per request")
    print(f"memory per live mapping (device + host tables, N={min(10_000, args.large)}): {mem:,.0f} bytes")
    ns = "1e5/1e3" if (args.small, args.large) == (1_000, 100_000) else f"{args.large}/{args.small}"
    print(f"per-request cost ratio {ns}: {small / large:.2f}")


if __name__ == "__main__":
    main()
