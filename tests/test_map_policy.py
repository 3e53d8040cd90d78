"""The MAP-submission policy plug-in: the built-ins are 6.7's and 6.8+'s behaviour, a user's class
decides per range and per map operation, and a bad reference is one line naming --map-batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import ConfigError, MachineConfig
from models.guest import BatchPerOperation, SyncPerRange
from viommu_sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
BOUNDED = f"{ROOT}/examples/policies/map_bounded.py:BoundedBatch8"
JOB = ["run", "--guest-kernel", "6.12", "--bs", "64k", "--contig-pages", "1", "--ios", "200", "--json"]


@pytest.mark.parametrize(("kernel", "batching", "expected"), [
    ("6.7", "auto", SyncPerRange), ("6.12", "auto", BatchPerOperation),
    ("6.7", "on", BatchPerOperation), ("6.12", "off", SyncPerRange),
])
def test_the_built_ins_follow_the_kernel_unless_overridden(staged_guest, kernel, batching, expected) -> None:
    g = staged_guest("viommu", guest_kernel=kernel, map_batching=batching)
    policy = g.viommu_driver.map_policy
    assert type(policy) is expected
    assert g.viommu_driver.has_iotlb_sync_map is (expected is BatchPerOperation)


def _kicks(capsys: pytest.CaptureFixture[str], batching: str) -> tuple[int, int, int]:
    assert main([*JOB, "--map-batching", batching]) == 0
    r = json.loads(capsys.readouterr().out)
    return r["kicks"], r["requests"]["MAP"], r["errors"]


def test_a_64k_io_of_16_ranges_kicks_once_batched_twice_bounded_and_16_times_per_range(capsys) -> None:
    """Every page on its own (contig_pages=1): each I/O maps 16 ranges.  Batched: one kick per I/O;
    the example bounded to 8 outstanding: the 8th and 16th ranges go synchronously, and their kicks
    carry the queued ones, so two per I/O; per range: 16.  (The lazy UNMAPs ride on those kicks; one
    more kick is the window's first sync.)"""
    assert _kicks(capsys, "on") == (201, 3201, 0)
    assert _kicks(capsys, BOUNDED) == (401, 3201, 0)
    assert _kicks(capsys, "off") == (3201, 3201, 0)


def test_a_bad_map_policy_reference_is_one_line_naming_the_option(tmp_path) -> None:
    bad = tmp_path / "p.py"
    bad.write_text("class NoSync:\n    api_version = 1\n    def map_range(self, c, i, s): return 'queue'\n"
                   "    def map_operation_done(self, c, i, s): return True\n")
    with pytest.raises(ConfigError, match=r"^--map-batching: policy '.*p\.py:NoSync': NoSync\.sync_map must be "
                                          r"True or False$"):
        MachineConfig(map_batching=f"{bad}:NoSync")
    with pytest.raises(ConfigError, match=r"^--map-batching: policy 'x\.py:Y': no such file 'x\.py'$"):
        MachineConfig(map_batching="x.py:Y")
    with pytest.raises(ConfigError, match=r"^--map-batching: invalid value 'sometimes' \(choose from on, off, auto\)$"):
        MachineConfig(map_batching="sometimes")
