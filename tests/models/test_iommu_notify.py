"""IOMMU notifiers: power-of-two chunking, dispatch, cropping, replay and the device's fan-out."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import MachineConfig
from models._iommu_notify import (
    IOTLB_EVENTS,
    IommuMemoryRegion,
    IommuNotifier,
    NotifierFlag,
    NotifierRefused,
    TlbEntry,
    TlbEvent,
    aligned_pow2_mask,
    notify_one,
    pow2_chunks,
)
from models._viommu import VirtioIommu
from models._viommu_wire import AttachReq, DetachReq, MapReq, Status, UnmapReq
from sim import ListSink, Simulator

U64 = (1 << 64) - 1
AHCI, SMBUS = 0xFA, 0xFB


@pytest.mark.parametrize(
    ("start", "end", "chunks"),
    [
        (0x1000, 0x4FFF, [(0x1000, 0xFFF), (0x2000, 0x1FFF), (0x4000, 0xFFF)]),
        (0x3000, 0x10FFF, [(0x3000, 0xFFF), (0x4000, 0x3FFF), (0x8000, 0x7FFF), (0x10000, 0xFFF)]),
        (0x0, 0x9, [(0x0, 0x7), (0x8, 0x1)]),
        (0x0, 0x1000, [(0x0, 0xFFF), (0x1000, 0x0)]),
        (0xFFF7B000, 0xFFF7BFFF, [(0xFFF7B000, 0xFFF)]),  # the seed's MAP
        (0xFFFE0000, 0xFFFEFFFF, [(0xFFFE0000, 0xFFFF)]),
        (0xFFFF0000, 0xFFFF5FFF, [(0xFFFF0000, 0x3FFF), (0xFFFF4000, 0x1FFF)]),
        (0x0, U64, [(0x0, U64)]),
        (1 << 63, U64, [(1 << 63, (1 << 63) - 1)]),
        (0x5, 0x5, [(0x5, 0x0)]),
    ],
)
def test_pow2_chunks_match_virtio_iommu_notify_map_unmap(start, end, chunks):
    """Each chunk is the largest naturally aligned power of two at its start (dma_aligned_pow2_mask)."""
    assert pow2_chunks(start, end) == chunks


def test_aligned_pow2_mask_honours_max_addr_bits():
    """Start 0 aligns to the address width; sizes round down to a power of two."""
    assert aligned_pow2_mask(0, U64) == U64
    assert aligned_pow2_mask(0, 0x2FFF) == 0x1FFF
    assert aligned_pow2_mask(0, U64, 48) == (1 << 48) - 1
    assert aligned_pow2_mask(0x1000, 0x100000, 64) == 0xFFF


@given(st.integers(0, U64), st.integers(0, U64))
def test_pow2_chunks_tile_the_range_with_aligned_powers_of_two(a, b):
    """Chunks are contiguous, cover [start, end] exactly, are naturally aligned, at most 128."""
    start, end = min(a, b), max(a, b)
    chunks = pow2_chunks(start, end)
    assert len(chunks) <= 128
    pos = start
    for iova, mask in chunks:
        assert iova == pos
        assert mask & (mask + 1) == 0
        assert iova & mask == 0
        pos = iova + mask + 1
    assert pos == end + 1


class Recorder:
    """A notifier callback that records what it receives and charges a fixed cost."""

    def __init__(self, cost: int = 7) -> None:
        self.cost = cost
        self.seen: list[tuple[int, int, int, int]] = []

    def __call__(self, notifier: IommuNotifier, entry: TlbEntry) -> int:
        self.seen.append((entry.iova, entry.addr_mask, entry.translated_addr, entry.perm))
        return self.cost


def test_notify_one_crops_to_the_notifier_range():
    """An event crossing the notifier's range reaches it cropped; translated_addr is not adjusted."""
    rec = Recorder()
    n = IommuNotifier("n", IOTLB_EVENTS, rec, start=0x2000, end=0x2FFF)
    assert notify_one(n, TlbEvent(NotifierFlag.MAP, TlbEntry(iova=0x0, translated_addr=0x9000, addr_mask=0x3FFF, perm=3))) == 7
    assert notify_one(n, TlbEvent(NotifierFlag.MAP, TlbEntry(iova=0x4000, translated_addr=0x9000, addr_mask=0xFFF, perm=3))) == 0
    assert rec.seen == [(0x2000, 0xFFF, 0x9000, 3)]


