"""virtio-iommu wire layouts and the replay input formats."""

import struct

import pytest
from reference_data import refboot

from models._viommu_wire import (
    QEMU_FEATURES,
    AttachReq,
    DetachReq,
    FaultEvent,
    IommuConfig,
    MapReq,
    ProbeProperty,
    ProbeReq,
    ProbeResvMem,
    ReqHead,
    ReqTail,
    ReqType,
    Status,
    UnmapReq,
)
from models.guest._raw_requests import ReplayRequest, encode_request, writable_size
from viommu_sim._replay_input import ReplayInputError, parse_replay


ALL_STRUCTS = [IommuConfig, ReqHead, ReqTail, AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq,
               ProbeProperty, ProbeResvMem, FaultEvent]


@pytest.mark.parametrize("cls", ALL_STRUCTS, ids=lambda c: c.__name__)
def test_wire_struct_size_matches_its_format(cls):
    """Every wire class's pinned SIZE is what its struct format packs to."""
    assert struct.calcsize(cls.FORMAT) == cls.SIZE


def test_config_layout_pins_every_field_offset():
    """struct virtio_iommu_config: 40 bytes, fields at 0, 8, 16, 24, 28, 32, 36."""
    raw = IommuConfig(0x0807060504030201, 0x1817161514131211, 0x2827262524232221,
                      0x34333231, 0x38373635, 0x44434241, 0x51).pack()
    assert raw == bytes.fromhex(
        "0102030405060708" "1112131415161718" "2122232425262728" "31323334" "35363738" "41424344" "51000000"
    )
    assert IommuConfig.unpack(raw).domain_range_end == 0x38373635


def test_request_layouts_pin_offsets_from_the_head():
    """Readable parts: head at 0, body offsets as in the spec's request structs."""
    assert AttachReq(0x11223344, 0x20, 1, b"\xaa\xbb\xcc\xdd").pack() == bytes.fromhex(
        "01000000" "44332211" "20000000" "01000000" "aabbccdd")
    assert DetachReq(5, 0x20).pack() == bytes.fromhex("02000000" "05000000" "20000000" + "00" * 8)
    assert MapReq(1, 0x1000, 0x1FFF, 0xA000, 3).pack() == bytes.fromhex(
        "03000000" "01000000" "0010000000000000" "ff1f000000000000" "00a0000000000000" "03000000")
    assert UnmapReq(1, 0x1000, 0x1FFF).pack() == bytes.fromhex(
        "04000000" "01000000" "0010000000000000" "ff1f000000000000" "00000000")
    assert ProbeReq(0xFA).pack() == bytes.fromhex("05000000" "fa000000") + bytes(64)


def test_request_unpack_ignores_head_reserved_bytes():
    """unpack reads the body whatever the head's reserved bytes hold."""
    raw = b"\x03\xff\xff\xff" + MapReq(7, 1, 2, 3, 1).pack()[4:]
    assert MapReq.unpack(raw) == MapReq(7, 1, 2, 3, 1)


def test_tail_layout_is_status_then_zero_reserved():
    """struct virtio_iommu_req_tail: status at 0, three zero bytes."""
    assert ReqTail(Status.RANGE).pack() == b"\x05\x00\x00\x00"


def test_resv_mem_property_layout_has_length_20():
    """RESV_MEM: type 1, length 20 (size without the header), subtype @4, start @8, end @16."""
    assert ProbeResvMem.of(1, 0xFEE00000, 0xFEEFFFFF).pack() == bytes.fromhex(
        "0100" "1400" "01000000" "0000e0fe00000000" "ffffeffe00000000")


def test_fault_event_layout():
    """struct virtio_iommu_fault: reason @0, flags @4, endpoint @8, reserved1 @12, address @16."""
    assert FaultEvent(2, 0x102, 0x20, 0xFFF7B010).pack() == bytes.fromhex(
        "02000000" "02010000" "20000000" "00000000" "10b0f7ff00000000")


def test_status_and_type_codes_match_the_spec():
    """OK..NOMEM are 0..8 and request types 1..5."""
    assert [int(s) for s in Status] == list(range(9))
    assert [s.name for s in Status] == ["OK", "IOERR", "UNSUPP", "DEVERR", "INVAL", "RANGE", "NOENT", "FAULT", "NOMEM"]
    assert [int(t) for t in ReqType] == [1, 2, 3, 4, 5]


def test_qemu_features_are_the_modern_view_of_qemus_offer():
    """Device bits 0,1,2,4,5,6 and transport bits 24,27,28,29,32,40 (QEMU's trace shows
    0x10179000077, which adds the legacy-only bit 30)."""
    assert QEMU_FEATURES == 0x10139000077
    assert QEMU_FEATURES | (1 << 30) == 0x10179000077


def test_request_field_out_of_range_is_refused():
    """A request field wider than its wire type is a ValueError, not a silent truncation."""
    with pytest.raises(ValueError, match="domain must be a u32"):
        AttachReq(1 << 32, 0)


# -- replay input ----------------------------------------------------------------


