"""NVMe controller with a DMA engine that reaches guest memory only through an IOMMU port.

What it models: the BAR0 register file (CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ,
doorbells; NVMe 1.4 section 3.1), the enable / disable / shutdown handshakes (section 7.6),
the admin queue and I/O queue pairs in guest memory with phase tags (section 4), the admin
commands Linux 6.7's nvme_probe issues (section 5) and the NVM I/O commands Read, Write,
Flush, Compare, Write Zeroes and Dataset Management (NVM command set section 6) on a sparse
namespace backing store.  Behaviour follows QEMU's hw/nvme/ctrl.c where the emulated
identity is concerned (nvme_write_bar, nvme_start_ctrl, nvme_process_db, nvme_process_sq,
nvme_post_cqes, nvme_map_prp, nvme_map_sgl, nvme_identify, nvme_get/set_feature,
nvme_get_log, nvme_create_cq/sq, nvme_del_cq/sq, nvme_aer, nvme_abort) and the NVMe spec
otherwise; the facts come from the reference notes on PCI and NVMe (pci-nvme.md, sections 4-7).

Two identities (``IDENTITIES``): "vfio" is the seed's Samsung PM173X passed through with
VFIO (IDs and Identify data from the reference's PM1733 id-ctrl dump; every value that is a
guess is listed in ``NvmeIdentity.guesses``), "emulated" is QEMU's NVMe device 1b36:0010
(CAP/VS/Identify as nvme_init_ctrl builds them; QEMU 8.2-era feature set).

DMA engine.  Every device access -- SQ entry fetch, PRP list / SGL segment fetch, data,
CQ entry post, shadow doorbells -- goes through the ``DmaPort`` at the moment of access,
split at 4 KiB IOVA boundaries, reads needing READ and writes WRITE permission (the port
enforces).  A ``DmaFault`` (models._dma's, shared by all device ports and re-exported here)
is handled as the identity's hardware does (reference 5.3):

* emulated (QEMU): a data or PRP/SGL access fault completes the command with Data Transfer
  Error (no DNR); an SQ-entry fetch or CQ-entry post fault sets CSTS to CFS only (QEMU stores
  NVME_CSTS_FAILED, clearing RDY) and QEMU keeps accepting doorbells, so this model does too.
* vfio (a physical device behind the host IOMMU): the host IOMMU (the port) records the
  fault; the guest sees no fault event.  Faulting *reads* fail the command with Data Transfer
  Error, an SQ fetch fault is fatal (CSTS.RDY|CFS, processing stops until reset); faulting
  *writes* are posted and silently dropped, so a Read completes with Success and its data is
  lost, and a dropped CQ entry still advances the tail and raises the interrupt.  The PM1733's
  exact reaction is unknown (firmware specific); this is the reference's "typical" behaviour.

Bus mastering.  With the PCI command register's Bus Master Enable clear the doorbell write is
still accepted (MMIO needs only Memory Space Enable), but no DMA happens: the vfio device
issues no requests, so the command waits until bus mastering is back and the controller is
woken (next doorbell or ``bus_master_changed()``); QEMU routes the SQ-entry fetch through the
disabled bus-master address space, the read fails and nvme_process_sq sets CFS (inferred from
hw/pci/pci.c bus_master_enable_region + nvme_process_sq).

Timing (all from ``CostModel``): the CC.EN/SHN handshakes take nvme_enable_ps /
nvme_disable_ps / nvme_shutdown_ps, applied by the controller's control task; each command
costs one pcie_latency_ps for its SQ-entry read, one per PRP-list/SGL-segment page read, one
for its data burst and one for the CQ-entry write, plus nvme_cmd_service_ps of media/firmware
time; data bursts share one link whose bandwidth is nvme_bandwidth_bytes_per_s (transfer time
``ceil(bytes * 10**12 / bandwidth)`` ps, integer math), reserved first come first served.

Arbitration: round robin across submission queues in qid order (admin SQ 0 first; CC.AMS is
stored, both identities report CAP.AMS = 0, so only round robin exists), one
command per SQ per round, until no SQ has a fetchable entry; every fetched command runs
concurrently in its own sim task and completions are posted in the order commands finish.
A CQ that is full ((tail + 1) % size == head) holds further completions until the host moves
its head (QEMU nvme_post_cqes).  Interrupt coalescing is not modeled: one MSI-X message per
batch of CQ entries posted to an interrupt-enabled CQ.

Bad doorbell writes (QEMU nvme_process_db and NVMe 1.4 section 3.1.24/25): a doorbell for a
queue that does not exist, an SQ tail or CQ head >= the queue size, are ignored; if an
Asynchronous Event Request is outstanding an Error event completes it ("Write to Invalid
Doorbell Register" 00h / "Invalid Doorbell Write Value" 01h, log page 01h).  Misaligned
doorbell writes are ignored.

Trace events (source = the controller's name): mmio_write, mmio_write_invalid, mmio_write_misaligned,
mmio_read_invalid, doorbell, doorbell_invalid, doorbell_ignored, ready, start_failed, disabled,
shutdown_complete, reset, bus_master_off, fetch, complete, post_cqe, msix, dma_fault, cfs, aer,
create_cq, create_sq, delete_sq, delete_cq.

Not modeled (answered Invalid Command Opcode): Namespace Management/Attachment, Format NVM,
Firmware Commit/Download, Device Self-test, Directives, NVMe-MI, Sanitize, reservations,
Write Uncorrectable, Verify, Copy, zoned commands.  Also absent: CMB/PMR, SR-IOV, metadata and
protection information, SGL Bit Bucket / keyed descriptors and the SGLS alignment rules, the
Error Information log's entries (the page reads as zeros), interrupt coalescing, INTx/MSI.
"""

from __future__ import annotations

import collections
import struct
from typing import Any, Awaitable, Callable, Protocol

import attrs

from sim import PS_PER_MS, PS_PER_S, Event, Queue, Simulator, sleep

from ._cost import CostModel

# DmaFault(iova, access, reason) and the access kinds (IOMMU_RO/IOMMU_WO bits, as
# VirtioIommu.translate takes them) are shared by every device DMA port; re-exported here.
from ._dma import DMA_READ as DMA_READ, DMA_WRITE as DMA_WRITE, DmaFault as DmaFault
from ._nvme_wire import (
    ABORT_REQUESTED, ABORT_SQ_DELETED, ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_CREATE_CQ,
    ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG, ADMIN_DELETE_CQ, ADMIN_DELETE_SQ, ADMIN_GET_FEATURES,
    ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_OPCODE_NAMES, ADMIN_SECURITY_RECV, ADMIN_SECURITY_SEND,
    ADMIN_SET_FEATURES, AER_INFO_ERR_INVALID_DB_REGISTER, AER_INFO_ERR_INVALID_DB_VALUE, AER_TYPE_ERROR,
    AER_TYPE_SMART, ASYNC_EVENT_LIMIT_EXCEEDED, CC_CSS_MASK, CC_CSS_SHIFT, CC_EN,
    CC_IOCQES_SHIFT, CC_IOSQES_SHIFT, CC_MPS_MASK, CC_MPS_SHIFT, CC_SHN_MASK, CC_SHN_SHIFT,
    CMD_EFFECTS_CSUPP, CMD_EFFECTS_LBCC, CMD_SEQ_ERROR, CNS_CS_CTRL, CNS_CS_NS, CNS_CS_NS_ACTIVE_LIST,
    CNS_CTRL, CNS_IO_COMMAND_SET, CNS_NS, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_NS_PRESENT,
    CNS_NS_PRESENT_LIST, COMPARE_FAILURE, COMPLETION_QUEUE_INVALID, CQES_LOG2, CSTS_CFS,
    CSTS_RDY, CSTS_SHST_MASK, CSTS_SHST_SHIFT, DATA_SGL_LEN_INVALID, DATA_TRANSFER_ERROR, DNR,
    DOORBELL_BASE, FEAT_ARBITRATION, FEAT_ASYNC_EVENT, FEAT_CAP_CHANGEABLE, FEAT_CAP_NS,
    FEAT_CMD_SET_PROFILE, FEAT_ERROR_RECOVERY, FEAT_HOST_BEHAVIOR, FEAT_IRQ_COALESCE, FEAT_IRQ_CONFIG,
    FEAT_NUM_QUEUES, FEAT_POWER_MGMT, FEAT_TEMP_THRESHOLD, FEAT_TIMESTAMP, FEAT_VOLATILE_WC,
    FEAT_WRITE_ATOMIC, FEATURE_NOT_CHANGEABLE, FEATURE_NOT_NS_SPECIFIC, FEATURE_NOT_SAVEABLE,
    IDENTIFY_SIZE, INTERNAL_ERROR, INVALID_FIELD, INVALID_INTERRUPT_VECTOR, INVALID_LOG_PAGE, INVALID_NSID,
    INVALID_NUM_SGL_DESCRS, INVALID_OPCODE, INVALID_PRP_OFFSET, INVALID_QUEUE_DELETION,
    INVALID_QUEUE_ID, INVALID_QUEUE_SIZE, INVALID_SGL_SEG_DESCR, IO_COMPARE, IO_DSM, IO_FLUSH,
    IO_OPCODE_NAMES, IO_READ, IO_WRITE, IO_WRITE_ZEROES, LBA_OUT_OF_RANGE, LOG_CMD_EFFECTS, LOG_ERROR,
    LOG_FW_SLOT, LOG_SMART, NIDT_CSI, NIDT_EUI64, NIDT_NGUID, NIDT_UUID, NSID_BROADCAST, PSDT_PRP,
    REG_ACQ, REG_AQA, REG_ASQ, REG_CC, REG_INTMC, REG_INTMS, REGISTER_NAMES, SEL_DEFAULT,
    SEL_SAVED, SEL_SUPPORTED, SGL_DESCR_TYPE_INVALID, SGL_TYPE_DATA_BLOCK, SGL_TYPE_LAST_SEGMENT,
    SGL_TYPE_SEGMENT, SHST_COMPLETE, SHST_OCCURRING, SQE_SIZE, SQES_LOG2, SUCCESS, CompletionEntry,
    IdentifyController, IdentifyNamespace, LbaFormat, PowerState, SglDescriptor, SmartLog,
    SubmissionEntry, aer_result, cc_field, command_effects_log, firmware_slot_log, make_cap,
    ns_descriptor_list, ERROR_LOG_ENTRY_SIZE,
)

