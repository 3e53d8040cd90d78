"""The example policies through ``testbench.check_policy`` and ``viommu-sim run``: Deferred1ms passes and
frees each IOVA at most one deadline (plus one flush) after its unmap; FreeOnUnmap fails on use-after-unmap."""

import json
from pathlib import Path

import testbench
from testbench import INVALIDATION_SLACK_PS
from viommu_sim.cli import main

HERE = Path(__file__).resolve().parent
DEFERRED = f"{HERE}/deferred.py:Deferred1ms"
BROKEN = f"{HERE}/broken.py:FreeOnUnmap"


def test_deferred_1ms_passes_and_releases_each_iova_one_deadline_and_one_flush_after_its_unmap():
    report = testbench.check_policy(DEFERRED)
    assert report.ok, report.lines()
    assert report.stale_bound_ps == testbench.ms(1)
    # the IOVA queued when the timer was armed waits the whole 1 ms, then the flush's round trip
    # (kick, the device's UNMAPs, the used-ring wait; 7.3 us with the default cost model) before it is freed
    assert testbench.ms(1) < report.max_release_ps <= testbench.ms(1) + INVALIDATION_SLACK_PS
    assert report.max_stale_window_ps <= testbench.ms(1) + INVALIDATION_SLACK_PS


def test_deferred_1ms_in_run_flushes_every_millisecond_and_its_unmaps_ride_on_the_next_kick(capsys):
    """Under a busy job the device sees each UNMAP with the next I/O's MAP kick (10.55 us), not after 1 ms:
    virtio-iommu's viommu_unmap_pages queues the UNMAP, and any later request's kick carries it."""
    assert main(["run", "--json", "--guest-kernel", "6.12", "--iommu-policy", DEFERRED]) == 0
    result = json.loads(capsys.readouterr().out)
    sim_ms = result["sim_time_s"] * 1e3
    assert sim_ms - 4 <= result["iotlb_flushes"] <= sim_ms + 1  # the timer re-arms at the first unmap after a flush
    assert result["stale_window_us"]["max"] < 20  # the next I/O's kick, far below the 1 ms deadline
    # the policy's own window: each IOVA waits for the flush at its 1 ms deadline (plus that flush)
    assert 1000 <= result["invalidation_window_us"]["max"] < 1020
    assert result["machine"]["iommu_policy"] == DEFERRED


def test_free_on_unmap_fails_use_after_unmap_and_only_that():
    report = testbench.check_policy(BROKEN, smps=(1,), seeds=(0,))
    assert [v.name for v in report.verdicts if not v.ok] == ["use-after-unmap"]
    counterexample = report.verdict("use-after-unmap").counterexample
    assert counterexample is not None
    assert counterexample.startswith("IOVA 0xffffd000 in domain 1 freed for reuse on CPU 0 at t=")
    assert counterexample.endswith("had not completed at the device")