def test_replay_jsonl_reads_ints_hex_strings_and_defaults():
    """JSON Lines: ints or "0x.." strings; absent fields are 0; line numbers are kept."""
    text = (
        '{"op": "attach", "domain": 1, "endpoint": 32}\n'
        "\n"
        '{"op": "map", "domain": 1, "virt_start": "0xfff7b000", "virt_end": "0xfff7bfff",'
        ' "phys_start": "0x1155ae000", "flags": 2}\n'
        '{"op": "probe", "endpoint": "32"}\n'
    )
    assert parse_replay(text) == [
        ReplayRequest("attach", domain=1, endpoint=32, line=1),
        ReplayRequest("map", domain=1, virt_start=0xFFF7B000, virt_end=0xFFF7BFFF,
                      phys_start=0x1155AE000, flags=2, line=3),
        ReplayRequest("probe", endpoint=32, line=4),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"op": "map", "domain": 1', "not valid JSON"),
        ('{"op": "remap"}', "op must be one of attach, detach, map, unmap, probe"),
        ('{"op": "map", "virt_star": 1}', "unknown field 'virt_star'"),
        ('{"op": "map", "domain": "0xzz"}', "domain '0xzz' is not an integer"),
        ('{"op": "map", "domain": 4294967296}', "domain 0x100000000 does not fit in 32 bits"),
        ('{"op": "map", "virt_end": -1}', "virt_end -0x1 does not fit in 64 bits"),
        ('{"op": "attach", "flags": true}', "flags must be an integer, not true"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_replay_jsonl_malformed_line_names_line_and_problem(line, problem):
    """A bad JSON Lines entry raises ReplayInputError with its 1-based line number."""
    text = '{"op": "attach", "domain": 1, "endpoint": 32}\n' + line + "\n"
    with pytest.raises(ReplayInputError) as err:
        parse_replay(text)
    assert err.value.line == 2
    assert problem in err.value.problem


def test_replay_trace_reads_qemu_lines_with_and_without_prefix():
    """QEMU log lines become requests; unmap_done, translate and other lines are ignored."""
    text = (
        "16498@1795635734.597113:virtio_iommu_attach domain=0 endpoint=250\n"
        "virtio_iommu_get_endpoint Alloc endpoint=250\n"
        "virtio_iommu_map domain=0 virt_start=0xfffe0000 virt_end=0xfffeffff phys_start=0x3d70000 flags=3\n"
        "16501@1795635736.774034:virtio_iommu_unmap domain=0 virt_start=0xfffe0000 virt_end=0xfffeffff\n"
        "16501@1795635736.774041:virtio_iommu_unmap_done domain=0 virt_start=0xfffe0000 virt_end=0xfffeffff\n"
        "virtio_iommu_detach domain=-1 endpoint=250\n"
    )
    assert parse_replay(text) == [
        ReplayRequest("attach", domain=0, endpoint=250, line=1),
        ReplayRequest("map", domain=0, virt_start=0xFFFE0000, virt_end=0xFFFEFFFF, phys_start=0x3D70000,
                      flags=3, line=3),
        ReplayRequest("unmap", domain=0, virt_start=0xFFFE0000, virt_end=0xFFFEFFFF, line=4),
        ReplayRequest("detach", domain=0xFFFFFFFF, endpoint=250, line=6),
    ]


def test_replay_trace_malformed_line_names_line_and_problem():
    """A virtio_iommu_map line missing a field is an error naming the line."""
    text = "virtio_iommu_attach domain=1 endpoint=32\nvirtio_iommu_map domain=1 virt_start=0x1000 virt_end=0x1fff\n"
    with pytest.raises(ReplayInputError, match=r"line 2: virtio_iommu_map without phys_start="):
        parse_replay(text)
    with pytest.raises(ReplayInputError, match=r"line 1: virtio_iommu_attach: domain='x1' is not a number"):
        parse_replay("virtio_iommu_attach domain=x1 endpoint=32\n")


def test_replay_trace_of_the_reference_boot():
    """The real QEMU 7.2 trace yields its 5 ATTACH, 66 MAP and 24 UNMAP requests in order."""
    reqs = parse_replay(refboot("qemu-trace-lazy-smp4.log").read_text())
    assert [r.op for r in reqs].count("attach") == 5
    assert [r.op for r in reqs].count("map") == 66
    assert [r.op for r in reqs].count("unmap") == 24
    assert len(reqs) == 95
    assert reqs[0] == ReplayRequest("attach", domain=0, endpoint=0, line=62)
    assert reqs[2] == ReplayRequest("map", domain=1, virt_start=0xFFFE0000, virt_end=0xFFFEFFFF,
                                    phys_start=0x3D70000, flags=3, line=71)


def test_encode_request_gives_the_readable_part():
    """encode_request packs each op into its wire request; writable sizes are 4 or 516."""
    assert encode_request(ReplayRequest("attach", domain=1, endpoint=32, flags=1)) == AttachReq(1, 32, 1).pack()
    assert encode_request(ReplayRequest("detach", domain=1, endpoint=32)) == DetachReq(1, 32).pack()
    assert encode_request(ReplayRequest("map", 1, 0, 0x1000, 0x1FFF, 0xA000, 3)) == MapReq(1, 0x1000, 0x1FFF, 0xA000, 3).pack()
    assert encode_request(ReplayRequest("unmap", 1, 0, 0x1000, 0x1FFF)) == UnmapReq(1, 0x1000, 0x1FFF).pack()
    assert encode_request(ReplayRequest("probe", endpoint=32)) == ProbeReq(32).pack()
    assert [writable_size(ReplayRequest(op)) for op in ("attach", "map", "probe")] == [4, 4, 516]
