"""NVMe data structures moved by admin commands: Identify data and log pages.

Layouts follow the NVM Express Base Specification 1.4: section 5.15 Identify
(Figure 245 Identify Namespace, 247 Identify Controller, 248 Namespace
Identification Descriptors, 249 LBA Format, 250 Power State Descriptor) and
section 5.14.1 log pages (Figure 196 SMART / Health, 197 Firmware Slot, 201
Commands Supported and Effects), as QEMU's include/block/nvme.h declares them
(NvmeIdCtrl, NvmeIdNs, NvmePSD, NvmeSmartLog, NvmeFwSlotInfoLog, NvmeEffectsLog).
The fixed-size pages are models._wire.WireStruct values whose FORMAT comes from
the spec's offset table; tests/models/test_nvme_wire.py pins each layout.  Only
the fields a Linux 6.7 guest reads are named; every other byte is zero.

The queue entries, register map, opcodes and status codes are in models/_nvme_wire.py.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Literal, Self

import attrs

from ._nvme_wire import IDENTIFY_SIZE
from ._wire import WireStruct, WireValue, at_offsets

# -- Identify and log pages as offset tables ------------------------------------------------
# The spec describes these pages as (field, byte offset, type) tables; LAYOUT keeps that
# form.  A code is a struct code, or "u24" / "u128" (3 / 16-byte little-endian integer),
# "be64" (8-byte big-endian integer), "Na" (N-byte ASCII string, space padded), "Nz"
# (N-byte ASCII string, NUL padded) or "Ns" (N raw bytes).  Every other byte is zero.

_INT_CODES: dict[str, tuple[int, Literal["little", "big"]]] = {
    "u24": (3, "little"), "u128": (16, "little"), "be64": (8, "big"),
}

_Layout = tuple[tuple[str, int, str], ...]


def _slot(code: str) -> str:
    if code in _INT_CODES:
        return f"{_INT_CODES[code][0]}s"
    if code[-1] in "az":
        return code[:-1] + "s"
    return code


def _page_format(layout: _Layout, size: int) -> str:
    return at_offsets(size, tuple((off, _slot(code)) for _name, off, code in layout))


class _Page(WireStruct):
    """A structure laid out by an offset table (``LAYOUT``); its FORMAT is derived from it."""

    LAYOUT: ClassVar[_Layout]

    def _to_wire(self) -> tuple[WireValue, ...]:
        out: list[WireValue] = []
        for name, _off, code in self.LAYOUT:
            value = getattr(self, name)
            if code in _INT_CODES:
                n, order = _INT_CODES[code]
                out.append(value.to_bytes(n, order))
            elif code[-1] in "asz":
                n = int(code[:-1])
                raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
                pad = b"\0" if code[-1] == "z" or isinstance(value, bytes) else b" "
                out.append(raw[:n].ljust(n, pad))
            else:
                out.append(value)
        return tuple(out)

    @classmethod
    def _decode(cls, values: tuple[Any, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (name, _off, code), value in zip(cls.LAYOUT, values):
            if code in _INT_CODES:
                out[name] = int.from_bytes(value, _INT_CODES[code][1])
            elif code[-1] in "az":
                out[name] = value.rstrip(b" " if code[-1] == "a" else b"\0").decode("ascii", "replace")
            else:
                out[name] = value
        return out

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        return cls(**cls._decode(values))


@attrs.frozen(kw_only=True)
class PowerState(_Page):
    """One 32-byte Power State Descriptor (NVMe 1.4 Figure 250); ``mp`` in centiwatts."""

    SIZE: ClassVar[int] = 32
    LAYOUT: ClassVar[_Layout] = (
        ("mp", 0, "H"), ("flags", 3, "B"), ("enlat", 4, "I"), ("exlat", 8, "I"), ("rrt", 12, "B"),
        ("rrl", 13, "B"), ("rwt", 14, "B"), ("rwl", 15, "B"), ("idlp", 16, "H"), ("ips", 18, "B"),
        ("actp", 20, "H"), ("apw_aps", 22, "B"),
    )
    FORMAT: ClassVar[str] = _page_format(LAYOUT, SIZE)

    mp: int = 0
    flags: int = 0
    enlat: int = 0
    exlat: int = 0
    rrt: int = 0
    rrl: int = 0
    rwt: int = 0
    rwl: int = 0
    idlp: int = 0
    ips: int = 0
    actp: int = 0
    apw_aps: int = 0


@attrs.frozen(kw_only=True)
class IdentifyController(_Page):
    """Identify Controller data structure, CNS 01h (NVMe 1.4 Figure 247), 4096 bytes.

    Only the fields Linux 6.7's nvme_init_identify / nvme_init_subsystem / hwmon read are
    named; every other byte is zero.  ``ieee`` is the OUI as nvme-cli prints it (0x002538
    is stored as bytes 38 25 00).
    """

    SIZE: ClassVar[int] = 4096
    PSD_OFFSET: ClassVar[int] = 2048
    LAYOUT: ClassVar[_Layout] = (
        ("vid", 0, "H"), ("ssvid", 2, "H"), ("sn", 4, "20a"), ("mn", 24, "40a"), ("fr", 64, "8a"),
        ("rab", 72, "B"), ("ieee", 73, "u24"), ("cmic", 76, "B"), ("mdts", 77, "B"), ("cntlid", 78, "H"),
        ("ver", 80, "I"), ("rtd3r", 84, "I"), ("rtd3e", 88, "I"), ("oaes", 92, "I"), ("ctratt", 96, "I"),
        ("cntrltype", 111, "B"), ("crdt1", 128, "H"), ("crdt2", 130, "H"), ("crdt3", 132, "H"),
        ("oacs", 256, "H"), ("acl", 258, "B"), ("aerl", 259, "B"), ("frmw", 260, "B"), ("lpa", 261, "B"),
        ("elpe", 262, "B"), ("npss", 263, "B"), ("avscc", 264, "B"), ("apsta", 265, "B"),
        ("wctemp", 266, "H"), ("cctemp", 268, "H"), ("mtfa", 270, "H"), ("hmpre", 272, "I"),
        ("hmmin", 276, "I"), ("tnvmcap", 280, "u128"), ("unvmcap", 296, "u128"), ("rpmbs", 312, "I"),
        ("edstt", 316, "H"), ("dsto", 318, "B"), ("fwug", 319, "B"), ("kas", 320, "H"), ("hctma", 322, "H"),
        ("mntmt", 324, "H"), ("mxtmt", 326, "H"), ("sanicap", 328, "I"), ("hmminds", 332, "I"),
        ("hmmaxd", 336, "H"), ("nsetidmax", 338, "H"), ("endgidmax", 340, "H"), ("anatt", 342, "B"),
        ("anacap", 343, "B"), ("anagrpmax", 344, "I"), ("nanagrpid", 348, "I"), ("pels", 352, "I"),
        ("sqes", 512, "B"), ("cqes", 513, "B"), ("maxcmd", 514, "H"), ("nn", 516, "I"), ("oncs", 520, "H"),
        ("fuses", 522, "H"), ("fna", 524, "B"), ("vwc", 525, "B"), ("awun", 526, "H"), ("awupf", 528, "H"),
        ("nvscc", 530, "B"), ("nwpc", 531, "B"), ("acwu", 532, "H"), ("sgls", 536, "I"), ("mnan", 540, "I"),
        ("subnqn", 768, "256z"),
    )
    FORMAT: ClassVar[str] = _page_format(LAYOUT, SIZE)

    vid: int = 0
    ssvid: int = 0
    sn: str = ""
    mn: str = ""
    fr: str = ""
    rab: int = 0
    ieee: int = 0
    cmic: int = 0
    mdts: int = 0
    cntlid: int = 0
    ver: int = 0
    rtd3r: int = 0
    rtd3e: int = 0
    oaes: int = 0
    ctratt: int = 0
    cntrltype: int = 0
    crdt1: int = 0
    crdt2: int = 0
    crdt3: int = 0
    oacs: int = 0
    acl: int = 0
    aerl: int = 0
    frmw: int = 0
    lpa: int = 0
    elpe: int = 0
    npss: int = 0
    avscc: int = 0
    apsta: int = 0
    wctemp: int = 0
    cctemp: int = 0
    mtfa: int = 0
    hmpre: int = 0
    hmmin: int = 0
    tnvmcap: int = 0
    unvmcap: int = 0
    rpmbs: int = 0
    edstt: int = 0
    dsto: int = 0
    fwug: int = 0
    kas: int = 0
    hctma: int = 0
    mntmt: int = 0
    mxtmt: int = 0
    sanicap: int = 0
    hmminds: int = 0
    hmmaxd: int = 0
    nsetidmax: int = 0
    endgidmax: int = 0
    anatt: int = 0
    anacap: int = 0
    anagrpmax: int = 0
    nanagrpid: int = 0
    pels: int = 0
    sqes: int = 0
    cqes: int = 0
    maxcmd: int = 0
    nn: int = 0
    oncs: int = 0
    fuses: int = 0
    fna: int = 0
    vwc: int = 0
    awun: int = 0
    awupf: int = 0
    nvscc: int = 0
    nwpc: int = 0
    acwu: int = 0
    sgls: int = 0
    mnan: int = 0
    subnqn: str = ""
    psd: tuple[PowerState, ...] = ()

    def pack(self) -> bytes:
        buf = bytearray(super().pack())
        for i, ps in enumerate(self.psd[:32]):
            off = self.PSD_OFFSET + i * PowerState.SIZE
            buf[off:off + PowerState.SIZE] = ps.pack()
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        fields = cls._decode(struct.unpack_from(cls.FORMAT, data, offset))
        base = offset + cls.PSD_OFFSET
        fields["psd"] = tuple(PowerState.unpack(data, base + i * PowerState.SIZE) for i in range(fields["npss"] + 1))
        return cls(**fields)


@attrs.frozen(kw_only=True)
class LbaFormat:
    """One LBA Format descriptor (NVMe 1.4 Figure 249): metadata size, LBA data size (log2), RP."""

    ms: int = 0
    lbads: int = 9
    rp: int = 0

    def pack_u32(self) -> int:
        return self.ms | self.lbads << 16 | self.rp << 24

    @classmethod
    def from_u32(cls, value: int) -> LbaFormat:
        return cls(ms=value & 0xFFFF, lbads=(value >> 16) & 0xFF, rp=(value >> 24) & 0x3)


@attrs.frozen(kw_only=True)
class IdentifyNamespace(_Page):
    """Identify Namespace data structure, CNS 00h (NVMe 1.4 Figure 245), 4096 bytes.

    ``eui64`` is stored big-endian as the spec requires; ``nguid`` is 16 raw bytes.
    """

    SIZE: ClassVar[int] = 4096
    LBAF_OFFSET: ClassVar[int] = 128
    LAYOUT: ClassVar[_Layout] = (
        ("nsze", 0, "Q"), ("ncap", 8, "Q"), ("nuse", 16, "Q"), ("nsfeat", 24, "B"), ("nlbaf", 25, "B"),
        ("flbas", 26, "B"), ("mc", 27, "B"), ("dpc", 28, "B"), ("dps", 29, "B"), ("nmic", 30, "B"),
        ("rescap", 31, "B"), ("fpi", 32, "B"), ("dlfeat", 33, "B"), ("nawun", 34, "H"), ("nawupf", 36, "H"),
        ("nacwu", 38, "H"), ("nabsn", 40, "H"), ("nabo", 42, "H"), ("nabspf", 44, "H"), ("noiob", 46, "H"),
        ("nvmcap", 48, "u128"), ("npwg", 64, "H"), ("npwa", 66, "H"), ("npdg", 68, "H"), ("npda", 70, "H"),
        ("nows", 72, "H"), ("anagrpid", 92, "I"), ("nsattr", 99, "B"), ("nvmsetid", 100, "H"),
        ("endgid", 102, "H"), ("nguid", 104, "16s"), ("eui64", 120, "be64"),
    )
    FORMAT: ClassVar[str] = _page_format(LAYOUT, SIZE)

    nsze: int = 0
    ncap: int = 0
    nuse: int = 0
    nsfeat: int = 0
    nlbaf: int = 0
    flbas: int = 0
    mc: int = 0
    dpc: int = 0
    dps: int = 0
    nmic: int = 0
    rescap: int = 0
    fpi: int = 0
    dlfeat: int = 0
    nawun: int = 0
    nawupf: int = 0
    nacwu: int = 0
    nabsn: int = 0
    nabo: int = 0
    nabspf: int = 0
    noiob: int = 0
    nvmcap: int = 0
    npwg: int = 0
    npwa: int = 0
    npdg: int = 0
    npda: int = 0
    nows: int = 0
    anagrpid: int = 0
    nsattr: int = 0
    nvmsetid: int = 0
    endgid: int = 0
    nguid: bytes = bytes(16)
    eui64: int = 0
    lbaf: tuple[LbaFormat, ...] = (LbaFormat(),)

    @property
    def block_size(self) -> int:
        """Bytes per logical block of the format in use (FLBAS bits 3:0)."""
        return 1 << self.lbaf[self.flbas & 0xF].lbads

    def pack(self) -> bytes:
        buf = bytearray(super().pack())
        for i, f in enumerate(self.lbaf[:16]):
            struct.pack_into("<I", buf, self.LBAF_OFFSET + 4 * i, f.pack_u32())
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        fields = cls._decode(struct.unpack_from(cls.FORMAT, data, offset))
        base = offset + cls.LBAF_OFFSET
        fields["lbaf"] = tuple(LbaFormat.from_u32(struct.unpack_from("<I", data, base + 4 * i)[0])
                               for i in range(fields["nlbaf"] + 1))
        return cls(**fields)


def ns_descriptor_list(descriptors: list[tuple[int, bytes]]) -> bytes:
    """Namespace Identification Descriptor list (CNS 03h): {NIDT, NIDL, 2 reserved, NID} each, 4096 bytes."""
    out = bytearray()
    for nidt, nid in descriptors:
        out += struct.pack("<BBH", nidt, len(nid), 0) + nid
    return bytes(out.ljust(IDENTIFY_SIZE, b"\0"))


# -- log pages --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SmartLog(_Page):
    """SMART / Health Information log page 02h (NVMe 1.4 Figure 196), 512 bytes; counters are 128-bit."""

    SIZE: ClassVar[int] = 512
    LAYOUT: ClassVar[_Layout] = (
        ("critical_warning", 0, "B"), ("temperature", 1, "H"), ("available_spare", 3, "B"),
        ("available_spare_threshold", 4, "B"), ("percentage_used", 5, "B"),
        ("data_units_read", 32, "u128"), ("data_units_written", 48, "u128"),
        ("host_read_commands", 64, "u128"), ("host_write_commands", 80, "u128"),
        ("controller_busy_time", 96, "u128"), ("power_cycles", 112, "u128"),
        ("power_on_hours", 128, "u128"), ("unsafe_shutdowns", 144, "u128"), ("media_errors", 160, "u128"),
        ("error_log_entries", 176, "u128"),
    )
    FORMAT: ClassVar[str] = _page_format(LAYOUT, SIZE)

    critical_warning: int = 0
    temperature: int = 0
    available_spare: int = 0
    available_spare_threshold: int = 0
    percentage_used: int = 0
    data_units_read: int = 0
    data_units_written: int = 0
    host_read_commands: int = 0
    host_write_commands: int = 0
    controller_busy_time: int = 0
    power_cycles: int = 0
    power_on_hours: int = 0
    unsafe_shutdowns: int = 0
    media_errors: int = 0
    error_log_entries: int = 0


def firmware_slot_log(active_slot: int, revisions: tuple[str, ...]) -> bytes:
    """Firmware Slot Information log page 03h (NVMe 1.4 Figure 197): AFI then FRS1..FRS7, 512 bytes."""
    buf = bytearray(512)
    buf[0] = active_slot
    for i, rev in enumerate(revisions[:7]):
        buf[8 + 8 * i: 16 + 8 * i] = rev.encode("ascii")[:8].ljust(8, b" ")
    return bytes(buf)


CMD_EFFECTS_CSUPP = 1 << 0
CMD_EFFECTS_LBCC = 1 << 1
CMD_EFFECTS_NCC = 1 << 2
CMD_EFFECTS_NIC = 1 << 3
CMD_EFFECTS_CCC = 1 << 4


def command_effects_log(admin: dict[int, int], io: dict[int, int]) -> bytes:
    """Commands Supported and Effects log page 05h (NVMe 1.4 Figure 201): ACS[256], IOCS[256], 4096 bytes."""
    buf = bytearray(4096)
    for opcode, effects in admin.items():
        struct.pack_into("<I", buf, 4 * opcode, effects)
    for opcode, effects in io.items():
        struct.pack_into("<I", buf, 1024 + 4 * opcode, effects)
    return bytes(buf)


ERROR_LOG_ENTRY_SIZE = 64
