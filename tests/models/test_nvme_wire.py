"""NVMe wire formats: sizes, field offsets and encodings pinned byte by byte."""

import struct

from models._nvme_data import (
    IdentifyController,
    IdentifyNamespace,
    LbaFormat,
    PowerState,
    SmartLog,
    command_effects_log,
    firmware_slot_log,
    ns_descriptor_list,
)
from models._nvme_wire import (
    DNR,
    INVALID_FIELD,
    NIDT_CSI,
    NIDT_EUI64,
    CompletionEntry,
    SglDescriptor,
    SubmissionEntry,
    aer_result,
    cap_fields,
    make_cap,
    status_name,
)


def test_submission_entry_layout_is_64_bytes_with_spec_offsets():
    """Every SQE dword sits where NVMe 1.4 Figure 105 puts it, and unpack inverts pack."""
    sqe = SubmissionEntry(opcode=0x02, flags=0x41, cid=0xBEEF, nsid=1, cdw2=2, cdw3=3, mptr=0x1111,
                          prp1=0x2222, prp2=0x3333, cdw10=10, cdw11=11, cdw12=12, cdw13=13, cdw14=14, cdw15=15)
    raw = sqe.pack()

    assert (len(raw), SubmissionEntry.SIZE) == (64, 64)
    assert (raw[0], raw[1], struct.unpack_from("<H", raw, 2)[0]) == (0x02, 0x41, 0xBEEF)
    assert [struct.unpack_from("<I", raw, off)[0] for off in (4, 8, 12)] == [1, 2, 3]
    assert [struct.unpack_from("<Q", raw, off)[0] for off in (16, 24, 32)] == [0x1111, 0x2222, 0x3333]
    assert [struct.unpack_from("<I", raw, 40 + 4 * i)[0] for i in range(6)] == [10, 11, 12, 13, 14, 15]
    assert (sqe.fuse, sqe.psdt) == (1, 1)
    assert SubmissionEntry.unpack(raw) == sqe


def test_completion_entry_layout_puts_status_above_the_phase_bit():
    """DW3[31:16] is status << 1 | phase (Figure 124); SC/SCT/DNR decode from the 15-bit status."""
    cqe = CompletionEntry(result=0xAABBCCDD, dw1=7, sq_head=5, sq_id=3, cid=0x1234, status=INVALID_FIELD | DNR,
                          phase=1)
    raw = cqe.pack()

    assert len(raw) == CompletionEntry.SIZE == 16
    assert struct.unpack("<IIHHHH", raw) == (0xAABBCCDD, 7, 5, 3, 0x1234, 0x8005)
    assert (cqe.sc, cqe.sct, cqe.dnr) == (0x02, 0, True)
    assert CompletionEntry.unpack(raw) == cqe


def test_sgl_descriptor_layout_has_type_in_the_last_byte():
    """An SGL descriptor is {address u64, length u32, 3 reserved, type<<4 | subtype} (Figure 114)."""
    d = SglDescriptor(address=0xFFFF_F000, length=0x2000, type=3, subtype=0)
    raw = d.pack()

    assert len(raw) == SglDescriptor.SIZE == 16
    assert raw == struct.pack("<QI", 0xFFFF_F000, 0x2000) + bytes(3) + b"\x30"
    assert SglDescriptor.unpack(raw) == d


def test_identify_controller_fields_sit_at_spec_offsets():
    """The fields Linux reads are at NVMe 1.4 Figure 247 offsets; strings are padded as the spec says."""
    ctrl = IdentifyController(
        vid=0x144D, ssvid=0x108E, sn="S1", mn="MODEL", fr="EPK9", rab=8, ieee=0x002538, mdts=8, cntlid=0x41,
        ver=0x10300, rtd3e=0x989680, oaes=0x300, ctratt=0x8000, oacs=0x5F, aerl=15, lpa=0x0E, elpe=255,
        apsta=1, wctemp=345, hmpre=7, tnvmcap=1 << 70, kas=9, sanicap=3, sqes=0x66, cqes=0x44, nn=32,
        oncs=0x7F, vwc=6, awun=0xFFFF, sgls=0xF0002, subnqn="nqn.x", psd=(PowerState(mp=2500, enlat=5),),
    )
    raw = ctrl.pack()

    assert len(raw) == IdentifyController.SIZE == 4096
    assert struct.unpack_from("<HH", raw, 0) == (0x144D, 0x108E)
    assert raw[4:24] == b"S1".ljust(20) and raw[24:64] == b"MODEL".ljust(40) and raw[64:72] == b"EPK9    "
    assert (raw[72], raw[73:76], raw[77], struct.unpack_from("<H", raw, 78)[0]) == (8, b"\x38\x25\x00", 8, 0x41)
    assert struct.unpack_from("<IIIII", raw, 80) == (0x10300, 0, 0x989680, 0x300, 0x8000)
    assert struct.unpack_from("<H", raw, 256)[0] == 0x5F and (raw[259], raw[261], raw[262], raw[265]) == (15, 0x0E,
                                                                                                        255, 1)
    assert struct.unpack_from("<H", raw, 266)[0] == 345 and struct.unpack_from("<I", raw, 272)[0] == 7
    assert int.from_bytes(raw[280:296], "little") == 1 << 70
    assert struct.unpack_from("<H", raw, 320)[0] == 9 and struct.unpack_from("<I", raw, 328)[0] == 3
    assert (raw[512], raw[513], struct.unpack_from("<I", raw, 516)[0]) == (0x66, 0x44, 32)
    assert (struct.unpack_from("<H", raw, 520)[0], raw[525], struct.unpack_from("<H", raw, 526)[0]) == (0x7F, 6,
                                                                                                     0xFFFF)
    assert struct.unpack_from("<I", raw, 536)[0] == 0xF0002
    assert raw[768:1024] == b"nqn.x".ljust(256, b"\0")
    assert struct.unpack_from("<HxxI", raw, 2048) == (2500, 5)
    assert IdentifyController.unpack(raw) == ctrl