def test_notify_one_filters_on_event_type():
    """An UNMAP-only notifier never sees MAP events."""
    rec = Recorder()
    n = IommuNotifier("n", NotifierFlag.UNMAP, rec)
    notify_one(n, TlbEvent(NotifierFlag.MAP, TlbEntry(iova=0, translated_addr=0, addr_mask=0xFFF, perm=1)))
    notify_one(n, TlbEvent(NotifierFlag.UNMAP, TlbEntry(iova=0, translated_addr=0, addr_mask=0xFFF, perm=0)))
    assert rec.seen == [(0, 0xFFF, 0, 0)]


def test_region_notify_calls_newest_notifier_first_and_sums_costs():
    """memory_region_notify_iommu walks the list head first (registration inserts at the head)."""
    order: list[str] = []
    mr = IommuMemoryRegion("mr")
    for name, cost in (("old", 3), ("new", 4)):
        mr.register_notifier(IommuNotifier(name, IOTLB_EVENTS, lambda n, e, c=cost: order.append(n.name) or c))
    assert mr.notify(TlbEvent(NotifierFlag.MAP, TlbEntry(iova=0, translated_addr=0, addr_mask=0xFFF, perm=1))) == 7
    assert order == ["new", "old"]


def test_region_notify_range_advances_translated_addr_for_map_only():
    """MAP chunks carry phys_start + offset; UNMAP chunks carry 0 and perm NONE."""
    rec = Recorder()
    mr = IommuMemoryRegion("mr")
    mr.register_notifier(IommuNotifier("n", IOTLB_EVENTS, rec))
    assert mr.notify_range(NotifierFlag.MAP, 0x1000, 0x4FFF, 0xA1000, 2) == 21
    mr.notify_range(NotifierFlag.UNMAP, 0x1000, 0x4FFF, 0, 0)
    assert rec.seen == [
        (0x1000, 0xFFF, 0xA1000, 2), (0x2000, 0x1FFF, 0xA2000, 2), (0x4000, 0xFFF, 0xA4000, 2),
        (0x1000, 0xFFF, 0, 0), (0x2000, 0x1FFF, 0, 0), (0x4000, 0xFFF, 0, 0),
    ]


# -- the device side ----------------------------------------------------------------------------


def device() -> tuple[VirtioIommu, ListSink]:
    sink = ListSink()
    dev = VirtioIommu(Simulator(sinks=[sink]), MachineConfig(), endpoints=[AHCI, SMBUS])
    return dev, sink


def req(dev: VirtioIommu, r: object) -> Status | None:
    return dev.process_request(r.pack(), 4).status  # type: ignore[attr-defined]


def test_registration_replays_existing_mappings_ascending_to_every_notifier_of_the_region():
    """virtio_iommu_replay: remap trace + MAP per mapping, to all notifiers of the MR, not just the new one."""
    dev, sink = device()
    req(dev, AttachReq(1, AHCI))
    for lo in (0x5000, 0x1000, 0x3000):
        req(dev, MapReq(1, lo, lo + 0x1FFF, lo << 4, 3))
    first, second = Recorder(), Recorder()
    mr = dev.devices[AHCI].mr
    mr.register_notifier(IommuNotifier("first", IOTLB_EVENTS, first))
    sink.records.clear()
    mr.register_notifier(IommuNotifier("second", IOTLB_EVENTS, second))
    expected = [(0x1000, 0xFFF, 0x10000, 3), (0x2000, 0xFFF, 0x11000, 3), (0x3000, 0xFFF, 0x30000, 3),
                (0x4000, 0xFFF, 0x31000, 3), (0x5000, 0xFFF, 0x50000, 3), (0x6000, 0xFFF, 0x51000, 3)]
    assert second.seen == expected
    assert first.seen == expected + expected
    assert [r.fields["virt_start"] for r in sink.records if r.event == "virtio_iommu_remap"] == [0x1000, 0x3000, 0x5000]


def test_registration_on_unattached_endpoint_replays_nothing():
    """No endpoint record (or no domain): the replay sends nothing."""
    dev, _ = device()
    rec = Recorder()
    dev.devices[AHCI].mr.register_notifier(IommuNotifier("n", IOTLB_EVENTS, rec))
    assert rec.seen == []


