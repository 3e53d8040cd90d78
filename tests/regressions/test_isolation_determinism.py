"""Determinism under faults (issue #17): same seed + same injected faults => byte-identical JSONL trace.

The workload drives the VFIO machine through the raw virtio-iommu driver with every
testbench fault at once: used-buffer interrupts delayed (``UsedIrqFault``), host
``VFIO_IOMMU_MAP_DMA`` failing (``fail_host_maps``) and rogue DMA by the e1000e through the
vIOMMU (``endpoint_dma_port``), plus the qemu flavour's escapes and the requests a hostile
guest sends (an alias endpoint, a wrapping MAP).  Run twice in this process and in
subprocesses under PYTHONHASHSEED 0 and 1, as tests/sim/test_determinism.py does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from sim import JsonlSink, Simulator, us


def _workload(path: str, seed: int) -> None:
    from testbench import UsedIrqFault, attempt_dma, enable_bus_master, endpoint_dma_port, fail_host_maps
    from staging import raw_machine, raw_send, run_task

    sink = JsonlSink(path)
    sim = Simulator(seed=seed, sinks=[sink])

    async def body() -> None:
        machine, driver = await raw_machine(sim, nvme="vfio")
        rng = sim.rng("faults")
        with UsedIrqFault(sim, machine.transport, mode="delay", delay=us(3), limit=4):
            await raw_send(driver, "attach", domain=1, endpoint=0x20)
            await raw_send(driver, "attach", domain=2, endpoint=0x10)
            await raw_send(driver, "attach", domain=2, endpoint=0x10020)
            with fail_host_maps(machine.host):
                await raw_send(driver, "map", domain=1, virt_start=0, virt_end=0x3FFF, phys_start=0x400000, flags=3)
            for k in range(6):
                page = rng.randrange(16)
                await raw_send(driver, "map", domain=rng.choice([1, 2]), virt_start=page << 12,
                               virt_end=(page << 12) + rng.choice([0x7FF, 0xFFF, 0x1FFF]),
                               phys_start=rng.choice([0x500000 + (k << 12), (1 << 64) - 0x1000]), flags=3)
        enable_bus_master(machine, 0x10)
        enable_bus_master(machine, 0x20)
        rogue = endpoint_dma_port(machine, 0x10)
        for _ in range(20):
            iova = rng.randrange(20) << 12 | rng.choice([0, 0x800])
            if rng.random() < 0.5:
                attempt_dma(rogue, iova, write=rng.randbytes(rng.choice([8, 4096])))
            else:
                attempt_dma(rogue, iova, read=8)
            attempt_dma(machine.nvme_dma, iova, read=8)

    try:
        run_task(sim, body())
    finally:
        sink.close()


def _run(tmp_path: Path, hashseed: int, seed: int = 7) -> bytes:
    out = tmp_path / f"faults-{hashseed}-{seed}.jsonl"
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    tests = Path(__file__).resolve().parents[1]
    code = ("import sys, testbench, importlib.util as u; sys.path.append(sys.argv[1]); "
            "spec = u.spec_from_file_location('faults_workload', sys.argv[2]); m = u.module_from_spec(spec); "
            "spec.loader.exec_module(m); m._workload(sys.argv[3], int(sys.argv[4]))")
    subprocess.run([sys.executable, "-c", code, str(tests), __file__, str(out), str(seed)], check=True, env=env,
                   timeout=300, cwd=tests.parent)
    return out.read_bytes()


def test_same_seed_and_faults_give_a_byte_identical_trace_in_process(tmp_path):
    """Two runs in this process: one trace, and it shows each injected fault and the escapes."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _workload(str(a), 7)
    _workload(str(b), 7)
    trace = a.read_bytes()
    assert trace == b.read_bytes()
    for event in (b'"vfio_container_dma_map"', b'"error_report"', b'"dma_access"', b'"dma_escape"',
                  b'"virtio_iommu_map_phys_wrap"', b'"virtio_iommu_report_fault"'):
        assert event in trace, event


def test_same_seed_and_faults_give_a_byte_identical_trace_across_hash_seeds(tmp_path):
    """Subprocesses under PYTHONHASHSEED 0 and 1 write the same bytes; another seed writes others."""
    traces = [_run(tmp_path, h) for h in (0, 1)]
    assert len({hashlib.sha256(t).hexdigest() for t in traces}) == 1
    assert _run(tmp_path, 0, seed=8) != traces[0]
