"""NVMe wire formats: register map, opcodes, identifiers, status codes, queue entries, SGLs.

Layouts follow the NVM Express Base Specification 1.4 (sections 3.1 controller
registers, 4.2 Submission Queue Entry, 4.4 PRP, 4.4/4.6 SGL descriptors,
4.6 Completion Queue Entry, 5.14.1 log page ids, 5.15 Identify CNS values,
5.21 feature ids) and the structures of QEMU's include/block/nvme.h (NvmeCmd,
NvmeCqe, NvmeSglDescriptor).  Every structure is a models._wire.WireStruct (a
frozen attrs value with SIZE, pack() and unpack());
tests/models/test_nvme_wire.py pins each layout (size and field offsets).
The Identify data structures and log pages are in models/_nvme_data.py.

Status values use QEMU's 15-bit encoding (the CQE status field without the
phase tag): bits 7:0 SC, 10:8 SCT, 12:11 CRD, 13 M, 14 DNR.  So
``INVALID_FIELD | DNR`` is 0x4002 and the CQE's DW3[31:16] is ``status << 1 | P``.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Self

import attrs

from ._wire import WireStruct, WireValue

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

# Namespace Identification Descriptor types (NVMe 1.4 Figure 248), the CNS 03h list's entries
NIDT_EUI64, NIDT_NGUID, NIDT_UUID, NIDT_CSI = 1, 2, 3, 4

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
class SubmissionEntry(WireStruct):
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


@attrs.frozen(kw_only=True)
class CompletionEntry(WireStruct):
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

    def _to_wire(self) -> tuple[WireValue, ...]:
        return (self.result, self.dw1, self.sq_head, self.sq_id, self.cid, (self.status << 1 | self.phase) & 0xFFFF)

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        r, dw1, sqhd, sqid, cid, sp = values
        return cls(result=r, dw1=dw1, sq_head=sqhd, sq_id=sqid, cid=cid, status=sp >> 1, phase=sp & 1)


SGL_TYPE_DATA_BLOCK = 0x0
SGL_TYPE_BIT_BUCKET = 0x1
SGL_TYPE_SEGMENT = 0x2
SGL_TYPE_LAST_SEGMENT = 0x3


@attrs.frozen(kw_only=True)
class SglDescriptor(WireStruct):
    """A 16-byte SGL descriptor (NVMe 1.4 section 4.4, Figure 114): address, length, type<<4|subtype."""

    FORMAT: ClassVar[str] = "<QI3xB"
    SIZE: ClassVar[int] = 16

    address: int = 0
    length: int = 0
    type: int = SGL_TYPE_DATA_BLOCK
    subtype: int = 0

    def _to_wire(self) -> tuple[WireValue, ...]:
        return (self.address, self.length, (self.type << 4) | self.subtype)

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        addr, length, ident = values
        return cls(address=addr, length=length, type=ident >> 4, subtype=ident & 0xF)