#: the IOMMU's smallest granule: every device access is split at these boundaries (reference 5.1)
DMA_SPLIT = 4096
#: most SGL descriptors one command may use (QEMU caps mappings at IOV_MAX = 1024); beyond: Internal Error
SGL_MAX_DESCRIPTORS = 4096


class DmaPort(Protocol):
    """The controller's window on memory: IOVAs in, bytes out; raises DmaFault on a refused access."""

    def dma_read(self, iova: int, size: int) -> bytes: ...

    def dma_write(self, iova: int, data: bytes) -> None: ...


# ------------------------------------------------------------------------------------------
# identities
# ------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NamespaceSpec:
    """One namespace: its Identify Namespace data and its Namespace Identification Descriptors."""

    nsid: int
    id_ns: IdentifyNamespace
    descriptors: tuple[tuple[int, bytes], ...] = ()


@attrs.frozen(kw_only=True)
class NvmeIdentity:
    """What a controller is: PCI identity, registers, Identify data, limits and supported commands.

    ``emulated`` selects QEMU hw/nvme semantics where QEMU and a physical device differ
    (fault handling, some status codes, CC reset to 0, CFS clearing RDY).
    """

    name: str
    emulated: bool
    pci_vendor: int
    pci_device: int
    pci_subsystem_vendor: int
    pci_subsystem: int
    pci_revision: int
    pci_class: int
    bar0_size: int
    msix_vectors: int
    msix_table_offset: int
    msix_pba_offset: int
    cap: int
    vs: int
    max_ioqpairs: int
    id_ctrl: IdentifyController
    #: Identify CNS 06h (CSI 0) data, or None when the controller rejects CNS 06h
    id_ctrl_nvm: bytes | None
    namespaces: tuple[NamespaceSpec, ...]
    identify_cns: frozenset[int]
    admin_opcodes: frozenset[int]
    io_opcodes: frozenset[int]
    #: supported feature id -> capability bits (FEAT_CAP_*), as Get Features SEL=3 reports them
    features: dict[int, int] = attrs.field(hash=False)
    temperature_k: int
    guesses: tuple[str, ...] = ()


_CHG = FEAT_CAP_CHANGEABLE

#: QEMU 8.2 hw/nvme: nvme_init_ctrl, nvme_init_pci (BAR0 = pow2ceil(regs + 65 queue doorbell pairs
#: + MSI-X table + PBA) = 16 KiB, table at 0x2000, PBA at 0x3000), hw/nvme/ns.c nvme_ns_init.
QEMU_NVME = NvmeIdentity(
    name="emulated",
    emulated=True,
    pci_vendor=0x1B36, pci_device=0x0010, pci_subsystem_vendor=0x1AF4, pci_subsystem=0x1100,
    pci_revision=0x02, pci_class=0x010802,
    bar0_size=16 * 1024, msix_vectors=65, msix_table_offset=0x2000, msix_pba_offset=0x3000,
    cap=make_cap(mqes=0x7FF, cqr=1, ams=0, to=0xF, dstrd=0, nssrs=0, css=0x41, mpsmin=0, mpsmax=4),
    vs=0x00010400,
    max_ioqpairs=64,
    id_ctrl=IdentifyController(
        vid=0x1B36, ssvid=0x1AF4, sn="deadbeef", mn="QEMU NVMe Ctrl", fr="8.2.2", rab=6, ieee=0x525400,
        cmic=0, mdts=7, cntlid=0, ver=0x00010400, oaes=0x100, ctratt=0x8000, cntrltype=1,
        oacs=0x012A, acl=3, aerl=3, frmw=0x03, lpa=0x07, elpe=0, npss=0, wctemp=0x157, cctemp=0x175,
        sqes=0x66, cqes=0x44, nn=256, oncs=0x075D, vwc=0x07, sgls=0x00080001,
        subnqn="nqn.2019-08.org.qemu:deadbeef", psd=(PowerState(mp=0x9C4, enlat=0x10, exlat=0x4),),
    ),
    # NvmeIdCtrlNvm: vsl 7, wzsl 0, wusl 0, dmrl 255, dmrsl = BDRV_REQUEST_MAX_BYTES / 512, dmsl = dmrl * dmrsl
    id_ctrl_nvm=struct.pack("<BBBBIQ", 7, 0, 0, 255, 0x3FFFFF, 255 * 0x3FFFFF).ljust(IDENTIFY_SIZE, b"\0"),
    namespaces=(
        NamespaceSpec(
            nsid=1,
            id_ns=IdentifyNamespace(
                nsze=1 << 25, ncap=1 << 25, nuse=1 << 25, nsfeat=0x14, nlbaf=7, flbas=0, dlfeat=0x09,
                npwg=7, npwa=7, npdg=7, npda=7, nows=7, eui64=0x5254000000000001,
                lbaf=(LbaFormat(lbads=9), LbaFormat(ms=8, lbads=9), LbaFormat(ms=16, lbads=9),
                      LbaFormat(ms=64, lbads=9), LbaFormat(lbads=12), LbaFormat(ms=8, lbads=12),
                      LbaFormat(ms=16, lbads=12), LbaFormat(ms=64, lbads=12)),
            ),
            descriptors=(
                (NIDT_UUID, bytes.fromhex("5649534d00004000800000000000c001")),
                (NIDT_EUI64, bytes.fromhex("5254000000000001")),
                (NIDT_CSI, b"\0"),
            ),
        ),
    ),
    identify_cns=frozenset({CNS_NS, CNS_CTRL, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_CS_NS, CNS_CS_CTRL,
                            CNS_CS_NS_ACTIVE_LIST, CNS_NS_PRESENT_LIST, CNS_NS_PRESENT, CNS_IO_COMMAND_SET}),
    admin_opcodes=frozenset({ADMIN_DELETE_SQ, ADMIN_CREATE_SQ, ADMIN_GET_LOG_PAGE, ADMIN_DELETE_CQ,
                             ADMIN_CREATE_CQ, ADMIN_IDENTIFY, ADMIN_ABORT, ADMIN_SET_FEATURES,
                             ADMIN_GET_FEATURES, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_DBBUF_CONFIG}),
    io_opcodes=frozenset({IO_FLUSH, IO_WRITE, IO_READ, IO_COMPARE, IO_WRITE_ZEROES, IO_DSM}),
    features={FEAT_ARBITRATION: 0, FEAT_POWER_MGMT: 0, FEAT_TEMP_THRESHOLD: _CHG,
              FEAT_ERROR_RECOVERY: _CHG | FEAT_CAP_NS, FEAT_VOLATILE_WC: _CHG, FEAT_NUM_QUEUES: _CHG,
              FEAT_IRQ_COALESCE: 0, FEAT_IRQ_CONFIG: 0, FEAT_WRITE_ATOMIC: _CHG, FEAT_ASYNC_EVENT: _CHG,
              FEAT_TIMESTAMP: _CHG, FEAT_HOST_BEHAVIOR: _CHG, FEAT_CMD_SET_PROFILE: _CHG},
    temperature_k=0x143,
    guesses=(
        "fr '8.2.2': QEMU_VERSION of the host is not recorded; 8.2.2 assumed",
        "sn 'deadbeef': QEMU's serial= property is user supplied; policy value",
        "namespace size 16 GiB (2^25 x 512 B): the backing image size is a policy choice",
        "namespace UUID: QEMU generates a random one; a fixed value is used for determinism",
        "nsfeat 0x14 / dlfeat 0x09 / npwg..nows 7 from memory of hw/nvme/ns.c, not re-read",
    ),
)

_PM1733_SN = "S4YNNE0R500001"

#: Samsung PM1733 (144d:a824) per reference section 6 (id-ctrl of MZWLJ7T6HALA-00AU3, the
#: MZWLJ3T8HBLS-00007 model/firmware strings) and section 1.3 (BAR0 64-bit 32 KiB).
PM173X = NvmeIdentity(
    name="vfio",
    emulated=False,
    pci_vendor=0x144D, pci_device=0xA824, pci_subsystem_vendor=0x144D, pci_subsystem=0xA801,
    pci_revision=0x00, pci_class=0x010802,
    bar0_size=32 * 1024, msix_vectors=130, msix_table_offset=0x2000, msix_pba_offset=0x3000,
    cap=make_cap(mqes=0x3FFF, cqr=1, ams=0, to=0x3C, dstrd=0, nssrs=0, css=0x01, mpsmin=0, mpsmax=0),
    vs=0x00010300,
    max_ioqpairs=128,
    id_ctrl=IdentifyController(
        vid=0x144D, ssvid=0x144D, sn=_PM1733_SN, mn="SAMSUNG MZWLJ3T8HBLS-00007", fr="EPK98B5Q", rab=8,
        ieee=0x002538, cmic=0, mdts=8, cntlid=0x41, ver=0x00010300, rtd3r=0xE4E1C0, rtd3e=0x989680,
        oaes=0x300, ctratt=0, oacs=0x5F, acl=127, aerl=15, frmw=0x17, lpa=0x0E, elpe=255, npss=0, apsta=0,
        wctemp=345, cctemp=358, hmpre=0, hmmin=0, tnvmcap=3_840_755_982_336, sanicap=0x3, sqes=0x66,
        cqes=0x44, maxcmd=0, nn=32, oncs=0x7F, fna=0x4, vwc=0, awun=65535, sgls=0x000F0002,
        subnqn=f"nqn.1994-11.com.samsung:nvme:PM1733:2.5-inch:{_PM1733_SN}",
        psd=(PowerState(mp=2500),),
    ),
    id_ctrl_nvm=None,
    namespaces=(
        NamespaceSpec(
            nsid=1,
            id_ns=IdentifyNamespace(
                nsze=7_501_476_528, ncap=7_501_476_528, nuse=7_501_476_528, nsfeat=0, nlbaf=1, flbas=0,
                dlfeat=0x09, nvmcap=3_840_755_982_336, nguid=bytes.fromhex("36344830526000010025384500000001"),
                eui64=0x0025384500000001, lbaf=(LbaFormat(lbads=9), LbaFormat(lbads=12)),
            ),
            descriptors=(
                (NIDT_EUI64, bytes.fromhex("0025384500000001")),
                (NIDT_NGUID, bytes.fromhex("36344830526000010025384500000001")),
            ),
        ),
    ),
    identify_cns=frozenset({CNS_NS, CNS_CTRL, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_NS_PRESENT_LIST,
                            CNS_NS_PRESENT}),
    admin_opcodes=frozenset({ADMIN_DELETE_SQ, ADMIN_CREATE_SQ, ADMIN_GET_LOG_PAGE, ADMIN_DELETE_CQ,
                             ADMIN_CREATE_CQ, ADMIN_IDENTIFY, ADMIN_ABORT, ADMIN_SET_FEATURES,
                             ADMIN_GET_FEATURES, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_SECURITY_SEND,
                             ADMIN_SECURITY_RECV}),
    io_opcodes=frozenset({IO_FLUSH, IO_WRITE, IO_READ, IO_COMPARE, IO_WRITE_ZEROES, IO_DSM}),
    features={FEAT_ARBITRATION: _CHG, FEAT_POWER_MGMT: _CHG, FEAT_TEMP_THRESHOLD: _CHG,
              FEAT_ERROR_RECOVERY: _CHG | FEAT_CAP_NS, FEAT_NUM_QUEUES: _CHG, FEAT_IRQ_COALESCE: _CHG,
              FEAT_IRQ_CONFIG: _CHG, FEAT_WRITE_ATOMIC: _CHG, FEAT_ASYNC_EVENT: _CHG, FEAT_TIMESTAMP: _CHG},
    temperature_k=310,
    guesses=(
        "PCI subsystem 144d:a801: OEM specific, unknown for host b6:00.0",
        "MSI-X: 130 vectors, table BAR0+0x2000, PBA BAR0+0x3000: unknown, must be measured",
        "CAP: MQES 0x3fff, TO 0x3c, DSTRD 0, NSSRS 0, MPSMAX 0: unknown, must be measured",
        "128 I/O queue pairs: the drive grants >= 8 (bare-metal dmesg), the maximum is unknown",
        "ssvid 0x144d, sn, cntlid 0x41 (from the Oracle part's dump): host-specific",
        "namespace: one active 3.84 TB namespace, 512 B LBAs, nguid/eui64 values invented",
        "Identify CNS 05h/06h answered Invalid Field (an NVMe 1.3 controller; reference 4.3 step 13)",
        "supported/changeable features, temperature 310 K: assumed",
        "fault reaction (DTE on read faults, CFS on SQ fetch faults, dropped posted writes)",
    ),
)

