"""UNMAP semantics: the spec's seven examples in both flavours, and where the flavours differ."""

import pytest

from models import MachineConfig
from models._viommu import VirtioIommu
from models._viommu_wire import AttachReq, MapReq, Status, UnmapReq
from sim import ListSink, Simulator

AHCI = 0xFA

#: spec "UNMAP request" examples: (maps, unmap, expected status, mappings left)
SPEC_EXAMPLES = [
    ("1", [], (0, 4), Status.OK, []),
    ("2", [(0, 9)], (0, 9), Status.OK, []),
    ("3", [(0, 4), (5, 9)], (0, 9), Status.OK, []),
    ("4", [(0, 9)], (0, 4), Status.RANGE, [(0, 9)]),
    ("5", [(0, 4), (5, 9)], (0, 4), Status.OK, [(5, 9)]),
    ("6", [(0, 4)], (0, 9), Status.OK, []),
    ("7", [(0, 4), (10, 14)], (0, 14), Status.OK, []),
]


def make(flavor: str) -> VirtioIommu:
    dev = VirtioIommu(Simulator(), MachineConfig(flavor=flavor), endpoints=[AHCI])
    assert dev.process_request(AttachReq(1, AHCI).pack(), 4).status == Status.OK
    return dev


def run(dev: VirtioIommu, maps: list[tuple[int, int]], unmap: tuple[int, int], scale: int) -> Status | None:
    """Map then unmap; ``scale`` turns the examples' units into bytes (end inclusive)."""
    def rng(lo: int, hi: int) -> tuple[int, int]:
        return lo * scale, (hi + 1) * scale - 1

    for lo, hi in maps:
        s, e = rng(lo, hi)
        assert dev.process_request(MapReq(1, s, e, 0x100000 + s, 3).pack(), 4).status == Status.OK
    return dev.process_request(UnmapReq(1, *rng(*unmap)).pack(), 4).status


def left(dev: VirtioIommu, scale: int) -> list[tuple[int, int]]:
    return [(m.virt_start // scale, (m.virt_end + 1) // scale - 1) for m in dev.mappings(1)]


@pytest.mark.parametrize(("name", "maps", "unmap", "expected", "remaining"), SPEC_EXAMPLES, ids=[e[0] for e in SPEC_EXAMPLES])
def test_unmap_spec_example_in_qemu_flavour(name, maps, unmap, expected, remaining):
    """QEMU (and its qtest) runs the examples with byte addresses and gives the spec's answers."""
    dev = make("qemu")
    assert run(dev, maps, unmap, 1) == expected
    assert left(dev, 1) == remaining


@pytest.mark.parametrize(("name", "maps", "unmap", "expected", "remaining"), SPEC_EXAMPLES, ids=[e[0] for e in SPEC_EXAMPLES])
def test_unmap_spec_example_in_spec_flavour(name, maps, unmap, expected, remaining):
    """The spec flavour checks the 4 KiB granule, so the examples run in page units."""
    dev = make("spec")
    assert run(dev, maps, unmap, 0x1000) == expected
    assert left(dev, 0x1000) == remaining


def test_unmap_split_removes_lower_covered_mappings_first_in_qemu():
    """QEMU is not atomic: covered mappings met before the one it would split stay removed."""
    dev = make("qemu")
    assert run(dev, [(0, 4), (5, 9), (10, 20)], (0, 14), 1) == Status.RANGE
    assert left(dev, 1) == [(10, 20)]


def test_unmap_split_removes_nothing_in_spec():
    """Spec: RANGE and no mapping removed (the operation is atomic)."""
    dev = make("spec")
    assert run(dev, [(0, 4), (5, 9), (10, 20)], (0, 14), 0x1000) == Status.RANGE
    assert left(dev, 0x1000) == [(0, 4), (5, 9), (10, 20)]


def test_unmap_starting_inside_a_mapping_is_range_in_both_flavours():
    """The first address inside a mapping splits it: RANGE, mapping kept."""
    for flavor in ("qemu", "spec"):
        dev = make(flavor)
        assert run(dev, [(0, 9)], (5, 20), 0x1000) == Status.RANGE
        assert left(dev, 0x1000) == [(0, 9)]


def test_unmap_inverted_range_is_range_only_inside_one_mapping():
    """virt_end < virt_start matches (interval_cmp == 0) a mapping holding both ends: RANGE; else OK."""
    for flavor in ("qemu", "spec"):
        dev = make(flavor)
        run(dev, [(0, 9)], (20, 30), 0x1000)
        assert dev.process_request(UnmapReq(1, 0x5000, 0x3000).pack(), 4).status == Status.RANGE
        assert dev.process_request(UnmapReq(1, 0x20000, 0x10000).pack(), 4).status == Status.OK
        assert left(dev, 0x1000) == [(0, 9)]


def test_unmap_done_is_traced_once_per_removed_mapping_in_ascending_order():
    """virtio_iommu_unmap then one virtio_iommu_unmap_done per mapping, lowest first."""
    sink = ListSink()
    dev = VirtioIommu(Simulator(sinks=[sink]), MachineConfig(), endpoints=[AHCI])
    dev.process_request(AttachReq(1, AHCI).pack(), 4)
    for lo in (0x3000, 0x1000, 0x2000):
        dev.process_request(MapReq(1, lo, lo + 0xFFF, lo, 3).pack(), 4)
    sink.records.clear()
    assert dev.process_request(UnmapReq(1, 0, 0xFFFFF).pack(), 4).status == Status.OK
    assert [(r.event, r.fields.get("virt_start")) for r in sink.records] == [
        ("virtio_iommu_handle_unmap", None),
        ("virtio_iommu_unmap", 0),
        ("virtio_iommu_unmap_done", 0x1000),
        ("virtio_iommu_unmap_done", 0x2000),
        ("virtio_iommu_unmap_done", 0x3000),
        ("virtio_iommu_request_status", None),
    ]
