"""Layouts of the split-ring and virtio-pci wire structures, pinned byte for byte."""

import struct

import pytest

from models._virtq_wire import (
    CommonCfg,
    DeviceStatus,
    PciCapType,
    VirtioPciCap,
    VirtioPciCommonCfg,
    VirtioPciNotifyCap,
    VirtqDesc,
    VirtqRingHeader,
    VirtqUsedElem,
    avail_entry_offset,
    avail_event_offset,
    avail_ring_size,
    desc_table_size,
    used_entry_offset,
    used_event_offset,
    used_ring_size,
)


def _field_offsets(fmt: str) -> list[int]:
    """Offsets of the fields of a struct format made of one letter per field (plus 'Nx' pads)."""
    offsets, pos, i = [], 0, 1
    while i < len(fmt):
        if fmt[i].isdigit():
            pos += int(fmt[i])
            i += 2
            continue
        offsets.append(pos)
        pos += struct.calcsize("<" + fmt[i])
        i += 1
    return offsets


def test_virtq_desc_is_16_bytes_addr_len_flags_next():
    """struct virtq_desc: le64 addr @0, le32 len @8, le16 flags @12, le16 next @14."""
    d = VirtqDesc(0x1122334455667788, 0x99AABBCC, 0x0007, 0xEEFF)

    assert (VirtqDesc.SIZE, struct.calcsize(VirtqDesc.FORMAT)) == (16, 16)
    assert _field_offsets(VirtqDesc.FORMAT) == [0, 8, 12, 14]
    assert d.pack() == bytes.fromhex("8877665544332211" "ccbbaa99" "0700" "ffee")
    assert VirtqDesc.unpack(d.pack()) == d
    assert (d.has_next, d.is_write_only, d.is_indirect) == (True, True, True)
    assert (VirtqDesc(0, 1, 2).has_next, VirtqDesc(0, 1, 2).is_write_only) == (False, True)


def test_virtq_used_elem_is_8_bytes_id_then_len():
    """struct virtq_used_elem: le32 id @0, le32 len @4."""
    e = VirtqUsedElem(0x01020304, 0x0A0B0C0D)

    assert (VirtqUsedElem.SIZE, struct.calcsize(VirtqUsedElem.FORMAT)) == (8, 8)
    assert e.pack() == bytes.fromhex("04030201" "0d0c0b0a")
    assert VirtqUsedElem.unpack(e.pack()) == e


def test_ring_header_is_flags_then_idx():
    """virtq_avail and virtq_used both start with le16 flags @0, le16 idx @2."""
    h = VirtqRingHeader(flags=1, idx=0xBEEF)

    assert (VirtqRingHeader.SIZE, struct.calcsize(VirtqRingHeader.FORMAT)) == (4, 4)
    assert h.pack() == bytes.fromhex("0100" "efbe")
    assert VirtqRingHeader.unpack(h.pack()) == h


@pytest.mark.parametrize("num", [1, 2, 256, 32768])
def test_ring_area_sizes_follow_the_spec_formula(num):
    """Descriptor Area 16N, Driver Area 6+2N, Device Area 6+8N (with the event fields)."""
    assert (desc_table_size(num), avail_ring_size(num), used_ring_size(num)) == (16 * num, 6 + 2 * num, 6 + 8 * num)


def test_ring_entry_and_event_field_offsets():
    """avail.ring[i] @4+2i, used_event @4+2N; used.ring[i] @4+8i, avail_event @4+8N."""
    assert [avail_entry_offset(i) for i in (0, 1, 255)] == [4, 6, 514]
    assert used_event_offset(256) == 516
    assert [used_entry_offset(i) for i in (0, 1, 255)] == [4, 12, 2044]
    assert avail_event_offset(256) == 2052


def test_virtio_pci_cap_is_16_bytes():
    """struct virtio_pci_cap: vndr, next, len, cfg_type, bar, id @0..5, padding[2], offset @8, length @12."""
    cap = VirtioPciCap(0x09, 0x70, 16, PciCapType.COMMON_CFG, 4, 0, 0x1000, 0x2000)

    assert (VirtioPciCap.SIZE, struct.calcsize(VirtioPciCap.FORMAT)) == (16, 16)
    assert _field_offsets(VirtioPciCap.FORMAT) == [0, 1, 2, 3, 4, 5, 8, 12]
    assert cap.pack() == bytes.fromhex("0970100104000000" "00100000" "00200000")
    assert VirtioPciCap.unpack(cap.pack()) == cap


def test_virtio_pci_notify_cap_is_20_bytes_with_multiplier_at_16():
    """struct virtio_pci_notify_cap: a virtio_pci_cap then le32 notify_off_multiplier @16."""
    cap = VirtioPciNotifyCap(0x09, 0x40, 20, PciCapType.NOTIFY_CFG, 4, 0, 0x3000, 0x1000, 4)

    assert (VirtioPciNotifyCap.SIZE, struct.calcsize(VirtioPciNotifyCap.FORMAT)) == (20, 20)
    assert _field_offsets(VirtioPciNotifyCap.FORMAT)[-1] == 16
    assert cap.pack()[16:] == bytes.fromhex("04000000")
    assert VirtioPciNotifyCap.unpack(cap.pack()) == cap


def test_pci_cap_cfg_types_match_the_spec():
    """cfg_type values: COMMON 1, NOTIFY 2, ISR 3, DEVICE 4, PCI_CFG 5, SHARED_MEMORY 8, VENDOR 9."""
    assert [int(t) for t in PciCapType] == [1, 2, 3, 4, 5, 8, 9]


def test_common_cfg_register_offsets_match_the_struct_layout():
    """Every CommonCfg offset is where struct virtio_pci_common_cfg puts that field (64-bit ones as lo/hi)."""
    names = [f.name for f in VirtioPciCommonCfg.__attrs_attrs__]
    offsets = dict(zip(names, _field_offsets(VirtioPciCommonCfg.FORMAT)))
    expected = {}
    for name, off in offsets.items():
        if name in ("queue_desc", "queue_driver", "queue_device"):
            expected[name.upper() + "_LO"] = off
            expected[name.upper() + "_HI"] = off + 4
        else:
            expected[name.upper()] = off

    assert (VirtioPciCommonCfg.SIZE, struct.calcsize(VirtioPciCommonCfg.FORMAT)) == (0x40, 0x40)
    assert {r.name: int(r) for r in CommonCfg} == expected
    assert (CommonCfg.QUEUE_NOTIFY_OFF, CommonCfg.QUEUE_DESC_LO, CommonCfg.QUEUE_RESET) == (0x1E, 0x20, 0x3A)


def test_device_status_bits_match_the_spec():
    """ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FEATURES_OK 8, SUSPEND 16, NEEDS_RESET 64, FAILED 128."""
    assert [int(s) for s in DeviceStatus] == [1, 2, 4, 8, 16, 64, 128]