def test_identify_namespace_fields_lba_formats_and_big_endian_eui64():
    """Figure 245 offsets; LBAF entries are ms | lbads<<16 | rp<<24 from byte 128; EUI-64 is big-endian."""
    ns = IdentifyNamespace(nsze=100, ncap=90, nuse=80, nsfeat=0x14, nlbaf=1, flbas=1, dlfeat=9, nvmcap=1 << 65,
                           npwg=7, nguid=bytes(range(16)), eui64=0x0025384500000001,
                           lbaf=(LbaFormat(lbads=9), LbaFormat(ms=8, lbads=12, rp=2)))
    raw = ns.pack()

    assert len(raw) == IdentifyNamespace.SIZE == 4096
    assert struct.unpack_from("<QQQBBB", raw, 0) == (100, 90, 80, 0x14, 1, 1)
    assert raw[33] == 9 and int.from_bytes(raw[48:64], "little") == 1 << 65 and struct.unpack_from("<H", raw, 64)[
        0] == 7
    assert raw[104:120] == bytes(range(16)) and raw[120:128] == bytes.fromhex("0025384500000001")
    assert struct.unpack_from("<II", raw, 128) == (9 << 16, 8 | 12 << 16 | 2 << 24)
    assert ns.block_size == 4096
    assert IdentifyNamespace.unpack(raw) == ns


def test_ns_descriptor_list_is_nidt_nidl_reserved_then_id():
    """CNS 03h descriptors are {NIDT, NIDL, 2 reserved bytes, NID}, back to back, zero padded to 4 KiB."""
    raw = ns_descriptor_list([(NIDT_EUI64, bytes.fromhex("5254000000000001")), (NIDT_CSI, b"\0")])

    assert len(raw) == 4096
    assert raw[:12] == bytes([1, 8, 0, 0]) + bytes.fromhex("5254000000000001")
    assert raw[12:17] == bytes([4, 1, 0, 0, 0]) and raw[17:] == bytes(4096 - 17)


def test_log_pages_have_spec_offsets():
    """SMART (Figure 196), firmware slot (Figure 197) and command effects (Figure 201) layouts."""
    smart = SmartLog(temperature=0x143, data_units_read=3, host_read_commands=5, power_on_hours=2).pack()
    fw = firmware_slot_log(1, ("EPK98B5Q",))
    effects = command_effects_log({0x06: 1}, {0x01: 3})

    assert len(smart) == 512 and struct.unpack_from("<H", smart, 1)[0] == 0x143
    assert int.from_bytes(smart[32:48], "little") == 3 and int.from_bytes(smart[64:80], "little") == 5
    assert int.from_bytes(smart[128:144], "little") == 2
    assert len(fw) == 512 and fw[0] == 1 and fw[8:16] == b"EPK98B5Q"
    assert len(effects) == 4096 and struct.unpack_from("<I", effects, 4 * 6)[0] == 1
    assert struct.unpack_from("<I", effects, 1024 + 4)[0] == 3


def test_cap_register_encodes_qemu_values():
    """make_cap packs the fields of NVMe 1.4 Figure 69; QEMU's CAP is 0x004008200F0107FF."""
    cap = make_cap(mqes=0x7FF, cqr=1, ams=0, to=0xF, dstrd=0, nssrs=0, css=0x41, mpsmin=0, mpsmax=4)

    assert cap == 0x0040_0820_0F01_07FF
    assert cap_fields(cap) == {"mqes": 0x7FF, "cqr": 1, "ams": 0, "to": 0xF, "dstrd": 0, "nssrs": 0, "css": 0x41,
                               "mpsmin": 0, "mpsmax": 4, "cmbs": 0}


def test_status_name_and_aer_result_encodings():
    """Status names read like Linux's log line; AER DW0 is type | info<<8 | log page<<16."""
    assert status_name(0x0004) == "Data Transfer Error (sct 0x0 / sc 0x4)"
    assert status_name(0x4101) == "Invalid Queue Identifier (sct 0x1 / sc 0x1) DNR"
    assert aer_result(0, 1, 1) == 0x00010100
