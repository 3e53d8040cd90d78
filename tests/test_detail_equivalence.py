"""Issue 12's two levels of detail give the same results: ``run --json`` under ``detail`` full and fast.

The transaction-level path (models/_virtq_direct.py, ARCHITECTURE.md "Levels of detail") hands the
virtio-iommu requests over as objects; every decision and every simulated delay is the byte-level
path's.  These tests run the same machine, job and seed at both levels over a matrix that varies
every factor the two paths could disagree on (16 rows of a two-level orthogonal array over policy,
guest kernel, vIOMMU on/none, emulated/passed-through NVMe, block size, iodepth, direction, plus the
device's flavour and request order, the flush queue and MAP batching), and compare the results as
JSON text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from models import build_machine, machine_config
from models.guest import boot
from sim import Simulator
from viommu_sim._workload import run_scenario

#: a 16-run two-level orthogonal array (columns: any two of them take all four combinations equally often)
_L16 = [
    (0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 1, 1, 1, 1), (0, 1, 1, 0, 0, 1, 1), (0, 1, 1, 1, 1, 0, 0),
    (1, 0, 1, 0, 1, 0, 1), (1, 0, 1, 1, 0, 1, 0), (1, 1, 0, 0, 1, 1, 0), (1, 1, 0, 1, 0, 0, 1),
    (0, 0, 1, 0, 1, 1, 0), (0, 0, 1, 1, 0, 0, 1), (0, 1, 0, 0, 1, 0, 1), (0, 1, 0, 1, 0, 1, 0),
    (1, 0, 0, 0, 0, 1, 1), (1, 0, 0, 1, 1, 0, 0), (1, 1, 1, 0, 0, 0, 0), (1, 1, 1, 1, 1, 1, 1),
]
_LEVELS = {
    "iommu_policy": ("strict", "lazy"), "guest_kernel": ("6.7", "6.12"), "viommu": ("on", "none"),
    "nvme": ("vfio", "emulated"), "bs": ("4k", "64k"), "iodepth": (1, 32), "rw": ("randread", "randwrite"),
}
#: the device's and the guest's other choices, one per row in turn
_EXTRAS: list[dict[str, Any]] = [
    {}, {"flavor": "spec"}, {"request_order": "batch-complete"}, {"flush_queue": "single"},
    {"map_batching": "off"}, {"request_order": "reverse"}, {"flavor": "crosvm"}, {"smp": 2},
]


def _matrix() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rows = []
    for n, levels in enumerate(_L16):
        chosen = {name: values[level] for (name, values), level in zip(_LEVELS.items(), levels)}
        machine = {k: chosen[k] for k in ("iommu_policy", "guest_kernel", "viommu", "nvme")} | _EXTRAS[n % 8]
        machine["seed"] = n
        job = {"rw": chosen["rw"], "bs": chosen["bs"], "iodepth": chosen["iodepth"], "numjobs": 2, "ios": 120}
        rows.append((machine, job))
    return rows


@pytest.mark.parametrize(("machine", "job"), _matrix(), ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_run_results_are_identical_at_the_full_and_the_fast_level(machine: dict[str, Any], job: dict[str, Any]) -> None:
    full = json.dumps(run_scenario({**machine, "detail": "full"}, job), sort_keys=True)
    fast = json.dumps(run_scenario({**machine, "detail": "fast"}, job), sort_keys=True)
    assert fast == full


def test_the_fast_level_hands_the_request_ring_over_and_the_full_level_keeps_it_in_memory() -> None:
    """At ``fast`` the device's request queue is the driver's DirectRing; at ``full`` a byte-level ring."""
    kinds = {}
    for detail in ("full", "fast"):
        sim = Simulator(seed=0)
        hw = build_machine(machine_config({"detail": detail}), sim)
        task = sim.spawn(boot(hw), name="boot")
        sim.run_sync(until=task)
        kernel = task.result()
        queue = kernel.boot.viommu.requestq
        kinds[detail] = (type(queue).__name__, sorted(type(r).__name__ for r in hw.memory.direct_rings.values()))
    assert kinds == {"full": ("DriverQueue", []), "fast": ("DirectDriverQueue", ["DirectRing"])}


def test_run_json_is_byte_identical_under_detail_full_and_fast_on_the_command_line() -> None:
    """The CLI's own output, as a user compares it (``run --json --detail full|fast``)."""
    args = [sys.executable, "-m", "viommu_sim.cli", "run", "--guest-kernel", "6.12", "--iodepth", "8", "--numjobs",
            "2", "--ios", "200", "--seed", "3", "--json"]
    full = subprocess.run([*args, "--detail", "full"], capture_output=True, check=True).stdout
    fast = subprocess.run([*args, "--detail", "fast"], capture_output=True, check=True).stdout
    default = subprocess.run(args, capture_output=True, check=True).stdout
    assert full == fast == default and b'"iops"' in full and b"detail" not in full


_REPLAY = "\n".join([
    '{"op": "attach", "domain": 1, "endpoint": 32}', '{"op": "probe", "endpoint": 32}',
    '{"op": "map", "domain": 1, "virt_start": "0x1000", "virt_end": "0x1fff", "phys_start": 0, "flags": 3}',
    '{"op": "map", "domain": 1, "virt_start": 4096, "virt_end": 8191, "phys_start": 0, "flags": 3}',
    '{"op": "unmap", "domain": 1, "virt_start": 0, "virt_end": 4095}',
    '{"op": "detach", "domain": 1, "endpoint": 32}', '{"op": "unmap", "domain": 9, "virt_start": 0, "virt_end": 1}',
]) + "\n"


@pytest.mark.parametrize("flavor", ["qemu", "spec"])
def test_replay_prints_and_traces_the_same_at_the_full_and_the_fast_level(tmp_path: Any, flavor: str) -> None:
    """The raw driver's transaction-level ring: same statuses, same final state, same trace."""
    path = tmp_path / "in.jsonl"
    path.write_text(_REPLAY)
    outputs = {}
    for detail in ("full", "fast"):
        trace = tmp_path / f"{detail}.jsonl"
        proc = subprocess.run([sys.executable, "-m", "viommu_sim.cli", "replay", str(path), "--flavor", flavor,
                               "--dump-state", "--detail", detail, "--trace", str(trace)],
                              capture_output=True, check=True)
        outputs[detail] = (proc.stdout, trace.read_bytes())
    assert outputs["fast"] == outputs["full"]
    assert outputs["full"][0].count(b'"status"') == 7 and b"virtqueue_pop" in outputs["full"][1]