IDENTITIES: dict[str, NvmeIdentity] = {"vfio": PM173X, "emulated": QEMU_NVME}


def identity_named(name: str) -> NvmeIdentity:
    """The identity for a MachineConfig.nvme value ("vfio" or "emulated")."""
    try:
        return IDENTITIES[name]
    except KeyError:
        raise ValueError(f"unknown NVMe identity {name!r} (choose from {', '.join(IDENTITIES)})") from None


# ------------------------------------------------------------------------------------------
# namespace backing store
# ------------------------------------------------------------------------------------------


class Namespace:
    """A namespace's blocks: a dict LBA -> block bytes; never-written and deallocated blocks read as zeros."""

    def __init__(self, spec: NamespaceSpec) -> None:
        self.nsid = spec.nsid
        self.spec = spec
        self.block_size = spec.id_ns.block_size
        self.nsze = spec.id_ns.nsze
        self._zero = bytes(self.block_size)
        self._blocks: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"<Namespace {self.nsid} {self.nsze} x {self.block_size} B, {len(self._blocks)} written>"

    @property
    def written_blocks(self) -> int:
        return len(self._blocks)

    def in_range(self, slba: int, nlb: int) -> bool:
        return slba + nlb <= self.nsze

    def read(self, slba: int, nlb: int) -> bytes:
        get, zero = self._blocks.get, self._zero
        return b"".join([get(lba, zero) for lba in range(slba, slba + nlb)])

    def write(self, slba: int, data: bytes) -> None:
        bs = self.block_size
        blocks = self._blocks
        for i in range(len(data) // bs):
            blocks[slba + i] = data[i * bs:(i + 1) * bs]

    def deallocate(self, slba: int, nlb: int) -> None:
        pop = self._blocks.pop
        for lba in range(slba, slba + nlb):
            pop(lba, None)


# ------------------------------------------------------------------------------------------
# controller
# ------------------------------------------------------------------------------------------


@attrs.frozen
class NvmeStats:
    """Counters of one controller (a snapshot)."""

    commands_completed: int
    commands_failed: int
    host_read_commands: int
    host_write_commands: int
    bytes_to_host: int
    bytes_from_host: int
    dma_faults: int
    interrupts: int


class CommandError(Exception):
    """A command ends with ``status`` (15-bit, DNR included) and DW0 ``result``.

    Raised by the decoders (identify_data, log_page, map_prp, map_sgl) and the DMA engine.
    """

    def __init__(self, status: int, result: int = 0) -> None:
        self.status = status
        self.result = result
        super().__init__(f"command status 0x{status:04x}")


class _Abandoned(Exception):
    """The command's controller was reset, or its SQ deleted / the command aborted: post nothing."""


class _Held(Exception):
    """The command stays outstanding without a completion (Asynchronous Event Request)."""


class _SQ:
    __slots__ = ("qid", "base", "size", "cqid", "head", "tail", "outstanding", "inflight", "shadow")

    def __init__(self, qid: int, base: int, size: int, cqid: int) -> None:
        self.qid = qid
        self.base = base
        self.size = size
        self.cqid = cqid
        self.head = 0
        self.tail = 0
        #: fetched commands whose completion entry is not posted yet (QEMU's request pool, <= size)
        self.outstanding = 0
        self.inflight: list[_Command] = []
        #: (doorbell IOVA, event-index IOVA) once Doorbell Buffer Config is in effect
        self.shadow: tuple[int, int] | None = None


class _CQ:
    __slots__ = ("qid", "base", "size", "head", "tail", "phase", "vector", "ien", "pending", "sqids", "shadow")

    def __init__(self, qid: int, base: int, size: int, vector: int, ien: bool) -> None:
        self.qid = qid
        self.base = base
        self.size = size
        self.head = 0
        self.tail = 0
        self.phase = 1
        self.vector = vector
        self.ien = ien
        self.pending: collections.deque[tuple[_Command, int, int]] = collections.deque()
        self.sqids: list[int] = []
        self.shadow: tuple[int, int] | None = None


class _Command:
    __slots__ = ("sqe", "sq", "epoch", "aborted")

    def __init__(self, sqe: SubmissionEntry, sq: _SQ, epoch: int) -> None:
        self.sqe = sqe
        self.sq = sq
        self.epoch = epoch
        self.aborted = False


_DEFAULT_FEATURES: dict[int, int] = {FEAT_ARBITRATION: 0x7, FEAT_VOLATILE_WC: 1}


class NvmeController:
    """An NVMe controller: BAR0 handler, command engine and DMA engine.

    ``dma`` is the IOMMU-side port, ``msix(vector)`` delivers an MSI-X message through the PCI
    function, ``bus_master()`` reads the PCI command register's Bus Master Enable bit.
    Call ``bus_master_changed()`` when the guest sets it so pending work resumes.
    """

    def __init__(self, sim: Simulator, identity: str | NvmeIdentity, cost: CostModel, dma: DmaPort,
                 msix: Callable[[int], None], bus_master: Callable[[], bool], *, name: str = "nvme") -> None:
        self.sim = sim
        self.identity = identity_named(identity) if isinstance(identity, str) else identity
        self.cost = cost
        self.dma = dma
        self.name = name
        self._msix = msix
        self._bus_master = bus_master
        ident = self.identity
        self._qemu = ident.emulated
        self._id_ctrl = ident.id_ctrl
        self._id_ctrl_bytes = ident.id_ctrl.pack()
        self.namespaces: dict[int, Namespace] = {spec.nsid: Namespace(spec) for spec in ident.namespaces}
        self._dstrd = (ident.cap >> 32) & 0xF
        # registers
        self._cc = 0
        self._csts = 0
        self._aqa = 0
        self._asq = 0
        self._acq = 0
        self._intms = 0
        # controller state (reset by a controller reset)
        self._epoch = 0
        self._ready = False
        self._halted = False
        self._page_size = 4096
        self._sqs: dict[int, _SQ] = {}
        self._cqs: dict[int, _CQ] = {}
        self._qs_created = False
        self._aer_reqs: list[_Command] = []
        self._aer_events: collections.deque[tuple[int, int, int]] = collections.deque()
        self._aer_mask = 0
        self._dbbuf: tuple[int, int] | None = None
        # features (QEMU keeps them across controller resets; so does this model)
        self._features: dict[int, int] = dict(_DEFAULT_FEATURES)
        self._temp_over = self._id_ctrl.wctemp
        self._temp_under = 0
        self._host_timestamp = 0
        self._timestamp_set_ps = 0
        self._host_behavior = bytes(512)
        # handshakes: generation counters make late transitions harmless
        self._en_gen = 0
        self._shn_gen = 0
        self._transitions: Queue[tuple[str, int, tuple[int, int, int, int]]] = Queue(name=f"{name}.cc")
        # timing
        self._link_free = 0
        self._bw = cost.nvme_bandwidth_bytes_per_s
        self._pcie = cost.pcie_latency_ps
        # counters
        self._n = dict.fromkeys(("completed", "failed", "reads", "writes", "to_host", "from_host", "faults",
                                 "irqs"), 0)
        self._wake = Event(f"{name}.doorbell")
        self._cmd_task_name = f"{name}.cmd"
        self._tasks_started = False  # the engine and control tasks start at the first BAR0 write

    def __repr__(self) -> str:
        return (f"<NvmeController {self.name} {self.identity.name} CC=0x{self._cc:08x} CSTS=0x{self._csts:x} "
                f"queues={sorted(self._sqs)}>")

    # -- queries ------------------------------------------------------------------------------
    @property
    def csts(self) -> int:
        return self._csts

    @property
    def page_size(self) -> int:
        return self._page_size

    def stats(self) -> NvmeStats:
        n = self._n
        return NvmeStats(n["completed"], n["failed"], n["reads"], n["writes"], n["to_host"], n["from_host"],
                         n["faults"], n["irqs"])

    def queue_state(self) -> dict[str, tuple[int, ...]]:
        """{"sq<q>": (head, tail, size, cqid), "cq<q>": (head, tail, size, phase)} for tests and dumps."""
        out: dict[str, tuple[int, ...]] = {}
        for q in sorted(self._sqs):
            s = self._sqs[q]
            out[f"sq{q}"] = (s.head, s.tail, s.size, s.cqid)
        for q in sorted(self._cqs):
            c = self._cqs[q]
            out[f"cq{q}"] = (c.head, c.tail, c.size, c.phase)
        return out

    def _trace(self, event: str, **fields: Any) -> None:
        self.sim.trace(self.name, event, **fields)

    # -- BAR0 --------------------------------------------------------------------------------
    def _register_image(self) -> bytes:
        ident = self.identity
        return struct.pack("<QIIIIIIIIQQ", ident.cap, ident.vs, self._intms, self._intms, self._cc, 0,
                           self._csts, 0, self._aqa, self._asq, self._acq)

    def mmio_read(self, offset: int, size: int) -> int:
        """A guest read of BAR0 (NVMe 1.4 section 3.1); doorbells and unimplemented registers read 0."""
        if size not in (1, 2, 4, 8) or offset < 0 or offset + size > self.identity.bar0_size:
            if self.sim.tracing:
                self._trace("mmio_read_invalid", offset=offset, size=size)
            return 0
        image = self._register_image()
        if offset + size > len(image):
            return 0
        return int.from_bytes(image[offset:offset + size], "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """A guest write of BAR0: registers act at once, doorbells are posted (wake the engine)."""
        if not self._tasks_started:
            self._tasks_started = True
            self.sim.spawn(self._engine(), name=f"{self.name}.engine")
            self.sim.spawn(self._control(), name=f"{self.name}.control")
        if size not in (1, 2, 4, 8) or offset < 0 or offset + size > self.identity.bar0_size:
            if self.sim.tracing:
                self._trace("mmio_write_invalid", offset=offset, size=size, value=value)
            return
        if offset >= DOORBELL_BASE:
            self._doorbell(offset, size, value)
            return
        if offset & 3 or (size == 8 and offset & 7):
            if self.sim.tracing:
                self._trace("mmio_write_misaligned", offset=offset, size=size, value=value)
            return
        if size == 8:
            self._write_reg(offset, value & 0xFFFF_FFFF)
            self._write_reg(offset + 4, value >> 32 & 0xFFFF_FFFF)
        elif size == 4:
            self._write_reg(offset, value & 0xFFFF_FFFF)
        else:  # sub-dword write: merge into the dword (read-modify-write)
            base = offset & ~3
            cur = int.from_bytes(self._register_image()[base:base + 4], "little") if base < 0x40 else 0
            shift = (offset - base) * 8
            mask = ((1 << (8 * size)) - 1) << shift
            self._write_reg(base, (cur & ~mask) | ((value << shift) & mask))

    def _write_reg(self, offset: int, value: int) -> None:
        if self.sim.tracing:
            self._trace("mmio_write", reg=REGISTER_NAMES.get(offset, f"0x{offset:x}"), offset=offset, value=value)
        if offset == REG_CC:
            self._write_cc(value)
        elif offset == REG_INTMS:
            self._intms |= value
        elif offset == REG_INTMC:
            self._intms &= ~value
        elif offset == REG_AQA:
            self._aqa = value & 0x0FFF_0FFF
        elif offset == REG_ASQ:
            self._asq = (self._asq & ~0xFFFF_FFFF) | value
        elif offset == REG_ASQ + 4:
            self._asq = (self._asq & 0xFFFF_FFFF) | value << 32
        elif offset == REG_ACQ:
            self._acq = (self._acq & ~0xFFFF_FFFF) | value
        elif offset == REG_ACQ + 4:
            self._acq = (self._acq & 0xFFFF_FFFF) | value << 32
        # CAP, VS, CSTS (NSSRO is not implemented: CAP.NSSRS = 0), NSSR, CMB*: read-only / ignored

    # -- CC handshakes (NVMe 1.4 section 7.6.1 initialization, 7.6.2 shutdown) ----------------
    def _write_cc(self, value: int) -> None:
        old, self._cc = self._cc, value
        shn_old = cc_field(old, CC_SHN_SHIFT, CC_SHN_MASK)
        shn_new = cc_field(value, CC_SHN_SHIFT, CC_SHN_MASK)
        if shn_new and not shn_old:
            self._shn_gen += 1
            self._set_shst(SHST_OCCURRING)
            self._transitions.put_nowait(("shutdown", self._shn_gen, (0, 0, 0, 0)))
        elif shn_old and not shn_new:
            self._shn_gen += 1
            self._set_shst(0)
        if value & CC_EN and not old & CC_EN:
            self._en_gen += 1
            # QEMU nvme_start_ctrl reads AQA/ASQ/ACQ at the moment EN is written
            self._transitions.put_nowait(("enable", self._en_gen, (value, self._aqa, self._asq, self._acq)))
        elif old & CC_EN and not value & CC_EN:
            self._en_gen += 1
            self._controller_reset()
            if self._qemu:
                self._cc = 0  # QEMU nvme_ctrl_reset zeroes CC
            self._transitions.put_nowait(("disable", self._en_gen, (0, 0, 0, 0)))

    def _set_shst(self, shst: int) -> None:
        self._csts = (self._csts & ~(CSTS_SHST_MASK << CSTS_SHST_SHIFT)) | shst << CSTS_SHST_SHIFT

    async def _control(self) -> None:
        """Apply CC transitions in the order they were written, each after its latency."""
        cost = self.cost
        while True:
            kind, gen, snap = await self._transitions.get()
            if kind == "enable":
                await sleep(cost.nvme_enable_ps)
                if gen == self._en_gen and self._cc & CC_EN:
                    self._start(*snap)
            elif kind == "disable":
                await sleep(cost.nvme_disable_ps)
                self._csts = 0  # RDY, CFS and SHST clear once the reset has completed
                if self.sim.tracing:
                    self._trace("disabled", csts=self._csts)
            else:
                await sleep(cost.nvme_shutdown_ps)
                if gen == self._shn_gen and cc_field(self._cc, CC_SHN_SHIFT, CC_SHN_MASK):
                    self._set_shst(SHST_COMPLETE)
                    if self.sim.tracing:
                        self._trace("shutdown_complete", csts=self._csts)

    def start_failure(self, cc: int, aqa: int, asq: int, acq: int) -> str | None:
        """Why CC.EN=1 with these registers fails (QEMU nvme_start_ctrl), or None if it succeeds."""
        cap = self.identity.cap
        mps = cc_field(cc, CC_MPS_SHIFT, CC_MPS_MASK)
        page = 1 << (12 + mps)
        css = cc_field(cc, CC_CSS_SHIFT, CC_CSS_MASK)
        if asq & (page - 1):
            return f"ASQ 0x{asq:x} is not aligned to the {page} B memory page"
        if acq & (page - 1):
            return f"ACQ 0x{acq:x} is not aligned to the {page} B memory page"
        if not (cap >> 37) & (1 << css):
            return f"CC.CSS {css} is not supported by CAP.CSS"
        if mps < (cap >> 48) & 0xF:
            return f"CC.MPS {mps} is below CAP.MPSMIN"
        if mps > (cap >> 52) & 0xF:
            return f"CC.MPS {mps} is above CAP.MPSMAX"
        if not aqa & 0xFFF:
            return "AQA.ASQS is 0"
        if not (aqa >> 16) & 0xFFF:
            return "AQA.ACQS is 0"
        return None

    def _start(self, cc: int, aqa: int, asq: int, acq: int) -> None:
        failure = self.start_failure(cc, aqa, asq, acq)
        if failure is not None:
            self._csts = CSTS_CFS  # QEMU: CSTS = NVME_CSTS_FAILED
            if self.sim.tracing:
                self._trace("start_failed", reason=failure, csts=self._csts)
            return
        self._page_size = 1 << (12 + cc_field(cc, CC_MPS_SHIFT, CC_MPS_MASK))
        acq_size, asq_size = ((aqa >> 16) & 0xFFF) + 1, (aqa & 0xFFF) + 1
        self._cqs[0] = _CQ(0, acq, acq_size, vector=0, ien=True)
        self._sqs[0] = _SQ(0, asq, asq_size, cqid=0)
        self._cqs[0].sqids.append(0)
        self._host_timestamp, self._timestamp_set_ps = 0, self.sim.now  # QEMU nvme_set_timestamp(n, 0)
        self._ready = True
        self._csts |= CSTS_RDY
        if self.sim.tracing:
            self._trace("ready", csts=self._csts, asq=asq, acq=acq, asq_size=asq_size, acq_size=acq_size,
                        page_size=self._page_size)
        self._wake.set()

    def _controller_reset(self) -> None:
        """CC.EN 1->0 (QEMU nvme_ctrl_reset): delete all queues, drop outstanding commands and AERs."""
        self._epoch += 1
        self._ready = False
        self._halted = False
        self._sqs.clear()
        self._cqs.clear()
        self._qs_created = False
        self._aer_reqs.clear()
        self._aer_events.clear()
        self._aer_mask = 0
        self._dbbuf = None
        if self.sim.tracing:
            self._trace("reset", epoch=self._epoch)

    def reset(self) -> None:
        """PCI function reset (FLR / system reset): registers to their power-on values at once."""
        self._en_gen += 1
        self._shn_gen += 1
        self._controller_reset()
        self._cc = self._csts = self._aqa = self._asq = self._acq = self._intms = 0

    def bus_master_changed(self) -> None:
        """The PCI command register changed: re-examine pending work."""
        self._wake.set()

    # -- doorbells (NVMe 1.4 sections 3.1.24-25; QEMU nvme_process_db) ------------------------
    def _doorbell(self, offset: int, size: int, value: int) -> None:
        rel = offset - DOORBELL_BASE
        stride = 4 << self._dstrd
        if rel & 3 or size < 2 or rel % stride:
            if self.sim.tracing:
                self._trace("doorbell_ignored", offset=offset, size=size, value=value, reason="misaligned")
            return
        index = rel // stride
        qid, is_cq = index >> 1, index & 1
        value &= 0xFFFF
        kind = "cq" if is_cq else "sq"
        queue: _SQ | _CQ | None = (self._cqs if is_cq else self._sqs).get(qid)
        if queue is None:
            self._bad_doorbell(kind, qid, value, AER_INFO_ERR_INVALID_DB_REGISTER, "no such queue")
            return
        if value >= queue.size:
            self._bad_doorbell(kind, qid, value, AER_INFO_ERR_INVALID_DB_VALUE, f"beyond queue size {queue.size}")
            return
        if self.sim.tracing:
            self._trace("doorbell", queue=f"{kind}{qid}", value=value)
        if isinstance(queue, _CQ):
            queue.head = value
        else:
            queue.tail = value
        if queue.shadow is not None and qid == 0:
            # QEMU keeps the admin queue's shadow doorbell in step with MMIO writes (Linux never
            # updates it), since nvme_process_sq re-reads the shadow of every queue.
            self._write_shadow(queue.shadow[0], value)
        self._wake.set()

    def _bad_doorbell(self, kind: str, qid: int, value: int, info: int, reason: str) -> None:
        if self.sim.tracing:
            self._trace("doorbell_invalid", queue=f"{kind}{qid}", value=value, reason=reason,
                        aer_outstanding=len(self._aer_reqs))
        if self._aer_reqs:  # NVMe 1.3d 4.1: posted only if an AER command is outstanding
            self._aer_events.append((AER_TYPE_ERROR, info, LOG_ERROR))
            self._process_aers()

    # -- the DMA engine's accesses -----------------------------------------------------------
    def _dma_read(self, iova: int, size: int) -> bytes:
        if not self._bus_master():
            raise DmaFault(iova, DMA_READ, "bus master disabled")
        end = iova + size
        if (iova ^ (end - 1)) < DMA_SPLIT:
            return self.dma.dma_read(iova, size)
        out = bytearray()
        pos = iova
        while pos < end:
            n = min(DMA_SPLIT - (pos & (DMA_SPLIT - 1)), end - pos)
            out += self.dma.dma_read(pos, n)
            pos += n
        return bytes(out)

    def _dma_write(self, iova: int, data: bytes) -> None:
        if not self._bus_master():
            raise DmaFault(iova, DMA_WRITE, "bus master disabled")
        size = len(data)
        if (iova ^ (iova + size - 1)) < DMA_SPLIT:
            self.dma.dma_write(iova, data)
            return
        done = 0
        while done < size:
            pos = iova + done
            n = min(DMA_SPLIT - (pos & (DMA_SPLIT - 1)), size - done)
            self.dma.dma_write(pos, data[done:done + n])
            done += n

    def _fault(self, fault: DmaFault, what: str, **fields: Any) -> None:
        self._n["faults"] += 1
        if self.sim.tracing:
            self._trace("dma_fault", what=what, iova=fault.iova, access="read" if fault.access == DMA_READ else "write",
                        reason=fault.reason, **fields)

    def _fatal(self, what: str) -> None:
        """Controller Fatal Status (QEMU: CSTS = CFS; a physical device halts until reset)."""
        if self._qemu:
            self._csts = CSTS_CFS
        else:
            self._csts |= CSTS_CFS
            self._halted = True
        if self.sim.tracing:
            self._trace("cfs", what=what, csts=self._csts)

    def _read_shadow(self, iova: int) -> int | None:
        try:
            return int(struct.unpack("<I", self._dma_read(iova, 4))[0])
        except DmaFault as fault:
            self._fault(fault, "shadow_doorbell")
            return None

    def _write_shadow(self, iova: int, value: int) -> None:
        try:
            self._dma_write(iova, struct.pack("<I", value))
        except DmaFault as fault:
            self._fault(fault, "shadow_doorbell")

    # -- the engine: post completions, fetch commands ----------------------------------------
    async def _engine(self) -> None:
        wake = self._wake
        while True:
            wake.clear()
            if not self._service():
                await wake.wait()

    def _service(self) -> bool:
        """Post what can be posted, then fetch (round robin by qid); True if anything moved."""
        if not self._ready or self._halted:
            return False
        if not self._qemu and not self._bus_master():
            if self.sim.tracing:
                self._trace("bus_master_off", pending=sum(sq.tail != sq.head for sq in self._sqs.values()))
            return False
        progressed = False
        for qid in sorted(self._cqs):
            progressed |= self._post_cqes(self._cqs[qid])
        return self._fetch() or progressed

    def _fetch(self) -> bool:
        sqs = [self._sqs[q] for q in sorted(self._sqs)]
        for sq in sqs:
            if sq.shadow is not None:
                tail = self._read_shadow(sq.shadow[0])
                if tail is not None and tail < sq.size:
                    sq.tail = tail
        fetched = False
        active = [sq for sq in sqs if sq.head != sq.tail and sq.outstanding < sq.size]
        while active and not self._halted:
            following = []
            for sq in active:
                if self._halted or not self._fetch_one(sq):
                    continue  # a failed fetch stops this SQ for this pass (QEMU: break)
                fetched = True
                if sq.head != sq.tail and sq.outstanding < sq.size:
                    following.append(sq)
            active = following
        for sq in sqs:
            if sq.shadow is not None:
                self._write_shadow(sq.shadow[1], sq.tail)  # event index = tail seen (QEMU)
        return fetched

    def _fetch_one(self, sq: _SQ) -> bool:
        addr = sq.base + (sq.head << SQES_LOG2)
        try:
            raw = self._dma_read(addr, SQE_SIZE)
        except DmaFault as fault:
            self._fault(fault, "sq_fetch", sqid=sq.qid, head=sq.head)
            self._fatal(f"SQ {sq.qid} entry fetch at 0x{addr:x}")
            return False
        sqe = SubmissionEntry.unpack(raw)
        sq.head = (sq.head + 1) % sq.size
        sq.outstanding += 1
        cmd = _Command(sqe, sq, self._epoch)
        sq.inflight.append(cmd)
        if self.sim.tracing:
            names = ADMIN_OPCODE_NAMES if sq.qid == 0 else IO_OPCODE_NAMES
            self._trace("fetch", sqid=sq.qid, cid=sqe.cid, opcode=sqe.opcode,
                        name=names.get(sqe.opcode, "unknown"), nsid=sqe.nsid)
        self.sim.spawn(self._run(cmd), name=self._cmd_task_name)
        return True

    def _post_cqes(self, cq: _CQ) -> bool:
        if cq.shadow is not None:
            head = self._read_shadow(cq.shadow[0])
            if head is not None and head < cq.size:
                cq.head = head
        posted = 0
        pending = cq.pending
        while pending and (cq.tail + 1) % cq.size != cq.head:
            cmd, status, result = pending[0]
            sq = cmd.sq
            cqe = CompletionEntry(result=result, sq_head=sq.head, sq_id=sq.qid, cid=cmd.sqe.cid, status=status,
                                  phase=cq.phase)
            addr = cq.base + (cq.tail << CQES_LOG2)
            try:
                self._dma_write(addr, cqe.pack())
            except DmaFault as fault:
                self._fault(fault, "cq_post", cqid=cq.qid, tail=cq.tail)
                if self._qemu:
                    self._fatal(f"CQ {cq.qid} entry post at 0x{addr:x}")
                    break
                # a physical device's posted write is dropped: it believes the entry is posted
            pending.popleft()
            sq.outstanding -= 1
            if self.sim.tracing:
                self._trace("post_cqe", cqid=cq.qid, tail=cq.tail, phase=cq.phase, sqid=sq.qid, cid=cmd.sqe.cid,
                            status=status, result=result)
            cq.tail += 1
            if cq.tail == cq.size:
                cq.tail = 0
                cq.phase ^= 1
            posted += 1
        if posted and cq.ien:
            self._n["irqs"] += 1
            if self.sim.tracing:
                self._trace("msix", vector=cq.vector, cqid=cq.qid, entries=posted)
            self._msix(cq.vector)
        if cq.shadow is not None:
            self._write_shadow(cq.shadow[1], cq.head)
        return posted > 0

    # -- commands ------------------------------------------------------------------------------
    async def _delay(self, cmd: _Command, ps: int) -> None:
        if ps:
            await sleep(ps)
        if cmd.epoch != self._epoch or cmd.aborted:
            raise _Abandoned

    async def _run(self, cmd: _Command) -> None:
        try:
            await self._delay(cmd, self._pcie)  # the SQ-entry read round trip
            if cmd.sq.qid == 0:
                if not self._qemu:
                    await self._delay(cmd, self.cost.nvme_admin_firmware_ps)
                status, result = await self._admin(cmd)
            else:
                status, result = await self._io(cmd)
        except CommandError as st:
            status, result = st.status, st.result
        except (_Abandoned, _Held):
            return
        self._complete(cmd, status, result)

    def _complete(self, cmd: _Command, status: int, result: int = 0) -> None:
        if cmd.epoch != self._epoch or cmd.aborted:
            return
        sq = cmd.sq
        sq.inflight.remove(cmd)
        self._cqs[sq.cqid].pending.append((cmd, status, result))
        self._n["completed"] += 1
        if status:
            self._n["failed"] += 1
        if self.sim.tracing:
            self._trace("complete", sqid=sq.qid, cid=cmd.sqe.cid, opcode=cmd.sqe.opcode, status=status, result=result)
        self._wake.set()

    # data movement ------------------------------------------------------------------------------
    def map_prp(self, prp1: int, prp2: int, length: int) -> tuple[list[tuple[int, int]], int]:
        """Walk a PRP pair / PRP list (NVMe 1.4 section 4.3; QEMU nvme_map_prp).

        Returns the data segments (iova, length) and the number of PRP-list reads made.
        Raises CommandError: PRP Offset Invalid for an entry other than PRP1 / a list pointer with an
        in-page offset, Data Transfer Error when a list read faults.
        """
        page = self._page_size
        first = min(length, page - (prp1 % page))
        segs = [(prp1, first)]
        left = length - first
        if not left:
            return segs, 0
        if left <= page:
            if prp2 & (page - 1):
                raise CommandError(INVALID_PRP_OFFSET | DNR)
            segs.append((prp2, left))
            return segs, 0
        reads = 0
        list_addr = prp2
        while left:  # bounded: every list page maps data pages or chains to a page-aligned list that does
            if list_addr & 7:  # a PRP list pointer is qword aligned (NVMe 1.4 Figure 108)
                raise CommandError(INVALID_PRP_OFFSET | DNR)
            nents = (page - (list_addr & (page - 1))) >> 3
            pages_left = -(-left // page)
            want = min(nents, pages_left)
            entries = self._read_prp_list(list_addr, want)
            reads += 1
            for i, entry in enumerate(entries):
                if i == nents - 1 and left > page:  # the last slot of a list page chains to the next
                    if entry & (page - 1):
                        raise CommandError(INVALID_PRP_OFFSET | DNR)
                    list_addr = entry
                    break
                if entry & (page - 1):
                    raise CommandError(INVALID_PRP_OFFSET | DNR)
                n = min(left, page)
                segs.append((entry, n))
                left -= n
        return segs, reads

    def _read_prp_list(self, addr: int, count: int) -> tuple[int, ...]:
        try:
            raw = self._dma_read(addr, count * 8)
        except DmaFault as fault:
            self._fault(fault, "prp_list")
            raise CommandError(DATA_TRANSFER_ERROR) from None
        return struct.unpack(f"<{count}Q", raw)

    def map_sgl(self, dptr: bytes, length: int) -> tuple[list[tuple[int, int]], int]:
        """Walk an SGL (NVMe 1.4 section 4.4; QEMU nvme_map_sgl): data blocks, segments, last segments.

        Returns the data segments and the number of segment reads.  Bounded: every segment must
        map at least one byte, and mapping stops at ``length``.
        """
        desc = SglDescriptor.unpack(dptr)
        if desc.type == SGL_TYPE_DATA_BLOCK:
            segs, left = self._sgl_data([desc], length)
            if left:
                raise CommandError(DATA_SGL_LEN_INVALID | DNR)
            return segs, 0
        segs: list[tuple[int, int]] = []
        reads = 0
        seen = 0
        left = length
        while True:
            if desc.type not in (SGL_TYPE_SEGMENT, SGL_TYPE_LAST_SEGMENT):
                raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
            if not desc.length or desc.length & 0xF:
                raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
            count = desc.length // 16
            seen += count
            if seen > SGL_MAX_DESCRIPTORS:  # model limit, like QEMU's IOV_MAX cap on mappings
                raise CommandError(INTERNAL_ERROR | DNR)
            raw = b""
            for off in range(0, desc.length, DMA_SPLIT):  # one read per 4 KiB chunk of descriptors
                try:
                    raw += self._dma_read(desc.address + off, min(DMA_SPLIT, desc.length - off))
                except DmaFault as fault:
                    self._fault(fault, "sgl_segment")
                    raise CommandError(DATA_TRANSFER_ERROR) from None
                reads += 1
            descs = [SglDescriptor.unpack(raw[16 * i:16 * i + 16]) for i in range(count)]
            last = descs[-1]
            if last.type == SGL_TYPE_DATA_BLOCK:
                more, left = self._sgl_data(descs, left)
                segs += more
                break
            if desc.type == SGL_TYPE_LAST_SEGMENT:
                raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
            before = left
            more, left = self._sgl_data(descs[:-1], left)
            segs += more
            if left == before:  # no forward progress (QEMU rejects this to stop loops)
                raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
            desc = last
        if left:
            raise CommandError(DATA_SGL_LEN_INVALID | DNR)
        return segs, reads

    def _sgl_data(self, descs: list[SglDescriptor], left: int) -> tuple[list[tuple[int, int]], int]:
        segs = []
        for d in descs:
            if d.type in (SGL_TYPE_SEGMENT, SGL_TYPE_LAST_SEGMENT):
                raise CommandError(INVALID_NUM_SGL_DESCRS | DNR)
            if d.type != SGL_TYPE_DATA_BLOCK:
                raise CommandError(SGL_DESCR_TYPE_INVALID | DNR)
            if not d.length:
                continue
            if not left:
                if self._id_ctrl.sgls & (1 << 18):  # SGL length larger than the data is allowed
                    break
                raise CommandError(DATA_SGL_LEN_INVALID | DNR)
            n = min(left, d.length)
            segs.append((d.address, n))
            left -= n
        return segs, left

    async def _map(self, cmd: _Command, length: int) -> list[tuple[int, int]]:
        sqe = cmd.sqe
        if not length:
            return []
        if sqe.psdt == PSDT_PRP:
            segs, reads = self.map_prp(sqe.prp1, sqe.prp2, length)
        else:
            segs, reads = self.map_sgl(sqe.dptr, length)
        if reads:
            await self._delay(cmd, reads * self._pcie)
        return segs

    async def _reserve_link(self, cmd: _Command, nbytes: int) -> int:
        """Book the shared data link for ``nbytes``; returns the transfer time once the slot starts."""
        now = self.sim.now
        start = max(now, self._link_free)
        duration = -(-nbytes * PS_PER_S // self._bw)
        self._link_free = start + duration
        await self._delay(cmd, start - now)
        return duration

    async def _to_host(self, cmd: _Command, segs: list[tuple[int, int]], data: bytes) -> None:
        duration = await self._reserve_link(cmd, len(data))
        await self._delay(cmd, duration)
        pos = 0
        for iova, n in segs:
            try:
                self._dma_write(iova, data[pos:pos + n])
            except DmaFault as fault:
                self._fault(fault, "data_write", sqid=cmd.sq.qid, cid=cmd.sqe.cid)
                if self._qemu:
                    raise CommandError(DATA_TRANSFER_ERROR) from None
                # vfio: the posted write is dropped by the host IOMMU; the command still succeeds
            pos += n
        self._n["to_host"] += len(data)
        await self._delay(cmd, self._pcie)

    async def _from_host(self, cmd: _Command, segs: list[tuple[int, int]], length: int) -> bytes:
        duration = await self._reserve_link(cmd, length)
        chunks = []
        for iova, n in segs:
            try:
                chunks.append(self._dma_read(iova, n))
            except DmaFault as fault:
                self._fault(fault, "data_read", sqid=cmd.sq.qid, cid=cmd.sqe.cid)
                raise CommandError(DATA_TRANSFER_ERROR) from None
        self._n["from_host"] += length
        await self._delay(cmd, duration + self._pcie)
        return b"".join(chunks)

    async def _c2h(self, cmd: _Command, data: bytes) -> None:
        """Controller-to-host data of an admin command: map, service time, transfer."""
        segs = await self._map(cmd, len(data))
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        await self._to_host(cmd, segs, data)

    async def _h2c(self, cmd: _Command, length: int) -> bytes:
        segs = await self._map(cmd, length)
        data = await self._from_host(cmd, segs, length)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return data

    # -- admin commands (NVMe 1.4 section 5; QEMU nvme_admin_cmd) -----------------------------
    async def _admin(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        handler = self._ADMIN.get(sqe.opcode) if sqe.opcode in self.identity.admin_opcodes else None
        if handler is None:
            raise CommandError(INVALID_OPCODE | DNR)
        if sqe.psdt != PSDT_PRP:  # SGLs shall not be used for admin commands over PCIe
            raise CommandError(INVALID_FIELD | DNR)
        if sqe.fuse:
            raise CommandError(INVALID_FIELD)
        return await handler(self, cmd)

    def _nsid_valid(self, nsid: int) -> bool:
        return 1 <= nsid <= self._id_ctrl.nn

    async def _identify(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        data = self.identify_data(sqe.cdw10 & 0xFF, sqe.nsid, sqe.cdw11 >> 24)
        await self._c2h(cmd, data)
        return SUCCESS, 0

    def identify_data(self, cns: int, nsid: int, csi: int) -> bytes:
        """The 4096-byte answer to Identify (QEMU nvme_identify), or raises CommandError."""
        if cns not in self.identity.identify_cns:
            raise CommandError(INVALID_FIELD | DNR)
        if cns == CNS_CTRL:
            return self._id_ctrl_bytes
        if cns == CNS_CS_CTRL:
            if csi != 0 or self.identity.id_ctrl_nvm is None:
                raise CommandError(INVALID_FIELD | DNR)
            return self.identity.id_ctrl_nvm
        if cns in (CNS_NS_ACTIVE_LIST, CNS_NS_PRESENT_LIST, CNS_CS_NS_ACTIVE_LIST):
            if nsid >= NSID_BROADCAST - 1:
                raise CommandError(INVALID_NSID | DNR)
            if cns == CNS_CS_NS_ACTIVE_LIST and csi != 0:
                raise CommandError(INVALID_FIELD | DNR)
            ids = [n for n in sorted(self.namespaces) if n > nsid][:1024]
            return struct.pack(f"<{len(ids)}I", *ids).ljust(IDENTIFY_SIZE, b"\0")
        if cns == CNS_IO_COMMAND_SET:  # one vector: NVM (bit 0) and Zoned (bit 2), as QEMU reports
            return struct.pack("<Q", 0x5).ljust(IDENTIFY_SIZE, b"\0")
        # namespace-specific structures
        if nsid == NSID_BROADCAST and cns == CNS_NS and not self._qemu:
            ns0 = self.identity.namespaces[0].id_ns  # capabilities common to all namespaces
            return attrs.evolve(ns0, nsze=0, ncap=0, nuse=0, nguid=bytes(16), eui64=0, nvmcap=0).pack()
        if not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        ns = self.namespaces.get(nsid)
        if cns == CNS_NS_DESCR_LIST:
            if ns is None:
                raise CommandError(INVALID_FIELD | DNR)
            return ns_descriptor_list(list(ns.spec.descriptors))
        if ns is None:
            return bytes(IDENTIFY_SIZE)  # inactive namespace: a zero-filled structure
        if cns == CNS_CS_NS:
            if csi != 0:
                raise CommandError(INVALID_FIELD | DNR)
            return bytes(IDENTIFY_SIZE)  # NVM-specific namespace data: no PI, no extended LBA formats
        return ns.spec.id_ns.pack()

    async def _get_log_page(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        lid = sqe.cdw10 & 0xFF
        rae = (sqe.cdw10 >> 15) & 1
        numd = ((sqe.cdw11 & 0xFFFF) << 16 | sqe.cdw10 >> 16) + 1
        length = numd * 4
        offset = sqe.cdw13 << 32 | sqe.cdw12
        if offset & 3:
            raise CommandError(INVALID_FIELD | DNR)
        self._check_mdts(length)
        log = self.log_page(lid, sqe.nsid)
        if offset >= len(log):
            raise CommandError(INVALID_FIELD | DNR)
        if not rae:
            self._clear_events({LOG_ERROR: AER_TYPE_ERROR, LOG_SMART: AER_TYPE_SMART}.get(lid))
        await self._c2h(cmd, log[offset:offset + length])
        return SUCCESS, 0

    def log_page(self, lid: int, nsid: int) -> bytes:
        """The whole log page ``lid`` (QEMU nvme_get_log), or raises CommandError."""
        ctrl = self._id_ctrl
        if lid == LOG_ERROR:
            return bytes(ERROR_LOG_ENTRY_SIZE * (ctrl.elpe + 1))  # no error entries are recorded
        if lid == LOG_SMART:
            if nsid != NSID_BROADCAST:
                if self._qemu:
                    if nsid not in self.namespaces:
                        raise CommandError(INVALID_NSID | DNR)
                elif nsid != 0 and not ctrl.lpa & 1:
                    raise CommandError(INVALID_FIELD | DNR)
            n = self._n
            return SmartLog(
                temperature=self.identity.temperature_k,
                data_units_read=-(-(n["to_host"] >> 9) // 1000),  # units of 1000 x 512 B, rounded up
                data_units_written=-(-(n["from_host"] >> 9) // 1000),
                host_read_commands=n["reads"], host_write_commands=n["writes"],
                power_on_hours=self.sim.now // (3600 * PS_PER_S),
            ).pack()
        if lid == LOG_FW_SLOT:
            return firmware_slot_log(1, (ctrl.fr,))
        if lid == LOG_CMD_EFFECTS and ctrl.lpa & 2:
            lbcc = {IO_WRITE, IO_WRITE_ZEROES, IO_DSM, IO_FLUSH}
            return command_effects_log(
                dict.fromkeys(sorted(self.identity.admin_opcodes), CMD_EFFECTS_CSUPP),
                {op: CMD_EFFECTS_CSUPP | (CMD_EFFECTS_LBCC if op in lbcc else 0)
                 for op in sorted(self.identity.io_opcodes)},
            )
        # QEMU answers unknown log pages Invalid Field; the spec (and a real device) Invalid Log Page
        raise CommandError((INVALID_FIELD if self._qemu else INVALID_LOG_PAGE) | DNR)

    def _check_mdts(self, length: int) -> None:
        # MDTS is in units of CAP.MPSMIN pages; QEMU (nvme_check_mdts) scales the CC.MPS page, as here
        mdts = self._id_ctrl.mdts
        if mdts and length > self._page_size << mdts:
            raise CommandError(INVALID_FIELD | DNR)

    # features ------------------------------------------------------------------------------------
    def _feature_nsid_check(self, fid: int, nsid: int, set_: bool) -> None:
        caps = self.identity.features[fid]
        if caps & FEAT_CAP_NS:
            if nsid == NSID_BROADCAST and set_:
                return
            if not self._nsid_valid(nsid):
                raise CommandError(INVALID_NSID | DNR)
            if nsid not in self.namespaces:
                raise CommandError(INVALID_FIELD | DNR)
        elif set_ and nsid and nsid != NSID_BROADCAST:
            raise CommandError((FEATURE_NOT_NS_SPECIFIC if self._nsid_valid(nsid) else INVALID_NSID) | DNR)

    def _nq_result(self) -> int:
        n = self.identity.max_ioqpairs - 1
        return n | n << 16

    async def _get_features(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        fid, sel, dw11 = sqe.cdw10 & 0xFF, (sqe.cdw10 >> 8) & 0x7, sqe.cdw11
        if fid not in self.identity.features or sel > SEL_SUPPORTED:
            raise CommandError(INVALID_FIELD | DNR)
        self._feature_nsid_check(fid, sqe.nsid, set_=False)
        if sel == SEL_SUPPORTED:
            return SUCCESS, self.identity.features[fid]
        current = sel not in (SEL_DEFAULT, SEL_SAVED)  # nothing is saveable: saved = default
        if fid == FEAT_TIMESTAMP:
            await self._c2h(cmd, struct.pack("<Q", self._timestamp() if current else 0))
            return SUCCESS, 0
        if fid == FEAT_HOST_BEHAVIOR:
            await self._c2h(cmd, self._host_behavior if current else bytes(512))
            return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        if fid == FEAT_NUM_QUEUES:
            return SUCCESS, self._nq_result()
        if fid == FEAT_TEMP_THRESHOLD:
            if (dw11 >> 16) & 0xF:  # only the composite temperature sensor exists
                return SUCCESS, 0
            thsel = (dw11 >> 20) & 0x3
            if thsel > 1:
                raise CommandError(INVALID_FIELD | DNR)
            if not current:
                return SUCCESS, self._id_ctrl.wctemp if thsel == 0 else 0
            return SUCCESS, self._temp_over if thsel == 0 else self._temp_under
        if fid == FEAT_IRQ_CONFIG:
            iv = dw11 & 0xFFFF
            if iv > self.identity.max_ioqpairs:
                raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, iv | (1 << 16 if iv == 0 else 0)  # the admin vector is never coalesced
        if not current:
            return SUCCESS, _DEFAULT_FEATURES.get(fid, 0)
        return SUCCESS, self._features.get(fid, 0)

    async def _set_features(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        fid, save, dw11 = sqe.cdw10 & 0xFF, sqe.cdw10 >> 31, sqe.cdw11
        caps = self.identity.features.get(fid)
        if save and not (caps or 0) & 1:  # no feature is saveable (QEMU checks this first)
            raise CommandError(FEATURE_NOT_SAVEABLE | DNR)
        if caps is None:
            raise CommandError(INVALID_FIELD | DNR)
        self._feature_nsid_check(fid, sqe.nsid, set_=True)
        if not caps & FEAT_CAP_CHANGEABLE:
            raise CommandError(FEATURE_NOT_CHANGEABLE | DNR)
        if fid == FEAT_TIMESTAMP:
            data = await self._h2c(cmd, 8)
            self._host_timestamp = struct.unpack("<Q", data)[0] & ((1 << 48) - 1)
            self._timestamp_set_ps = self.sim.now
            return SUCCESS, 0
        if fid == FEAT_HOST_BEHAVIOR:
            self._host_behavior = await self._h2c(cmd, 512)
            return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        if fid == FEAT_NUM_QUEUES:
            if self._qs_created:  # "shall only be issued ... prior to creation of any I/O queues"
                raise CommandError(CMD_SEQ_ERROR | DNR)
            if dw11 & 0xFFFF == 0xFFFF or dw11 >> 16 == 0xFFFF:
                raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, self._nq_result()  # allocated: the controller's maximum (as QEMU)
        if fid == FEAT_TEMP_THRESHOLD:
            if not (dw11 >> 16) & 0xF:
                thsel = (dw11 >> 20) & 0x3
                if thsel == 0:
                    self._temp_over = dw11 & 0xFFFF
                elif thsel == 1:
                    self._temp_under = dw11 & 0xFFFF
                else:
                    raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, 0
        if fid == FEAT_IRQ_CONFIG and (dw11 & 0xFFFF) > self.identity.max_ioqpairs:
            raise CommandError(INVALID_FIELD | DNR)
        if fid == FEAT_CMD_SET_PROFILE and dw11 & 0x1FF:
            raise CommandError(INVALID_FIELD | DNR)
        self._features[fid] = dw11 & 1 if fid == FEAT_VOLATILE_WC else dw11
        return SUCCESS, 0

    def _timestamp(self) -> int:
        """Get Features Timestamp (NVMe 1.4 Figure 305): 48-bit ms, origin 1 once the host set it."""
        elapsed_ms = (self.sim.now - self._timestamp_set_ps) // PS_PER_MS
        value = (self._host_timestamp + elapsed_ms) & ((1 << 48) - 1)
        return value | ((1 << 49) if self._host_timestamp else 0)

    # queues ----------------------------------------------------------------------------------------
    def _check_queue_common(self, qid: int, qsize: int, prp1: int) -> None:
        cc = self._cc
        if (cc >> CC_IOSQES_SHIFT) & 0xF != SQES_LOG2 or (cc >> CC_IOCQES_SHIFT) & 0xF != CQES_LOG2:
            raise CommandError(INVALID_QUEUE_SIZE | DNR)  # QEMU: entry sizes other than 64/16 B
        if not 1 <= qid <= self.identity.max_ioqpairs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        if not qsize or qsize > (self.identity.cap & 0xFFFF):
            raise CommandError(INVALID_QUEUE_SIZE | DNR)
        if prp1 & (self._page_size - 1):
            raise CommandError(INVALID_PRP_OFFSET | DNR)

    async def _create_cq(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        qid, qsize = sqe.cdw10 & 0xFFFF, sqe.cdw10 >> 16
        flags, vector = sqe.cdw11 & 0xFFFF, sqe.cdw11 >> 16
        if qid in self._cqs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        self._check_queue_common(qid, qsize, sqe.prp1)
        if vector >= self.identity.msix_vectors:
            raise CommandError(INVALID_INTERRUPT_VECTOR | DNR)
        if not flags & 1:  # CAP.CQR: queues must be physically contiguous
            raise CommandError(INVALID_FIELD | DNR)
        cq = _CQ(qid, sqe.prp1, qsize + 1, vector=vector, ien=bool(flags & 2))
        if self._dbbuf is not None:
            cq.shadow = (self._dbbuf[0] + qid * 8 + 4, self._dbbuf[1] + qid * 8 + 4)
        self._cqs[qid] = cq
        self._qs_created = True
        if self.sim.tracing:
            self._trace("create_cq", qid=qid, size=qsize + 1, base=sqe.prp1, vector=vector, ien=cq.ien)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _create_sq(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        qid, qsize = sqe.cdw10 & 0xFFFF, sqe.cdw10 >> 16
        flags, cqid = sqe.cdw11 & 0xFFFF, sqe.cdw11 >> 16
        if not cqid or cqid not in self._cqs:
            raise CommandError(COMPLETION_QUEUE_INVALID | DNR)
        if qid in self._sqs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        self._check_queue_common(qid, qsize, sqe.prp1)
        if not flags & 1:
            raise CommandError(INVALID_FIELD | DNR)
        sq = _SQ(qid, sqe.prp1, qsize + 1, cqid)
        if self._dbbuf is not None:
            sq.shadow = (self._dbbuf[0] + qid * 8, self._dbbuf[1] + qid * 8)
        self._sqs[qid] = sq
        self._cqs[cqid].sqids.append(qid)
        if self.sim.tracing:
            self._trace("create_sq", qid=qid, size=qsize + 1, base=sqe.prp1, cqid=cqid, qprio=(flags >> 1) & 3)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _delete_sq(self, cmd: _Command) -> tuple[int, int]:
        qid = cmd.sqe.cdw10 & 0xFFFF
        sq = self._sqs.get(qid)
        if not qid or sq is None:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        cq = self._cqs[sq.cqid]
        for victim in list(sq.inflight):  # QEMU nvme_sq_cancel_inflight
            self._complete(victim, ABORT_SQ_DELETED)
            victim.aborted = True
        self._post_cqes(cq)
        cq.pending = collections.deque(p for p in cq.pending if p[0].sq is not sq)  # unpostable: dropped
        del self._sqs[qid]
        cq.sqids.remove(qid)
        if self.sim.tracing:
            self._trace("delete_sq", qid=qid)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _delete_cq(self, cmd: _Command) -> tuple[int, int]:
        qid = cmd.sqe.cdw10 & 0xFFFF
        cq = self._cqs.get(qid)
        if not qid or cq is None:
            # QEMU answers Completion Queue Invalid; the spec says Invalid Queue Identifier
            raise CommandError((COMPLETION_QUEUE_INVALID if self._qemu else INVALID_QUEUE_ID) | DNR)
        if cq.sqids:
            raise CommandError(INVALID_QUEUE_DELETION)
        del self._cqs[qid]
        if self.sim.tracing:
            self._trace("delete_cq", qid=qid)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _dbbuf_config(self, cmd: _Command) -> tuple[int, int]:
        """Doorbell Buffer Config (NVMe 1.3 section 5.7; QEMU nvme_dbbuf_config): shadow doorbells."""
        dbs, eis = cmd.sqe.prp1, cmd.sqe.prp2
        if dbs & (self._page_size - 1) or eis & (self._page_size - 1):
            raise CommandError(INVALID_FIELD | DNR)
        self._dbbuf = (dbs, eis)
        for qid in sorted(self._sqs):
            sq = self._sqs[qid]
            sq.shadow = (dbs + qid * 8, eis + qid * 8)
            self._write_shadow(sq.shadow[0], sq.tail)
        for qid in sorted(self._cqs):
            cq = self._cqs[qid]
            cq.shadow = (dbs + qid * 8 + 4, eis + qid * 8 + 4)
            self._write_shadow(cq.shadow[0], cq.head)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    # asynchronous events and abort -------------------------------------------------------------------
    async def _async_event_request(self, cmd: _Command) -> tuple[int, int]:
        if len(self._aer_reqs) > self._id_ctrl.aerl:  # AERL is 0's based
            raise CommandError(ASYNC_EVENT_LIMIT_EXCEEDED)
        self._aer_reqs.append(cmd)
        self._process_aers()
        raise _Held

    def _process_aers(self) -> None:
        """Complete outstanding AERs with queued events whose type is not masked (QEMU nvme_process_aers)."""
        events = self._aer_events
        for event in list(events):
            if not self._aer_reqs:
                break
            etype, info, log = event
            if self._aer_mask & (1 << etype):
                continue
            events.remove(event)
            self._aer_mask |= 1 << etype
            req = self._aer_reqs.pop(0)
            if self.sim.tracing:
                self._trace("aer", type=etype, info=info, log_page=log)
            self._complete(req, SUCCESS, aer_result(etype, info, log))

    def _clear_events(self, etype: int | None) -> None:
        if etype is None:
            return
        self._aer_mask &= ~(1 << etype)
        self._aer_events = collections.deque(e for e in self._aer_events if e[0] != etype)

    async def _abort(self, cmd: _Command) -> tuple[int, int]:
        sqid, cid = cmd.sqe.cdw10 & 0xFFFF, cmd.sqe.cdw10 >> 16
        sq = self._sqs.get(sqid)
        if sq is None:
            raise CommandError(INVALID_FIELD | DNR, result=1)
        for victim in sq.inflight:
            if victim.sqe.cid == cid and victim is not cmd:
                if victim in self._aer_reqs:
                    self._aer_reqs.remove(victim)
                self._complete(victim, ABORT_REQUESTED)
                victim.aborted = True
                await self._delay(cmd, self.cost.nvme_cmd_service_ps)
                return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 1  # DW0 bit 0 = 1: command not aborted

    async def _security_send(self, cmd: _Command) -> tuple[int, int]:
        raise CommandError(INVALID_FIELD | DNR)  # no security protocol is implemented

    async def _security_receive(self, cmd: _Command) -> tuple[int, int]:
        """Security Receive: only protocol 00h / SPSP 0 (supported protocol list, SPC-5 7.7.1)."""
        secp, spsp, alloc = cmd.sqe.cdw10 >> 24, (cmd.sqe.cdw10 >> 8) & 0xFFFF, cmd.sqe.cdw11
        if secp != 0 or spsp != 0 or alloc < 10:
            raise CommandError(INVALID_FIELD | DNR)
        await self._c2h(cmd, bytes(6) + struct.pack(">H", 1) + b"\0\0")
        return SUCCESS, 0

    _ADMIN: dict[int, Callable[[NvmeController, _Command], Awaitable[tuple[int, int]]]] = {
        ADMIN_IDENTIFY: _identify, ADMIN_GET_LOG_PAGE: _get_log_page, ADMIN_GET_FEATURES: _get_features,
        ADMIN_SET_FEATURES: _set_features, ADMIN_CREATE_CQ: _create_cq, ADMIN_CREATE_SQ: _create_sq,
        ADMIN_DELETE_SQ: _delete_sq, ADMIN_DELETE_CQ: _delete_cq, ADMIN_DBBUF_CONFIG: _dbbuf_config,
        ADMIN_ASYNC_EVENT_REQUEST: _async_event_request, ADMIN_ABORT: _abort,
        ADMIN_SECURITY_SEND: _security_send, ADMIN_SECURITY_RECV: _security_receive,
    }

    # -- I/O commands (NVM command set; QEMU nvme_io_cmd) ----------------------------------------
    async def _io(self, cmd: _Command) -> tuple[int, int]:
        sqe = cmd.sqe
        op = sqe.opcode
        supported = op in self.identity.io_opcodes
        if not self._qemu and not supported:
            raise CommandError(INVALID_OPCODE | DNR)
        if op == IO_FLUSH and supported:
            return await self._flush(cmd)
        nsid = sqe.nsid
        if not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        ns = self.namespaces.get(nsid)
        if ns is None:  # an inactive namespace: QEMU says Invalid Field, the spec Invalid Namespace
            raise CommandError((INVALID_FIELD if self._qemu else INVALID_NSID) | DNR)
        if sqe.fuse:
            raise CommandError(INVALID_FIELD)
        if not supported:
            raise CommandError(INVALID_OPCODE | DNR)
        if sqe.psdt != PSDT_PRP and (sqe.psdt == 3 or not self._id_ctrl.sgls & 3):
            raise CommandError(INVALID_FIELD | DNR)
        if op == IO_READ:
            return await self._read(cmd, ns)
        if op == IO_WRITE or op == IO_COMPARE:
            return await self._write(cmd, ns, compare=op == IO_COMPARE)
        if op == IO_WRITE_ZEROES:
            slba, nlb = self._lba_range(sqe, ns)
            await self._delay(cmd, self.cost.nvme_cmd_service_ps)
            ns.deallocate(slba, nlb)
            return SUCCESS, 0
        return await self._dsm(cmd, ns)

    def _lba_range(self, sqe: SubmissionEntry, ns: Namespace) -> tuple[int, int]:
        slba = sqe.cdw11 << 32 | sqe.cdw10
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        if not ns.in_range(slba, nlb):
            raise CommandError(LBA_OUT_OF_RANGE | DNR)
        return slba, nlb

    async def _read(self, cmd: _Command, ns: Namespace) -> tuple[int, int]:
        sqe = cmd.sqe
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        self._check_mdts(nlb * ns.block_size)
        slba, nlb = self._lba_range(sqe, ns)
        segs = await self._map(cmd, nlb * ns.block_size)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        self._n["reads"] += 1
        await self._to_host(cmd, segs, ns.read(slba, nlb))
        return SUCCESS, 0

    async def _write(self, cmd: _Command, ns: Namespace, compare: bool) -> tuple[int, int]:
        sqe = cmd.sqe
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        self._check_mdts(nlb * ns.block_size)
        slba, nlb = self._lba_range(sqe, ns)
        length = nlb * ns.block_size
        segs = await self._map(cmd, length)
        data = await self._from_host(cmd, segs, length)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        if compare:
            return (SUCCESS if ns.read(slba, nlb) == data else COMPARE_FAILURE), 0
        self._n["writes"] += 1
        ns.write(slba, data)
        return SUCCESS, 0

    async def _flush(self, cmd: _Command) -> tuple[int, int]:
        nsid = cmd.sqe.nsid
        if nsid == NSID_BROADCAST:
            if self._id_ctrl.vwc & 0x6 != 0x6:  # VWC bits 2:1 = 11b: broadcast flush supported
                raise CommandError(INVALID_NSID | DNR)
        elif not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        elif nsid not in self.namespaces:
            raise CommandError((INVALID_FIELD if self._qemu else INVALID_NSID) | DNR)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _dsm(self, cmd: _Command, ns: Namespace) -> tuple[int, int]:
        """Dataset Management: only the Deallocate attribute acts (NVM 1.4 section 6.7)."""
        sqe = cmd.sqe
        nr = (sqe.cdw10 & 0xFF) + 1
        if not sqe.cdw11 & (1 << 2):
            await self._delay(cmd, self.cost.nvme_cmd_service_ps)
            return SUCCESS, 0
        data = await self._h2c(cmd, nr * 16)
        for i in range(nr):
            _cattr, nlb, slba = struct.unpack_from("<IIQ", data, 16 * i)
            if nlb and ns.in_range(slba, nlb):  # out-of-range ranges are skipped (QEMU nvme_dsm)
                ns.deallocate(slba, nlb)
        return SUCCESS, 0
