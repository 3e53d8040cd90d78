"""NVMe wire formats: register offsets, queue entries, Identify data, log pages, status codes.

Layouts follow the NVM Express Base Specification 1.4 (sections 3.1 controller
registers, 4.2 Submission Queue Entry, 4.4 PRP, 4.4/4.6 SGL descriptors,
4.6 Completion Queue Entry, 5.14.1 log pages, 5.15 Identify, 5.21 features)
and the structures of QEMU's include/block/nvme.h (NvmeCmd, NvmeCqe, NvmeIdCtrl,
NvmeIdNs, NvmeSmartLog, NvmeFwSlotInfoLog, NvmeErrorLog).  Every structure is a
frozen attrs class with SIZE, pack() and unpack(); tests/models/test_nvme_wire.py
pins each layout (size and field offsets).

Status values use QEMU's 15-bit encoding (the CQE status field without the
phase tag): bits 7:0 SC, 10:8 SCT, 12:11 CRD, 13 M, 14 DNR.  So
``INVALID_FIELD | DNR`` is 0x4002 and the CQE's DW3[31:16] is ``status << 1 | P``.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import attrs

# -- controller registers (NVMe 1.4 section 3.1, Linux include/linux/nvme.h) ---------------
REG_CAP = 0x00
REG_VS = 0x08
REG_INTMS = 0x0C
REG_INTMC = 0x10
REG_CC = 0x14
REG_CSTS = 0x1C
REG_NSSR = 0x20
REG_AQA = 0x24
REG_ASQ = 0x28
REG_ACQ = 0x30
REG_CMBLOC = 0x38
REG_CMBSZ = 0x3C
#: first doorbell; SQ y tail at DOORBELL_BASE + 2y*(4<<DSTRD), CQ y head at + (2y+1)*(4<<DSTRD)
DOORBELL_BASE = 0x1000

REGISTER_NAMES: dict[int, str] = {
    REG_CAP: "CAP", REG_CAP + 4: "CAP.hi", REG_VS: "VS", REG_INTMS: "INTMS", REG_INTMC: "INTMC",
    REG_CC: "CC", REG_CSTS: "CSTS", REG_NSSR: "NSSR", REG_AQA: "AQA", REG_ASQ: "ASQ",
    REG_ASQ + 4: "ASQ.hi", REG_ACQ: "ACQ", REG_ACQ + 4: "ACQ.hi", REG_CMBLOC: "CMBLOC",
    REG_CMBSZ: "CMBSZ",
}

# CC fields
CC_EN = 1 << 0
CC_CSS_SHIFT, CC_CSS_MASK = 4, 0x7
CC_MPS_SHIFT, CC_MPS_MASK = 7, 0xF
CC_AMS_SHIFT, CC_AMS_MASK = 11, 0x7
CC_SHN_SHIFT, CC_SHN_MASK = 14, 0x3
CC_IOSQES_SHIFT, CC_IOCQES_SHIFT = 16, 20
CC_CSS_NVM, CC_CSS_CSI, CC_CSS_ADMIN = 0, 6, 7

# CSTS fields
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_SHIFT, CSTS_SHST_MASK = 2, 0x3
SHST_NORMAL, SHST_OCCURRING, SHST_COMPLETE = 0, 1, 2
CSTS_NSSRO = 1 << 4


def cc_field(cc: int, shift: int, mask: int) -> int:
    return (cc >> shift) & mask


def make_cap(*, mqes: int, cqr: int, ams: int, to: int, dstrd: int, nssrs: int, css: int,
             mpsmin: int, mpsmax: int, cmbs: int = 0) -> int:
    """CAP register (NVMe 1.4 Figure 69) from its fields; ``css`` is the 8-bit CSS field."""
    return (mqes | cqr << 16 | ams << 17 | to << 24 | dstrd << 32 | nssrs << 36 | css << 37
            | mpsmin << 48 | mpsmax << 52 | cmbs << 57)


def cap_fields(cap: int) -> dict[str, int]:
    """Decode CAP into its named fields (the inverse of make_cap)."""
    return {
        "mqes": cap & 0xFFFF, "cqr": cap >> 16 & 1, "ams": cap >> 17 & 3, "to": cap >> 24 & 0xFF,
        "dstrd": cap >> 32 & 0xF, "nssrs": cap >> 36 & 1, "css": cap >> 37 & 0xFF,
        "mpsmin": cap >> 48 & 0xF, "mpsmax": cap >> 52 & 0xF, "cmbs": cap >> 57 & 1,
    }


# -- opcodes (NVMe 1.4 Figure 139 admin, Figure 346 NVM) ------------------------------------
ADMIN_DELETE_SQ = 0x00
ADMIN_CREATE_SQ = 0x01
ADMIN_GET_LOG_PAGE = 0x02
ADMIN_DELETE_CQ = 0x04
ADMIN_CREATE_CQ = 0x05
ADMIN_IDENTIFY = 0x06
ADMIN_ABORT = 0x08
ADMIN_SET_FEATURES = 0x09
ADMIN_GET_FEATURES = 0x0A
ADMIN_ASYNC_EVENT_REQUEST = 0x0C
ADMIN_NS_MANAGEMENT = 0x0D
ADMIN_FW_COMMIT = 0x10
ADMIN_FW_DOWNLOAD = 0x11
ADMIN_SELF_TEST = 0x14
ADMIN_NS_ATTACHMENT = 0x15
ADMIN_KEEP_ALIVE = 0x18
ADMIN_DIRECTIVE_SEND = 0x19
ADMIN_DIRECTIVE_RECV = 0x1A
ADMIN_DBBUF_CONFIG = 0x7C
ADMIN_FORMAT_NVM = 0x80
ADMIN_SECURITY_SEND = 0x81
ADMIN_SECURITY_RECV = 0x82

IO_FLUSH = 0x00
IO_WRITE = 0x01
IO_READ = 0x02
IO_WRITE_UNCORRECTABLE = 0x04
IO_COMPARE = 0x05
IO_WRITE_ZEROES = 0x08
IO_DSM = 0x09

ADMIN_OPCODE_NAMES: dict[int, str] = {
    ADMIN_DELETE_SQ: "Delete I/O SQ", ADMIN_CREATE_SQ: "Create I/O SQ", ADMIN_GET_LOG_PAGE: "Get Log Page",
    ADMIN_DELETE_CQ: "Delete I/O CQ", ADMIN_CREATE_CQ: "Create I/O CQ", ADMIN_IDENTIFY: "Identify",
    ADMIN_ABORT: "Abort", ADMIN_SET_FEATURES: "Set Features", ADMIN_GET_FEATURES: "Get Features",
    ADMIN_ASYNC_EVENT_REQUEST: "Asynchronous Event Request", ADMIN_NS_MANAGEMENT: "Namespace Management",
    ADMIN_FW_COMMIT: "Firmware Commit", ADMIN_FW_DOWNLOAD: "Firmware Image Download",
    ADMIN_SELF_TEST: "Device Self-test", ADMIN_NS_ATTACHMENT: "Namespace Attachment",
    ADMIN_KEEP_ALIVE: "Keep Alive", ADMIN_DIRECTIVE_SEND: "Directive Send",
    ADMIN_DIRECTIVE_RECV: "Directive Receive", ADMIN_DBBUF_CONFIG: "Doorbell Buffer Config",
    ADMIN_FORMAT_NVM: "Format NVM", ADMIN_SECURITY_SEND: "Security Send",
    ADMIN_SECURITY_RECV: "Security Receive",
}
IO_OPCODE_NAMES: dict[int, str] = {
    IO_FLUSH: "Flush", IO_WRITE: "Write", IO_READ: "Read", IO_WRITE_UNCORRECTABLE: "Write Uncorrectable",
    IO_COMPARE: "Compare", IO_WRITE_ZEROES: "Write Zeroes", IO_DSM: "Dataset Management",
}

# -- Identify CNS values (NVMe 1.4 Figure 244, 2.0 additions) ------------------------------
CNS_NS = 0x00
CNS_CTRL = 0x01
CNS_NS_ACTIVE_LIST = 0x02
CNS_NS_DESCR_LIST = 0x03
CNS_NVMSET_LIST = 0x04
CNS_CS_NS = 0x05
CNS_CS_CTRL = 0x06
CNS_CS_NS_ACTIVE_LIST = 0x07
CNS_CS_INDEP_NS = 0x08
CNS_NS_PRESENT_LIST = 0x10
CNS_NS_PRESENT = 0x11
CNS_CTRL_NS_LIST = 0x12
CNS_CTRL_LIST = 0x13
CNS_IO_COMMAND_SET = 0x1C

IDENTIFY_SIZE = 4096
NSID_BROADCAST = 0xFFFF_FFFF

# -- features (NVMe 1.4 Figure 271) ---------------------------------------------------------
FEAT_ARBITRATION = 0x01
FEAT_POWER_MGMT = 0x02
FEAT_LBA_RANGE = 0x03
FEAT_TEMP_THRESHOLD = 0x04
FEAT_ERROR_RECOVERY = 0x05
FEAT_VOLATILE_WC = 0x06
FEAT_NUM_QUEUES = 0x07
FEAT_IRQ_COALESCE = 0x08
FEAT_IRQ_CONFIG = 0x09
FEAT_WRITE_ATOMIC = 0x0A
FEAT_ASYNC_EVENT = 0x0B
FEAT_AUTO_PST = 0x0C
FEAT_HOST_MEM_BUF = 0x0D
FEAT_TIMESTAMP = 0x0E
FEAT_KATO = 0x0F
FEAT_HCTM = 0x10
FEAT_NOPSC = 0x11
FEAT_RRL = 0x12
FEAT_PLM_CONFIG = 0x13
FEAT_HOST_BEHAVIOR = 0x16
FEAT_SANITIZE = 0x17
FEAT_ENDURANCE_EVT = 0x18
FEAT_CMD_SET_PROFILE = 0x19

# Get Features SEL (CDW10 bits 10:8) and capability bits returned for SEL=3
SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = 0, 1, 2, 3
FEAT_CAP_SAVEABLE, FEAT_CAP_NS, FEAT_CAP_CHANGEABLE = 1 << 0, 1 << 1, 1 << 2

# -- log pages (NVMe 1.4 Figure 191) --------------------------------------------------------
LOG_ERROR = 0x01
LOG_SMART = 0x02
LOG_FW_SLOT = 0x03
LOG_CHANGED_NS = 0x04
LOG_CMD_EFFECTS = 0x05

# -- asynchronous events (NVMe 1.4 section 5.2, Figures 146-149) ----------------------------
AER_TYPE_ERROR = 0
AER_TYPE_SMART = 1
AER_TYPE_NOTICE = 2
AER_INFO_ERR_INVALID_DB_REGISTER = 0x00  # "Write to Invalid Doorbell Register"
AER_INFO_ERR_INVALID_DB_VALUE = 0x01  # "Invalid Doorbell Write Value"


def aer_result(event_type: int, info: int, log_page: int) -> int:
    """Completion DW0 of an Asynchronous Event Request (Figure 146)."""
    return event_type | info << 8 | log_page << 16


# -- status codes (NVMe 1.4 Figures 126-130; QEMU NvmeStatusCodes) ---------------------------
SCT_GENERIC, SCT_COMMAND_SPECIFIC, SCT_MEDIA = 0, 1, 2
DNR = 0x4000
MORE = 0x2000

SUCCESS = 0x000
INVALID_OPCODE = 0x001
INVALID_FIELD = 0x002
CID_CONFLICT = 0x003
DATA_TRANSFER_ERROR = 0x004
POWER_LOSS_ABORT = 0x005
INTERNAL_ERROR = 0x006
ABORT_REQUESTED = 0x007
ABORT_SQ_DELETED = 0x008
ABORT_FAILED_FUSED = 0x009
ABORT_MISSING_FUSED = 0x00A
INVALID_NSID = 0x00B
CMD_SEQ_ERROR = 0x00C
INVALID_SGL_SEG_DESCR = 0x00D
INVALID_NUM_SGL_DESCRS = 0x00E
DATA_SGL_LEN_INVALID = 0x00F
MD_SGL_LEN_INVALID = 0x010
SGL_DESCR_TYPE_INVALID = 0x011
INVALID_USE_OF_CMB = 0x012
INVALID_PRP_OFFSET = 0x013
LBA_OUT_OF_RANGE = 0x080
CAPACITY_EXCEEDED = 0x081
NS_NOT_READY = 0x082
# command specific (SCT 1)
COMPLETION_QUEUE_INVALID = 0x100
INVALID_QUEUE_ID = 0x101
INVALID_QUEUE_SIZE = 0x102
ABORT_LIMIT_EXCEEDED = 0x103
ASYNC_EVENT_LIMIT_EXCEEDED = 0x105
INVALID_INTERRUPT_VECTOR = 0x108
INVALID_LOG_PAGE = 0x109
INVALID_FORMAT = 0x10A
INVALID_QUEUE_DELETION = 0x10C
FEATURE_NOT_SAVEABLE = 0x10D
FEATURE_NOT_CHANGEABLE = 0x10E
FEATURE_NOT_NS_SPECIFIC = 0x10F
# media and data integrity (SCT 2)
UNRECOVERED_READ_ERROR = 0x281
COMPARE_FAILURE = 0x285

STATUS_NAMES: dict[int, str] = {
    SUCCESS: "Successful Completion", INVALID_OPCODE: "Invalid Command Opcode",
    INVALID_FIELD: "Invalid Field in Command", CID_CONFLICT: "Command ID Conflict",
    DATA_TRANSFER_ERROR: "Data Transfer Error", POWER_LOSS_ABORT: "Commands Aborted due to Power Loss",
    INTERNAL_ERROR: "Internal Error", ABORT_REQUESTED: "Command Abort Requested",
    ABORT_SQ_DELETED: "Command Aborted due to SQ Deletion", ABORT_FAILED_FUSED: "Failed Fused Command",
    ABORT_MISSING_FUSED: "Missing Fused Command", INVALID_NSID: "Invalid Namespace or Format",
    CMD_SEQ_ERROR: "Command Sequence Error", INVALID_SGL_SEG_DESCR: "Invalid SGL Segment Descriptor",
    INVALID_NUM_SGL_DESCRS: "Invalid Number of SGL Descriptors",
    DATA_SGL_LEN_INVALID: "Data SGL Length Invalid", MD_SGL_LEN_INVALID: "Metadata SGL Length Invalid",
    SGL_DESCR_TYPE_INVALID: "SGL Descriptor Type Invalid", INVALID_USE_OF_CMB: "Invalid Use of CMB",
    INVALID_PRP_OFFSET: "PRP Offset Invalid", LBA_OUT_OF_RANGE: "LBA Out of Range",
    CAPACITY_EXCEEDED: "Capacity Exceeded", NS_NOT_READY: "Namespace Not Ready",
    COMPLETION_QUEUE_INVALID: "Completion Queue Invalid", INVALID_QUEUE_ID: "Invalid Queue Identifier",
    INVALID_QUEUE_SIZE: "Invalid Queue Size", ABORT_LIMIT_EXCEEDED: "Abort Command Limit Exceeded",
    ASYNC_EVENT_LIMIT_EXCEEDED: "Asynchronous Event Request Limit Exceeded",
    INVALID_INTERRUPT_VECTOR: "Invalid Interrupt Vector", INVALID_LOG_PAGE: "Invalid Log Page",
    INVALID_FORMAT: "Invalid Format", INVALID_QUEUE_DELETION: "Invalid Queue Deletion",
    FEATURE_NOT_SAVEABLE: "Feature Identifier Not Saveable",
    FEATURE_NOT_CHANGEABLE: "Feature Not Changeable",
    FEATURE_NOT_NS_SPECIFIC: "Feature Not Namespace Specific",
    UNRECOVERED_READ_ERROR: "Unrecovered Read Error", COMPARE_FAILURE: "Compare Failure",
}


def status_name(status: int) -> str:
    """Human name of a 15-bit status, e.g. 'Invalid Field in Command (sct 0x0 / sc 0x2) DNR'."""
    code = status & 0x7FF
    name = STATUS_NAMES.get(code, "Unknown Status")
    text = f"{name} (sct 0x{code >> 8:x} / sc 0x{code & 0xFF:x})"
    return text + " DNR" if status & DNR else text


# -- queue entries ----------------------------------------------------------------------------
SQE_SIZE = 64
CQE_SIZE = 16
SQES_LOG2 = 6
CQES_LOG2 = 4

PSDT_PRP, PSDT_SGL_MPTR_CONTIG, PSDT_SGL_MPTR_SGL = 0, 1, 2


@attrs.frozen(kw_only=True)
class SubmissionEntry:
    """A 64-byte Submission Queue Entry (NVMe 1.4 section 4.2, Figure 105; QEMU NvmeCmd).

    ``flags`` is CDW0 bits 15:8: FUSE in bits 1:0, PSDT in bits 7:6.
    """

    FORMAT: ClassVar[str] = "<BBHIIIQQQIIIIII"
    SIZE: ClassVar[int] = 64

    opcode: int
    flags: int = 0
    cid: int = 0
    nsid: int = 0
    cdw2: int = 0
    cdw3: int = 0
    mptr: int = 0
    prp1: int = 0
    prp2: int = 0
    cdw10: int = 0
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0
    cdw14: int = 0
    cdw15: int = 0

    @property
    def fuse(self) -> int:
        return self.flags & 0x3

    @property
    def psdt(self) -> int:
        return (self.flags >> 6) & 0x3

    @property
    def dptr(self) -> bytes:
        """DW6-9 as 16 raw bytes (PRP1/PRP2 or one SGL descriptor)."""
        return struct.pack("<QQ", self.prp1, self.prp2)

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, self.opcode, self.flags, self.cid, self.nsid, self.cdw2, self.cdw3,
                           self.mptr, self.prp1, self.prp2, self.cdw10, self.cdw11, self.cdw12, self.cdw13,
                           self.cdw14, self.cdw15)

    @classmethod
    def unpack(cls, data: bytes) -> SubmissionEntry:
        f = struct.unpack(cls.FORMAT, data)
        return cls(opcode=f[0], flags=f[1], cid=f[2], nsid=f[3], cdw2=f[4], cdw3=f[5], mptr=f[6], prp1=f[7],
                   prp2=f[8], cdw10=f[9], cdw11=f[10], cdw12=f[11], cdw13=f[12], cdw14=f[13], cdw15=f[14])


@attrs.frozen(kw_only=True)
class CompletionEntry:
    """A 16-byte Completion Queue Entry (NVMe 1.4 section 4.6, Figure 124; QEMU NvmeCqe).

    DW3[31:16] holds ``status << 1 | phase``; ``status`` is the 15-bit status field.
    """

    FORMAT: ClassVar[str] = "<IIHHHH"
    SIZE: ClassVar[int] = 16

    result: int = 0
    dw1: int = 0
    sq_head: int = 0
    sq_id: int = 0
    cid: int = 0
    status: int = 0
    phase: int = 0

    @property
    def sc(self) -> int:
        return self.status & 0xFF

    @property
    def sct(self) -> int:
        return (self.status >> 8) & 0x7

    @property
    def dnr(self) -> bool:
        return bool(self.status & DNR)

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, self.result, self.dw1, self.sq_head, self.sq_id, self.cid,
                           (self.status << 1 | self.phase) & 0xFFFF)

    @classmethod
    def unpack(cls, data: bytes) -> CompletionEntry:
        r, dw1, sqhd, sqid, cid, sp = struct.unpack(cls.FORMAT, data)
        return cls(result=r, dw1=dw1, sq_head=sqhd, sq_id=sqid, cid=cid, status=sp >> 1, phase=sp & 1)


SGL_TYPE_DATA_BLOCK = 0x0
SGL_TYPE_BIT_BUCKET = 0x1
SGL_TYPE_SEGMENT = 0x2
SGL_TYPE_LAST_SEGMENT = 0x3


@attrs.frozen(kw_only=True)
class SglDescriptor:
    """A 16-byte SGL descriptor (NVMe 1.4 section 4.4, Figure 114): address, length, type<<4|subtype."""

    FORMAT: ClassVar[str] = "<QI3xB"
    SIZE: ClassVar[int] = 16

    address: int = 0
    length: int = 0
    type: int = SGL_TYPE_DATA_BLOCK
    subtype: int = 0

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, self.address, self.length, (self.type << 4) | self.subtype)

    @classmethod
    def unpack(cls, data: bytes) -> SglDescriptor:
        addr, length, ident = struct.unpack(cls.FORMAT, data)
        return cls(address=addr, length=length, type=ident >> 4, subtype=ident & 0xF)


# -- layout-table structures (Identify data, log pages) -------------------------------------
# A layout is (field, offset, code): a struct code, or "u24"/"u128" (3/16-byte little-endian
# integer), "be64" (8-byte big-endian integer), or "Ns" holding str (ASCII, space-padded unless
# the field is NUL-padded) or bytes.

_INT_CODES = {"u24": (3, "little"), "u128": (16, "little"), "be64": (8, "big")}

_Layout = tuple[tuple[str, int, str], ...]


def _pack_layout(obj: Any, layout: _Layout, size: int, nul_padded: frozenset[str] = frozenset()) -> bytearray:
    buf = bytearray(size)
    for name, off, code in layout:
        value = getattr(obj, name)
        if code in _INT_CODES:
            n, order = _INT_CODES[code]
            buf[off:off + n] = value.to_bytes(n, order)  # type: ignore[arg-type]
        elif code.endswith("s"):
            n = int(code[:-1])
            raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
            pad = b"\0" if name in nul_padded or isinstance(value, bytes) else b" "
            buf[off:off + n] = raw[:n].ljust(n, pad)
        else:
            struct.pack_into("<" + code, buf, off, value)
    return buf


def _unpack_layout(layout: _Layout, data: bytes, nul_padded: frozenset[str] = frozenset(),
                   str_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, off, code in layout:
        if code in _INT_CODES:
            n, order = _INT_CODES[code]
            out[name] = int.from_bytes(data[off:off + n], order)  # type: ignore[arg-type]
        elif code.endswith("s"):
            raw = bytes(data[off:off + int(code[:-1])])
            if name in str_fields:
                out[name] = raw.rstrip(b"\0" if name in nul_padded else b" ").decode("ascii", "replace")
            else:
                out[name] = raw
        else:
            out[name] = struct.unpack_from("<" + code, data, off)[0]
    return out


@attrs.frozen(kw_only=True)
class PowerState:
    """One 32-byte Power State Descriptor (NVMe 1.4 Figure 250); ``mp`` in centiwatts."""

    SIZE: ClassVar[int] = 32
    LAYOUT: ClassVar[_Layout] = (
        ("mp", 0, "H"), ("flags", 3, "B"), ("enlat", 4, "I"), ("exlat", 8, "I"), ("rrt", 12, "B"),
        ("rrl", 13, "B"), ("rwt", 14, "B"), ("rwl", 15, "B"), ("idlp", 16, "H"), ("ips", 18, "B"),
        ("actp", 20, "H"), ("apw_aps", 22, "B"),
    )

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

    def pack(self) -> bytes:
        return bytes(_pack_layout(self, self.LAYOUT, self.SIZE))

    @classmethod
    def unpack(cls, data: bytes) -> PowerState:
        return cls(**_unpack_layout(cls.LAYOUT, data))


@attrs.frozen(kw_only=True)
class IdentifyController:
    """Identify Controller data structure, CNS 01h (NVMe 1.4 Figure 247), 4096 bytes.

    Only the fields Linux 6.7's nvme_init_identify / nvme_init_subsystem / hwmon read are
    named; every other byte is zero.  ``ieee`` is the OUI as nvme-cli prints it (0x002538
    is stored as bytes 38 25 00).
    """

    SIZE: ClassVar[int] = 4096
    PSD_OFFSET: ClassVar[int] = 2048
    LAYOUT: ClassVar[_Layout] = (
        ("vid", 0, "H"), ("ssvid", 2, "H"), ("sn", 4, "20s"), ("mn", 24, "40s"), ("fr", 64, "8s"),
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
        ("subnqn", 768, "256s"),
    )
    _STRINGS: ClassVar[frozenset[str]] = frozenset({"sn", "mn", "fr", "subnqn"})
    _NUL_PADDED: ClassVar[frozenset[str]] = frozenset({"subnqn"})

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
        buf = _pack_layout(self, self.LAYOUT, self.SIZE, self._NUL_PADDED)
        for i, ps in enumerate(self.psd[:32]):
            off = self.PSD_OFFSET + i * PowerState.SIZE
            buf[off:off + PowerState.SIZE] = ps.pack()
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes) -> IdentifyController:
        fields = _unpack_layout(cls.LAYOUT, data, cls._NUL_PADDED, cls._STRINGS)
        npss = fields["npss"]
        fields["psd"] = tuple(
            PowerState.unpack(data[cls.PSD_OFFSET + i * 32: cls.PSD_OFFSET + (i + 1) * 32]) for i in range(npss + 1))
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
class IdentifyNamespace:
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
        buf = _pack_layout(self, self.LAYOUT, self.SIZE)
        for i, f in enumerate(self.lbaf[:16]):
            struct.pack_into("<I", buf, self.LBAF_OFFSET + 4 * i, f.pack_u32())
        return bytes(buf)

    @classmethod
    def unpack(cls, data: bytes) -> IdentifyNamespace:
        fields = _unpack_layout(cls.LAYOUT, data)
        fields["lbaf"] = tuple(LbaFormat.from_u32(struct.unpack_from("<I", data, cls.LBAF_OFFSET + 4 * i)[0])
                               for i in range(fields["nlbaf"] + 1))
        return cls(**fields)


# Namespace Identification Descriptor types (NVMe 1.4 Figure 248)
NIDT_EUI64, NIDT_NGUID, NIDT_UUID, NIDT_CSI = 1, 2, 3, 4


def ns_descriptor_list(descriptors: list[tuple[int, bytes]]) -> bytes:
    """Namespace Identification Descriptor list (CNS 03h): {NIDT, NIDL, 2 reserved, NID} each, 4096 bytes."""
    out = bytearray()
    for nidt, nid in descriptors:
        out += struct.pack("<BBH", nidt, len(nid), 0) + nid
    return bytes(out.ljust(IDENTIFY_SIZE, b"\0"))


# -- log pages --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SmartLog:
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

    def pack(self) -> bytes:
        return bytes(_pack_layout(self, self.LAYOUT, self.SIZE))

    @classmethod
    def unpack(cls, data: bytes) -> SmartLog:
        return cls(**_unpack_layout(cls.LAYOUT, data))


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
