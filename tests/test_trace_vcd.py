"""``--trace-format vcd``: a value change dump (pyvcd) of virtqueue indices, interrupt lines,
requests in flight and domain mapping counts, ``$timescale 1 ps`` (viommu_sim/_vcd.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from viommu_sim.cli import main


@pytest.fixture(scope="module")
def boot_vcd(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("vcd") / "boot.vcd"
    assert main(["boot", "--trace", str(out), "--trace-format", "vcd"]) == 0
    return out.read_text()


def _parse(text: str) -> tuple[dict[str, str], list[tuple[int, list[tuple[str, str]]]]]:
    """(signal path -> id code, [(time, [(id code, value)])]) of a VCD's body."""
    ids: dict[str, str] = {}
    scope: list[str] = []
    for m in re.finditer(r"\$scope module (\S+) \$end|\$upscope \$end|\$var \S+ \d+ (\S+) (\S+) \$end", text):
        if m.group(1):
            scope.append(m.group(1))
        elif m.group(2):
            ids[".".join([*scope, m.group(3)])] = m.group(2)
        else:
            scope.pop()
    body = text.split("$enddefinitions $end", 1)[1]
    steps: list[tuple[int, list[tuple[str, str]]]] = []
    for line in body.split("\n"):
        line = line.strip()
        if line.startswith("#"):
            steps.append((int(line[1:]), []))
        elif line and not line.startswith("$") and steps:
            value, code = (line[1:].split(" ") if line[0] == "b" else (line[0], line[1:]))
            steps[-1][1].append((code, value))
    return ids, steps


def test_vcd_has_its_timescale_declarations_and_ascending_time_stamps(boot_vcd: str) -> None:
    assert "$timescale 1 ps $end" in boot_vcd
    ids, steps = _parse(boot_vcd)
    assert {"virtio.virtio_iommu_pci.q0.avail_idx", "virtio.virtio_iommu_pci.q0.used_idx",
            "virtio.virtio_iommu_pci.q0.last_avail_idx", "virtio.virtio_iommu_pci.q0.in_flight",
            "irq.intx_gsi23", "irq.msi_nvme_v33", "nvme.sq0_in_flight",
            "virtio_iommu.domain0_mappings", "virtio_iommu.domain1_mappings"} <= set(ids)
    times = [t for t, _ in steps]
    assert times[0] == 0 and times == sorted(times) and len(set(times)) == len(times)
    assert "$date simulated time (viommu-sim) $end" in boot_vcd  # no wall clock: equal runs, equal files


def test_vcd_first_values_of_a_boot_are_the_first_probe_request(boot_vcd: str, tmp_path: Path) -> None:
    """The first PROBE: popped (avail 1, one in flight), used with INTx raised, the line lowered when
    the driver reads the ISR; the first MAP gives domain 0 (ahci's) one mapping.  The times are the
    records' own, read from a JSONL trace of the same boot."""
    jsonl = tmp_path / "boot.jsonl"
    assert main(["boot", "--trace", str(jsonl), "--trace-events", "virtqueue_*", "--trace-events", "intx",
                 "--trace-events", "virtio_iommu_map"]) == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pop, flush = (next(r["t"] for r in records if r["ev"] == ev) for ev in ("virtqueue_pop", "virtqueue_flush"))
    raised, lowered = [r["t"] for r in records if r["ev"] == "intx"][:2]
    first_map = next(r["t"] for r in records if r["ev"] == "virtio_iommu_map" and r["domain_id"] == 0)
    ids, steps = _parse(boot_vcd)
    q = "virtio.virtio_iommu_pci.q0."
    name = {code: path for path, code in ids.items()}
    changes = [(t, name[c], v) for t, vs in steps[1:] for c, v in vs]
    assert changes[:7] == [
        (pop, q + "avail_idx", "1"), (pop, q + "last_avail_idx", "1"), (pop, q + "in_flight", "1"),
        (flush, q + "used_idx", "1"), (flush, q + "in_flight", "0"),
        (raised, "irq.intx_gsi23", "1"), (lowered, "irq.intx_gsi23", "0"),
    ]
    assert pop < flush <= raised < lowered
    assert next((t, v) for t, p, v in changes if p == "virtio_iommu.domain0_mappings") == (first_map, "1")


def test_vcd_of_the_same_run_is_byte_identical(boot_vcd: str, tmp_path: Path) -> None:
    again = tmp_path / "again.vcd"
    assert main(["boot", "--trace", str(again), "--trace-format", "vcd"]) == 0
    assert again.read_text() == boot_vcd