def test_flag_add_and_del_are_traced_and_dev_iotlb_is_refused():
    """notify_flag_add on the first notifier, notify_flag_del on the last; DEVIOTLB_UNMAP refused."""
    dev, sink = device()
    mr = dev.devices[AHCI].mr
    n = IommuNotifier("n", IOTLB_EVENTS, Recorder())
    mr.register_notifier(n)
    mr.unregister_notifier(n)
    assert [r.event for r in sink.records if "notify_flag" in r.event] == [
        "virtio_iommu_notify_flag_add", "virtio_iommu_notify_flag_del"]
    with pytest.raises(NotifierRefused, match="does not support dev-iotlb"):
        mr.register_notifier(IommuNotifier("vhost", NotifierFlag.DEVIOTLB_UNMAP, Recorder()))
    assert mr.notifiers == []


def test_map_fan_out_is_newest_endpoint_first_and_skips_mmio_and_no_permission():
    """MAP notifies each endpoint's MR (newest attached first); MMIO or perm-0 mappings are not notified."""
    dev, _ = device()
    seen: list[str] = []
    for bdf in (AHCI, SMBUS):
        req(dev, AttachReq(1, bdf))
        mr = dev.devices[bdf].mr
        mr.register_notifier(IommuNotifier(mr.name, IOTLB_EVENTS, lambda n, e: seen.append(n.name) or 0))
    req(dev, MapReq(1, 0x1000, 0x1FFF, 0, 1))
    req(dev, MapReq(1, 0x2000, 0x2FFF, 0, 3 | 4))
    req(dev, MapReq(1, 0x3000, 0x3FFF, 0, 0))
    assert seen == [dev.devices[SMBUS].mr.name, dev.devices[AHCI].mr.name]


def test_unmap_notifies_every_removed_mapping_even_never_mapped_ones():
    """UNMAP notifications go out for MMIO and no-permission mappings too."""
    dev, _ = device()
    req(dev, AttachReq(1, AHCI))
    rec = Recorder()
    dev.devices[AHCI].mr.register_notifier(IommuNotifier("n", IOTLB_EVENTS, rec))
    req(dev, MapReq(1, 0x2000, 0x2FFF, 0, 4 | 1))
    req(dev, MapReq(1, 0x3000, 0x3FFF, 0, 0))
    assert rec.seen == []
    assert req(dev, UnmapReq(1, 0, U64)) == Status.OK
    assert rec.seen == [(0x2000, 0xFFF, 0, 0), (0x3000, 0xFFF, 0, 0)]


def test_detach_unmaps_all_mappings_on_the_detaching_endpoint_only():
    """DETACH sends UNMAP for each mapping (ascending) to the leaving endpoint's MR."""
    dev, _ = device()
    recs = {}
    for bdf in (AHCI, SMBUS):
        req(dev, AttachReq(1, bdf))
        recs[bdf] = Recorder()
        dev.devices[bdf].mr.register_notifier(IommuNotifier("n", IOTLB_EVENTS, recs[bdf]))
    req(dev, MapReq(1, 0x4000, 0x4FFF, 0x40000, 2))
    req(dev, MapReq(1, 0x1000, 0x1FFF, 0x10000, 2))
    recs[AHCI].seen.clear()
    recs[SMBUS].seen.clear()
    assert req(dev, DetachReq(1, AHCI)) == Status.OK
    assert recs[AHCI].seen == [(0x1000, 0xFFF, 0, 0), (0x4000, 0xFFF, 0, 0)]
    assert recs[SMBUS].seen == []


def test_attach_replays_the_domain_on_the_attaching_endpoint_only():
    """ATTACH to a populated domain sends MAP for its mappings to the new member's MR."""
    dev, _ = device()
    req(dev, AttachReq(1, AHCI))
    req(dev, MapReq(1, 0x1000, 0x2FFF, 0xA0000, 1))
    recs = {bdf: Recorder() for bdf in (AHCI, SMBUS)}
    for bdf, rec in recs.items():
        dev.devices[bdf].mr.register_notifier(IommuNotifier("n", IOTLB_EVENTS, rec))
    recs[AHCI].seen.clear()
    assert req(dev, AttachReq(1, SMBUS)) == Status.OK
    assert recs[SMBUS].seen == [(0x1000, 0xFFF, 0xA0000, 1), (0x2000, 0xFFF, 0xA1000, 1)]
    assert recs[AHCI].seen == []
