"""request_lock on several vCPUs: a test-and-set spinlock, so a CPU's sync follows its own add."""

from __future__ import annotations

from viommu_sim._workload import run_scenario

STRICT_64K = {"rw": "randwrite", "bs": "64k", "numjobs": 16, "iodepth": 16, "ios": 600}


def test_four_vcpus_pay_a_round_trip_for_every_strict_unmap() -> None:
    """viommu_unmap_pages' add and viommu_iotlb_sync's sync are two lock sections; the unfair lock goes
    back to the CPU that just left it, so no other CPU's kick carries the UNMAP: every MAP and every
    UNMAP sync kicks, as with one vCPU (the strict/lazy gap of the published table)."""
    r = run_scenario({"smp": 4, "guest_kernel": "6.12", "iommu_policy": "strict", "map_batching": "off"}, STRICT_64K)
    assert (r["kicks"], r["requests"]["MAP"], r["requests"]["UNMAP"]) == (1844, 1244, 600)
