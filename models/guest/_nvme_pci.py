"""The guest's NVMe PCI driver: Linux 6.7 drivers/nvme/host/pci.c + core.c, as far as probe and I/O go.

``NvmeDriver.probe`` is ``nvme_probe`` on the real controller model, through config space,
BAR0 MMIO, the MSI-X table, guest memory and the device's DMA API (``dev.dma``), in Linux's
order (reference pci-nvme.md §4.3, linux-guest.md §4.4, refboot §5.4):

1. ``nvme_pci_alloc_dev`` (64-bit DMA mask), log "pci function 0000:00:04.0";
2. ``nvme_pci_enable``: COMMAND.MEM and .MASTER, ``readl(CSTS)``, one MSI-X vector
   (``pci_alloc_irq_vectors(1, 1)``), CAP (``lo_hi_readq``), q_depth = min(MQES + 1, 1024), CMBSZ;
3. ``nvme_pci_configure_admin_queue``: VS, ``nvme_disable_ctrl`` (CC = 0, poll CSTS.RDY = 0),
   admin CQ then SQ (``dma_alloc_coherent``, 32 entries), AQA/ASQ/ACQ, ``nvme_enable_ctrl``
   (CC with CSS/MPS/IOSQES/IOCQES, then EN, poll RDY), IRQ "nvme0q0" on MSI-X entry 0;
4. ``nvme_init_ctrl_finish``: Identify Controller, the Commands Supported and Effects log (LPA
   bit 1), "Shutdown timeout set to N seconds" (RTD3E, only when != 5), APST (APSTA), timestamp
   (ONCS bit 6), host behaviour (CRDT1 or CTRATT.ELBAS), OPAL discovery (OACS bit 0,
   CONFIG_BLK_SED_OPAL), the hwmon SMART log (CONFIG_NVME_HWMON);
5. ``nvme_dbbuf_dma_alloc`` (OACS bit 8), ``nvme_setup_io_queues``: Set Features Number of
   Queues (``num_possible_cpus``), MSI-X re-allocated for 1 + n vectors (affinity spread),
   every I/O queue pair allocated (CQ then SQ), then Create I/O CQ/SQ for each, log
   "A/B/C default/read/poll queues"; Doorbell Buffer Config;
6. ``nvme_start_ctrl``: AEN configuration + the Asynchronous Event Request (CID 31), then
   ``nvme_scan_work``: Identify CNS 06h (``nvme_init_non_mdts_limits``), CNS 02h (active NS list),
   per namespace CNS 03h, CNS 00h, CNS 00h again (``nvme_update_ns_info_block``), CNS 05h when
   CTRATT.ELBAS (``nvme_init_ms``), then ``add_disk``'s partition scan.

Every data buffer is mapped just before its command and unmapped in the completion path
(``nvme_setup_prp_simple`` / ``nvme_pci_unmap_rq``), sized and directed as Linux does
(``rq_dma_dir``: Identify / Get Log Page / Security Receive DMA_FROM_DEVICE, Set Features
DMA_TO_DEVICE).  Queue memory and DBBUF pages are coherent.

Which CPU does what (dma-iommu's per-CPU IOVA caches depend on it; linux-guest.md §4.4):

* ``probe(cpu)`` runs on ``cpu`` (the async-probe worker): its coherent allocations and the map
  of every admin buffer it submits.
* The admin IRQ (MSI-X entry 0, unmanaged) targets ``admin_irq_cpu`` (default CPU 0: the x86
  vector matrix's first CPU among those with the most free vectors; the reference boot's
  partition reads on SQ 1 reusing the IOVA the admin completions freed show CPU 0).  Admin
  completions, and so their unmaps, run there (``blk_mq_complete_request_remote``: the vCPUs
  share the LLC, one hw queue -> BLOCK_SOFTIRQ on the IRQ CPU).
* I/O queue q's vector is managed and affine to its CPU group (``group_cpus_evenly``); its IRQ
  lands on the group's first CPU, where the completions (and unmaps) run.
* ``nvme_scan_work`` and the partition reads run on the probing CPU (``flush_work`` from the
  probe; the worker is modelled on the same CPU).  With a strict 6.7 domain and the PM173X this
  makes the first partition read the 6th fresh single page below the I/O queues, 0xFFF7A000 --
  the seed's MAP; in the 6.12 reference boot the scan thread had moved to the admin IRQ CPU
  before its reads (a scheduler choice), so there they reuse the last admin IOVA instead.

Policies where Linux is not deterministic: blk-mq tags are taken lowest-free from a per-CPU
hint that starts at 0 (Linux seeds it randomly); the guest IDT vector of each MSI-X entry is
the lowest free one from 0x21.

Waits on the controller are bounded: CSTS polls by CAP.TO, commands by admin_timeout (60 s)
or io_timeout (30 s); a timeout logs what ``nvme_wait_ready`` / ``nvme_timeout`` log and the
probe fails (``probe`` returns the negative errno; nothing raises).

Not modelled: CMB, HMB (HMPRE != 0 would allocate a host memory buffer), poll/read queues
(module defaults 0), multipath/ANA, the controller reset work after a timeout, namespaces of
command sets other than NVM, partition parsers beyond the sectors an empty disk makes them read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import attrs

from sim import PS_PER_MS, Event, First, Lock, ms, seconds, sleep

from .._interrupts import msi_address
from .._nvme_wire import (
    ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_CREATE_CQ, ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG, ADMIN_DELETE_CQ,
    ADMIN_DELETE_SQ, ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SECURITY_RECV, ADMIN_SET_FEATURES, CNS_CS_CTRL,
    CNS_CS_NS, CNS_CTRL, CNS_NS, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CSTS_CFS, CSTS_NSSRO, CSTS_RDY, CSTS_SHST_MASK,
    CSTS_SHST_SHIFT, DNR, DOORBELL_BASE, FEAT_ASYNC_EVENT, FEAT_AUTO_PST, FEAT_HOST_BEHAVIOR, FEAT_NUM_QUEUES,
    FEAT_TIMESTAMP, IO_OPCODE_NAMES, IO_READ, IO_WRITE, LOG_CMD_EFFECTS, LOG_SMART, MORE, NIDT_CSI,
    NSID_BROADCAST, REG_ACQ, REG_AQA, REG_ASQ, REG_CAP, REG_CC, REG_CMBSZ, REG_CSTS, REG_VS, SHST_COMPLETE,
    STATUS_NAMES, CompletionEntry, IdentifyController, IdentifyNamespace, SglDescriptor, SubmissionEntry,
    cap_fields,
)
from .._pci import (
    PCI_CAP_ID_MSIX, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
    PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL,
)
from ._device import GuestDevice
from ._dma_iommu import DMA_FROM_DEVICE, DMA_TO_DEVICE, DirectDma, DmaMappingError
from ._kmem_consts import PAGE_SIZE
from ._printk import LOGLEVEL_ERR

# -- driver constants (drivers/nvme/host/nvme.h, pci.c, core.c; module parameter defaults) ------------
NVME_AQ_DEPTH = 32
#: admin blk-mq tags: NVME_AQ_DEPTH - 1 (the AER slot) - 1
NVME_AQ_MQ_TAG_DEPTH = 30
#: the Asynchronous Event Request's command id (NVME_AQ_BLK_MQ_DEPTH), no generation bits
NVME_AER_CID = 31
IO_QUEUE_DEPTH = 1024
WRITE_QUEUES = 0
POLL_QUEUES = 0
SHUTDOWN_TIMEOUT_S = 5
ADMIN_TIMEOUT_PS = seconds(60)
IO_TIMEOUT_PS = seconds(30)
NVME_MAX_RETRIES = 5
#: sgl_threshold module parameter: non-zero lets I/O queues use SGLs
SGL_THRESHOLD = 32 * 1024
#: NVME_MAX_KB_SZ: the driver's own transfer limit
NVME_MAX_TRANSFER = 8192 * 1024
#: dma_opt_mapping_size() through dma-iommu: iova_rcache_range() = 4 KiB << 5
IOMMU_DMA_OPT_MAPPING = 128 * 1024
#: NVME_AEN_CFG_NS_ATTR | FW_ACT | ANA_CHANGE | DISC_CHANGE
NVME_AEN_SUPPORTED = 0x8000_0B00
NVME_CC_CSS_CSI = 0x6 << 4
NVME_CAP_CSS_CSI = 1 << 6  # in CAP.CSS
NVME_CTRL_LPA_CMD_EFFECTS_LOG = 1 << 1
NVME_CTRL_ONCS_TIMESTAMP = 1 << 6
NVME_CTRL_OACS_SEC_SUPP = 1 << 0
NVME_CTRL_OACS_DBBUF_SUPP = 1 << 8
NVME_CTRL_ATTR_ELBAS = 1 << 15
NVME_CSI_NVM = 0
#: kernel configuration of the seed's guest (an Ubuntu-derived 6.7 config): both enabled
CONFIG_BLK_SED_OPAL = True
CONFIG_NVME_HWMON = True
#: APST module defaults (core.c)
DEFAULT_PS_MAX_LATENCY_US = 100_000
APST_PRIMARY_TIMEOUT_MS, APST_SECONDARY_TIMEOUT_MS = 100, 2000
APST_PRIMARY_LATENCY_TOL_US, APST_SECONDARY_LATENCY_TOL_US = 15_000, 100_000
NVME_PS_FLAGS_NON_OP_STATE = 1 << 1
#: sizes of the buffers Linux hands to the controller
NVME_IDENTIFY_DATA_SIZE = 4096
EFFECTS_LOG_SIZE = 4096  # struct nvme_effects_log
SMART_LOG_SIZE = 512  # struct nvme_smart_log (kzalloc'd on its own since 5.16)
HOST_BEHAVIOR_SIZE = 512  # struct nvme_feat_host_behavior
APST_TABLE_SIZE = 256  # struct nvme_feat_auto_pst
OPAL_IO_BUFFER_LENGTH = 2048  # block/sed-opal.c IO_BUFFER_LENGTH
OPAL_DISCOVERY_CDW10 = 0x01 << 24 | 0x0001 << 8  # SECP 01h, SP-specific = discovery ComID 0001h
#: dma_pool "prp list page" / "prp list 256"
PRP_POOL_PAGE, PRP_POOL_SMALL = 4096, 256
#: ``usleep_range(1000, 2000)`` in nvme_wait_ready: the hrtimer fires at the range's end on an idle CPU
READY_POLL_PS = ms(2)
#: ktime_get_real() at simulated time 0 (ms since the epoch; 2024-01-01T00:00:00Z, a fixed stand-in)
GUEST_EPOCH_MS = 1_704_067_200_000
#: 512-byte sectors the default partition parsers read on a disk without a partition table
#: (msdos/efi sector 0, amiga's RDB search 0-15, ultrix's label at sector 31): 4 KiB pages 0, 1, 3
PARTITION_SCAN_SECTORS = (0, 15, 31)
#: first guest IDT vector the model hands to MSI-X entries (FIRST_EXTERNAL_VECTOR + 1); 0x80 is the syscall gate
FIRST_DEVICE_VECTOR, SYSCALL_VECTOR = 0x21, 0x80

EIO, ENOMEM, ENODEV, EINTR = 5, 12, 19, 4
#: blk status of a request the host cancelled (NVME_SC_HOST_ABORTED_CMD)
NVME_SC_HOST_ABORTED_CMD = 0x371
PSDT_SGL = 0x40  # NVME_CMD_SGL_METABUF in CDW0 flags

#: names Linux's constants.c gives the admin opcodes it prints (nvme_get_admin_opcode_str)
ADMIN_OPCODE_STR = {
    0x00: "Delete SQ", 0x01: "Create SQ", 0x02: "Get Log Page", 0x04: "Delete CQ", 0x05: "Create CQ",
    0x06: "Identify", 0x08: "Abort", 0x09: "Set Features", 0x0A: "Get Features", 0x0C: "Async Event",
    0x7C: "Doorbell Buffer Config", 0x81: "Security Send", 0x82: "Security Receive",
}
#: blk_op_str / req_op of the requests submit_io builds
BLK_OPS = {IO_READ: ("READ", 0), IO_WRITE: ("WRITE", 1)}


# -- pure decisions ------------------------------------------------------------------------------------
def shutdown_timeout(rtd3e_us: int, module_default: int = SHUTDOWN_TIMEOUT_S) -> int:
    """``nvme_init_identify``: clamp(RTD3E / 1e6, shutdown_timeout, 60) seconds, or the default when 0."""
    if not rtd3e_us:
        return module_default
    return min(max(rtd3e_us // 1_000_000, module_default), 60)


def group_cpus_evenly(ncpus: int, ngroups: int) -> list[list[int]]:
    """``group_cpus_evenly`` on one NUMA node: consecutive CPUs, the first groups one larger."""
    per, extra = divmod(ncpus, ngroups)
    groups, cpu = [], 0
    for g in range(ngroups):
        n = per + (1 if g < extra else 0)
        groups.append(list(range(cpu, cpu + n)))
        cpu += n
    return groups


def calc_irq_sets(nrirqs: int, write_queues: int = WRITE_QUEUES) -> tuple[int, int]:
    """``nvme_calc_irq_sets``: (default, read) queue counts for ``nrirqs`` I/O vectors."""
    if not nrirqs:
        return 1, 0
    if nrirqs == 1 or not write_queues:
        return nrirqs, 0
    read = 1 if write_queues >= nrirqs else nrirqs - write_queues
    return nrirqs - read, read


def dbbuf_need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """``nvme_dbbuf_need_event``: must the MMIO doorbell be written after the shadow update?"""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old) & 0xFFFF


def apst_table(ctrl: IdentifyController, ps_max_latency_us: int = DEFAULT_PS_MAX_LATENCY_US) -> bytes:
    """``nvme_configure_apst``'s 256-byte table (32 little-endian u64 entries), primary/secondary timeouts."""
    entries = [0] * 32
    target = 0
    last_index = 1 << 32
    for state in range(ctrl.npss, -1, -1):
        if target:
            entries[state] = target
        ps = ctrl.psd[state] if state < len(ctrl.psd) else None
        if ps is None or not ps.flags & NVME_PS_FLAGS_NON_OP_STATE or ps.exlat > ps_max_latency_us:
            continue
        total = ps.exlat + ps.enlat
        if total <= APST_PRIMARY_LATENCY_TOL_US:
            if last_index == 1:
                continue
            last_index, transition = 1, APST_PRIMARY_TIMEOUT_MS
        elif total <= APST_SECONDARY_LATENCY_TOL_US and last_index > 2:
            last_index, transition = 2, APST_SECONDARY_TIMEOUT_MS
        else:
            continue
        target = state << 3 | transition << 8
    return struct.pack("<32Q", *entries)


def prp_list_chunks(entries: list[int], per_page: int = PAGE_SIZE // 8) -> list[list[int]]:
    """``nvme_pci_setup_prps``' list pages: each full page keeps its last slot for the link to the next."""
    chunks: list[list[int]] = []
    rest = list(entries)
    while len(rest) > per_page:
        chunks.append(rest[:per_page - 1])
        rest = rest[per_page - 1:]
    chunks.append(rest)
    return chunks


def status_str(status: int) -> str:
    """``nvme_get_error_status_str`` plus the "(sct / sc) MORE DNR" tail of ``nvme_log_error``."""
    code = status & 0x7FF
    name = "Host Aborted Command" if code == NVME_SC_HOST_ABORTED_CMD else STATUS_NAMES.get(code, "Unknown")
    more = "MORE " if status & MORE else ""
    dnr = "DNR " if status & DNR else ""
    return f"{name} (sct {status >> 8 & 7:#x} / sc {status & 0xFF:#x}) {more}{dnr}"


def _hex(value: int) -> str:
    """The kernel's ``%#x``: "0x0" for zero too (lib/vsprintf.c has no glibc special case)."""
    return f"0x{value:x}"


# -- driver state -------------------------------------------------------------------------------------
@attrs.frozen
class _Coherent:
    """A ``dma_alloc_coherent`` buffer: its DMA address and physical pages (4 KiB, in IOVA order)."""

    size: int
    iova: int
    pages: tuple[int, ...]

    def paddr(self, offset: int) -> int:
        return self.pages[offset >> 12] + (offset & (PAGE_SIZE - 1))


@attrs.define(eq=False)
class _Mapping:
    """What the completion path unmaps: a page mapping or a one-segment scatterlist, plus pool blocks."""

    kind: str  # "page" or "sg"
    dma: int
    paddr: int
    size: int
    direction: int
    pool_blocks: list[tuple[_DmaPool, int, int]] = attrs.Factory(list)
    #: a multi-segment scatterlist: each segment's DMA address and its (paddr, length)
    sg_dmas: list[int] = attrs.Factory(list)
    sg_segments: list[tuple[int, int]] = attrs.Factory(list)


@attrs.define(eq=False)
class _Request:
    qid: int
    tag: int
    cid: int
    opcode: int
    cpu: int
    done: Event
    mapping: _Mapping | None = None
    status: int | None = None  # 15-bit NVMe status, or a negative errno (cancelled / not submitted)
    result: int = 0
    finished: bool = False
    aborted: bool = False
    #: ``rq->deadline`` and the event the queue's timeout timer sets when it passes
    deadline: int = 0
    expired: Event | None = None


class _DmaPool:
    """``dma_pool``: blocks carved from coherent pages allocated on first need, freed blocks reused LIFO."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.pages: list[_Coherent] = []
        self._free: list[tuple[int, int]] = []  # (dma, paddr), popped from the end

    def __repr__(self) -> str:
        return f"<dma_pool {self.name!r} {self.size} B, {len(self.pages)} pages>"

    async def alloc(self, cpu: int, dma: Any) -> tuple[int, int]:
        if not self._free:
            iova, pages = await dma.alloc_coherent(cpu, PAGE_SIZE)
            page = _Coherent(PAGE_SIZE, iova, tuple(pages))
            self.pages.append(page)
            self._free += [(iova + off, page.paddr(off)) for off in range(PAGE_SIZE - self.size, -1, -self.size)]
        return self._free.pop()

    def free(self, dma_addr: int, paddr: int) -> None:
        self._free.append((dma_addr, paddr))


class _Queue:
    """``struct nvme_queue`` with its blk-mq tags: rings in coherent memory, head/tail/phase, IRQ."""

    def __init__(self, qid: int, depth: int, cq: _Coherent, sq: _Coherent, tag_depth: int) -> None:
        self.qid = qid
        self.depth = depth
        self.cq = cq
        self.sq = sq
        self.sq_tail = 0
        self.cq_head = 0
        self.cq_phase = 1
        self.msix_entry = 0
        self.irq_cpu = 0
        self.online = False
        self.lock = Lock(f"nvmeq{qid}.sq_lock")
        self.tag_depth = tag_depth
        self.busy = [False] * tag_depth
        self.genctr = [0] * tag_depth
        self.used = [False] * tag_depth
        self.inflight: dict[int, _Request] = {}
        #: requests whose completion is awaited (by tag), and the deadline the queue's timer is armed for
        self.waiting: dict[int, _Request] = {}
        self.timer_deadline: int | None = None
        self.hints: dict[int, int] = {}
        self.tag_freed = Event(f"nvmeq{qid}.tag_freed")
        #: shadow doorbells (sq db, cq db, sq event index, cq event index) as guest-physical addresses
        self.dbbuf: tuple[int, int, int, int] | None = None
        self.irq_pending = False
        self.irq_running = False

    def alloc_tag(self, cpu: int) -> int | None:
        """sbitmap with a per-CPU allocation hint (``update_alloc_hint_after_get``)."""
        depth = self.tag_depth
        hint = self.hints.get(cpu, 0)
        for i in range(depth):
            tag = (hint + i) % depth
            if not self.busy[tag]:
                self.busy[tag] = True
                self.used[tag] = True
                if tag == hint:
                    nxt = tag + 1
                    self.hints[cpu] = 0 if nxt >= depth - 1 else nxt
                return tag
        return None

    def free_tag(self, tag: int) -> None:
        self.busy[tag] = False
        self.tag_freed.set()
        self.tag_freed.clear()


class NvmeDriver:
    """One NVMe controller bound to the guest's nvme driver (``struct nvme_dev`` + ``nvme_ctrl``)."""

    def __init__(self, kernel: Any, dev: GuestDevice, *, instance: int = 0, admin_irq_cpu: int = 0) -> None:
        if not 0 <= admin_irq_cpu < kernel.ncpus:
            raise ValueError(f"admin_irq_cpu must be 0..{kernel.ncpus - 1}, not {admin_irq_cpu}")
        bar = dev.info.bar(0)
        if bar is None:
            raise ValueError(f"{dev.name} has no BAR0: not an NVMe controller")
        self.kernel = kernel
        self.sim = kernel.sim
        self.dev = dev
        self.name = f"nvme{instance}"
        self.admin_irq_cpu = admin_irq_cpu
        self._bus = kernel.machine.bus
        self._mem = kernel.machine.memory
        self._bar = bar.address
        self.state = "NEW"  # enum nvme_ctrl_state
        self.error = 0
        self.cap = 0
        self.vs = 0
        self.q_depth = 0
        self.db_stride = 1
        self.ctrl_config = 0
        self.id_ctrl: IdentifyController | None = None
        self.shutdown_timeout = SHUTDOWN_TIMEOUT_S
        self.max_hw_bytes = 0
        self.skip_cns_cs = False
        self.queues: list[_Queue] = []
        self.io_queues = (0, 0, 0)  # HCTX_TYPE_DEFAULT, READ, POLL
        self.num_vecs = 0
        self.max_qid = 0
        self._cpu_queue: list[int] = []
        self.dbbuf: tuple[_Coherent, _Coherent] | None = None
        self.namespaces: dict[int, IdentifyNamespace] = {}
        #: page cache of the partition scan: (nsid, sector of the page) -> guest-physical page
        self.page_cache: dict[tuple[int, int], int] = {}
        self._pools = {PRP_POOL_PAGE: _DmaPool("prp list page", PRP_POOL_PAGE),
                       PRP_POOL_SMALL: _DmaPool("prp list 256", PRP_POOL_SMALL)}
        self._msix_cap = 0
        self._msix_table = 0
        self._msix_nvec = 0
        self._vectors: dict[int, int] = {}  # MSI-X entry -> guest IDT vector
        self._entry_queues: dict[int, list[_Queue]] = {}
        self._pci_enabled = False
        self._disabling = False

    def __repr__(self) -> str:
        return f"<NvmeDriver {self.name} {self.dev.name} {self.state}>"

    @property
    def dma(self) -> Any:
        if self.dev.dma is None:
            self.dev.dma = DirectDma(self.kernel, self.dev)
        return self.dev.dma

    # -- logging and tracing ----------------------------------------------------------------------------
    def _info(self, text: str) -> None:
        self.kernel.printk.dev_info(self.sim.now, "nvme", self.name, text)

    def _warn(self, text: str) -> None:
        self.kernel.printk.dev_warn(self.sim.now, "nvme", self.name, text)

    def _err(self, text: str) -> None:
        self.kernel.printk.dev_err(self.sim.now, "nvme", self.name, text)

    def _trace(self, event: str, **fields: Any) -> None:
        if self.sim.tracing:
            self.sim.trace(f"guest/{self.name}", event, **fields)

    # -- register and config access ---------------------------------------------------------------------
    async def _readl(self, off: int) -> int:
        return await self._bus.mmio_read(self._bar + off, 4)

    async def _writel(self, off: int, value: int) -> None:
        await self._bus.mmio_write(self._bar + off, 4, value & 0xFFFF_FFFF)

    async def _lo_hi_readq(self, off: int) -> int:
        lo = await self._readl(off)
        return lo | await self._readl(off + 4) << 32

    async def _lo_hi_writeq(self, off: int, value: int) -> None:
        await self._writel(off, value)
        await self._writel(off + 4, value >> 32)

    async def _cfg_read(self, off: int, size: int) -> int:
        return await self._bus.config_read(self.dev.bdf, off, size)

    async def _cfg_write(self, off: int, size: int, value: int) -> None:
        await self._bus.config_write(self.dev.bdf, off, size, value)

    async def _cmd_update(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        """Read-modify-write of PCI_COMMAND, written only when it changes (pci_enable_resources, __pci_set_master)."""
        cmd = await self._cfg_read(PCI_COMMAND, 2)
        new = (cmd | set_bits) & ~clear_bits
        if new != cmd:
            await self._cfg_write(PCI_COMMAND, 2, new)

    # -- probe (nvme_probe) ------------------------------------------------------------------------------
    async def probe(self, cpu: int) -> int:
        """``nvme_probe`` on ``cpu``: 0, or the negative errno the probe failed with (also in ``error``)."""
        if not 0 <= cpu < self.kernel.ncpus:
            raise ValueError(f"cpu must be 0..{self.kernel.ncpus - 1}, not {cpu}")
        self._trace("nvme_probe", cpu=cpu, bdf=self.dev.bdf)
        self.dev.set_dma_mask(64)  # nvme_pci_alloc_dev: dma_set_mask_and_coherent(DMA_BIT_MASK(64))
        # max_hw_sectors: NVME_MAX_KB_SZ, or dma_opt_mapping_size() through dma-iommu
        self.max_hw_bytes = IOMMU_DMA_OPT_MAPPING if self.dev.iommu_group is not None else NVME_MAX_TRANSFER
        self._info(f"pci function {self.dev.name}")
        ret = await self._pci_enable(cpu)
        if ret:
            return self._fail(ret)
        self.state = "CONNECTING"
        ret = await self._init_ctrl_finish(cpu)
        if not ret:
            await self._dbbuf_dma_alloc(cpu)
            ret = await self._setup_io_queues(cpu)
        if ret:
            await self._out_disable(cpu)
            return self._fail(ret)
        if self.max_qid and any(q.online for q in self.queues[1:]):
            await self._dbbuf_set(cpu)
        else:
            self._warn("IO queues not created")
        self.state = "LIVE"
        await self._start_ctrl(cpu)
        return 0

    def _fail(self, ret: int) -> int:
        self.error = ret
        self.state = "DEAD"
        self._trace("nvme_probe_failed", error=ret)
        return ret

    # -- nvme_pci_enable ---------------------------------------------------------------------------------
    async def _pci_enable(self, cpu: int) -> int:
        self._trace("nvme_pci_enable")
        await self._cmd_update(set_bits=PCI_COMMAND_MEMORY)  # pci_enable_device_mem
        await self._cmd_update(clear_bits=PCI_COMMAND_INTX_DISABLE)  # do_pci_enable_device
        self._pci_enabled = True
        await self._cmd_update(set_bits=PCI_COMMAND_MASTER)  # pci_set_master
        if await self._readl(REG_CSTS) == 0xFFFF_FFFF:
            await self._pci_disable_device()
            return -ENODEV
        if await self._pci_alloc_irq_vectors(1) < 1:
            await self._pci_disable_device()
            return -ENODEV
        self.cap = await self._lo_hi_readq(REG_CAP)
        cap = cap_fields(self.cap)
        self.q_depth = min(cap["mqes"] + 1, IO_QUEUE_DEPTH)
        self.db_stride = 1 << cap["dstrd"]
        await self._readl(REG_CMBSZ)  # nvme_map_cmb: CAP.CMBS is not used, CMBSZ reads 0 -> no CMB
        ret = await self._configure_admin_queue(cpu)
        if ret:
            await self._pci_free_irq_vectors()
            await self._pci_disable_device()
        return ret

    async def _pci_disable_device(self) -> None:
        """``pci_disable_device``: clear Bus Master Enable."""
        if self._pci_enabled:
            self._pci_enabled = False
            await self._cmd_update(clear_bits=PCI_COMMAND_MASTER)

    async def _configure_admin_queue(self, cpu: int) -> int:
        self._trace("nvme_pci_configure_admin_queue")
        self.vs = await self._readl(REG_VS)
        if self.vs >= 0x00010100 and cap_fields(self.cap)["nssrs"]:  # dev->subsystem: clear a stale NSSRO
            if await self._readl(REG_CSTS) & CSTS_NSSRO:
                await self._writel(REG_CSTS, CSTS_NSSRO)
        ret = await self._disable_ctrl(shutdown=False)
        if ret:
            return ret
        try:
            admin = await self._alloc_queue(cpu, 0, NVME_AQ_DEPTH, NVME_AQ_MQ_TAG_DEPTH)
        except DmaMappingError:
            return -ENOMEM
        aqa = (NVME_AQ_DEPTH - 1) | (NVME_AQ_DEPTH - 1) << 16
        await self._writel(REG_AQA, aqa)
        await self._lo_hi_writeq(REG_ASQ, admin.sq.iova)
        await self._lo_hi_writeq(REG_ACQ, admin.cq.iova)
        ret = await self._enable_ctrl()
        if ret:
            return ret
        self._init_queue(admin)
        admin.irq_cpu = self.admin_irq_cpu
        return await self._request_irq(admin, 0)

    async def _wait_ready(self, mask: int, val: int, timeout_s: int, op: str) -> int:
        """``nvme_wait_ready``: poll CSTS every READY_POLL_PS until (CSTS & mask) == val, bounded by timeout_s."""
        deadline = self.sim.now + seconds(timeout_s)
        while True:
            csts = await self._readl(REG_CSTS)
            if csts == 0xFFFF_FFFF:
                return -ENODEV
            if csts & mask == val:
                return 0
            await sleep(READY_POLL_PS)
            if self.sim.now > deadline:
                self._err(f"Device not ready; aborting {op}, CSTS={_hex(csts)}")
                return -ENODEV

    async def _disable_ctrl(self, shutdown: bool) -> int:
        """``nvme_disable_ctrl``: clear EN (or request a normal shutdown) and wait for the controller."""
        self._trace("nvme_disable_ctrl", shutdown=shutdown)
        self.ctrl_config &= ~(0x3 << 14)
        if shutdown:
            self.ctrl_config |= 1 << 14
        else:
            self.ctrl_config &= ~1
        await self._writel(REG_CC, self.ctrl_config)
        if shutdown:
            return await self._wait_ready(CSTS_SHST_MASK << CSTS_SHST_SHIFT, SHST_COMPLETE << CSTS_SHST_SHIFT,
                                          self.shutdown_timeout, "shutdown")
        return await self._wait_ready(CSTS_RDY, 0, (cap_fields(self.cap)["to"] + 1) // 2, "reset")

    async def _enable_ctrl(self) -> int:
        """``nvme_enable_ctrl``: CC = CSS | MPS 0 | AMS RR | IOSQES 6 | IOCQES 4, then EN, then wait RDY."""
        self._trace("nvme_enable_ctrl")
        self.cap = await self._lo_hi_readq(REG_CAP)
        cap = cap_fields(self.cap)
        if cap["mpsmin"] > 0:
            self._err(f"Minimum device page size {1 << (cap['mpsmin'] + 12)} too large for host ({PAGE_SIZE})")
            return -ENODEV
        self.ctrl_config = NVME_CC_CSS_CSI if cap["css"] & NVME_CAP_CSS_CSI else 0
        self.ctrl_config |= 6 << 16 | 4 << 20
        await self._writel(REG_CC, self.ctrl_config)
        self.cap = await self._lo_hi_readq(REG_CAP)  # CAP may change after the first CC write
        self.ctrl_config |= 1
        await self._writel(REG_CC, self.ctrl_config)
        return await self._wait_ready(CSTS_RDY, CSTS_RDY, (cap_fields(self.cap)["to"] + 1) // 2, "initialisation")

    # -- queues -----------------------------------------------------------------------------------------------
    async def _alloc_queue(self, cpu: int, qid: int, depth: int, tag_depth: int) -> _Queue:
        """``nvme_alloc_queue``: the CQ, then the SQ, each ``dma_alloc_coherent``."""
        if qid < len(self.queues):
            return self.queues[qid]
        cq_size, sq_size = depth * 16, depth * 64
        cq_iova, cq_pages = await self.dma.alloc_coherent(cpu, cq_size)
        try:
            sq_iova, sq_pages = await self.dma.alloc_coherent(cpu, sq_size)
        except DmaMappingError:
            await self.dma.free_coherent(cpu, cq_size, cq_iova, cq_pages)
            raise
        q = _Queue(qid, depth, _Coherent(cq_size, cq_iova, tuple(cq_pages)),
                   _Coherent(sq_size, sq_iova, tuple(sq_pages)), tag_depth)
        self.queues.append(q)
        return q

    def _init_queue(self, q: _Queue) -> None:
        """``nvme_init_queue``: empty rings, phase 1, a zeroed CQ, the shadow doorbells (I/O queues)."""
        q.sq_tail = q.cq_head = 0
        q.cq_phase = 1
        for page in q.cq.pages:
            self._mem.fill(page, PAGE_SIZE)
        if self.dbbuf is not None and q.qid:
            dbs, eis = self.dbbuf
            sq_off, cq_off = q.qid * 2 * self.db_stride * 4, (q.qid * 2 + 1) * self.db_stride * 4
            q.dbbuf = (dbs.paddr(sq_off), dbs.paddr(cq_off), eis.paddr(sq_off), eis.paddr(cq_off))
        q.online = True

    def _sq_db(self, q: _Queue) -> int:
        return DOORBELL_BASE + q.qid * 2 * self.db_stride * 4

    def _dbbuf_update_and_check_event(self, value: int, db: int, ei: int) -> bool:
        """``nvme_dbbuf_update_and_check_event``: write the shadow doorbell, then ask the event index."""
        old = self._mem.read_u32(db)
        self._mem.write_u32(db, value)
        return dbbuf_need_event(self._mem.read_u32(ei) & 0xFFFF, value, old & 0xFFFF)

    async def _write_sq_db(self, q: _Queue) -> None:
        if q.dbbuf is None or self._dbbuf_update_and_check_event(q.sq_tail, q.dbbuf[0], q.dbbuf[2]):
            await self._writel(self._sq_db(q), q.sq_tail)

    async def _ring_cq_doorbell(self, q: _Queue) -> None:
        if q.dbbuf is None or self._dbbuf_update_and_check_event(q.cq_head, q.dbbuf[1], q.dbbuf[3]):
            await self._writel(self._sq_db(q) + self.db_stride * 4, q.cq_head)

    # -- MSI-X (drivers/pci/msi/msi.c as the NVMe driver uses it) ----------------------------------------------
    async def _pci_alloc_irq_vectors(self, maxvec: int) -> int:
        """``msix_capability_init`` for min(maxvec, table size) entries; the count, or -ENODEV without MSI-X."""
        cap = next((off for cid, off in self.dev.info.capabilities if cid == PCI_CAP_ID_MSIX), None)
        if cap is None:
            self._err("MSI-X capability not found (MSI and INTx are not modelled)")
            return -ENODEV
        ctrl = await self._cfg_read(cap + 2, 2)
        await self._cfg_write(cap + 2, 2, ctrl | PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
        ctrl = await self._cfg_read(cap + 2, 2)
        tsize = (ctrl & 0x7FF) + 1
        table = await self._cfg_read(cap + 4, 4)
        bar = self.dev.info.bar(table & 7)
        if bar is None:
            self._err(f"MSI-X table in unimplemented BAR {table & 7}")
            return -ENODEV
        self._msix_cap, self._msix_table = cap, bar.address + (table & ~7)
        nvec = min(maxvec, tsize)
        for entry in range(nvec):  # msix_setup_msi_descs reads each entry's vector control
            await self._bus.mmio_read(self._entry_addr(entry) + 12, 4)
        await self._cmd_update(set_bits=PCI_COMMAND_INTX_DISABLE)  # pci_intx_for_msi(dev, 0)
        for entry in range(tsize):  # msix_mask_all
            await self._bus.mmio_write(self._entry_addr(entry) + 12, 4, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        await self._cfg_write(cap + 2, 2, (ctrl | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL)
        self._msix_nvec = nvec
        self._trace("pci_alloc_irq_vectors", nvec=nvec, table_size=tsize)
        return nvec

    def _entry_addr(self, entry: int) -> int:
        return self._msix_table + 16 * entry

    async def _pci_free_irq_vectors(self) -> None:
        """``pci_free_irq_vectors``: mask the entries, clear MSI-X Enable, give INTx back."""
        if not self._msix_nvec:
            return
        for entry in range(self._msix_nvec):
            if entry in self._vectors:
                await self._free_irq(entry)
        ctrl = await self._cfg_read(self._msix_cap + 2, 2)
        await self._cfg_write(self._msix_cap + 2, 2, ctrl & ~PCI_MSIX_FLAGS_ENABLE)
        await self._cmd_update(clear_bits=PCI_COMMAND_INTX_DISABLE)
        self._msix_nvec = 0

    async def _request_irq(self, q: _Queue, entry: int) -> int:
        """``queue_request_irq``: the queue's handler on MSI-X ``entry`` (activated and unmasked on first use)."""
        q.msix_entry = entry
        self._entry_queues.setdefault(entry, []).append(q)
        if entry in self._vectors:
            return 0  # a shared vector (one MSI-X vector for every queue)
        irq = self.kernel.machine.irq
        vector = None
        for v in range(FIRST_DEVICE_VECTOR, 0x100):
            if v == SYSCALL_VECTOR:
                continue
            try:
                irq.register_msi(v, self._irq_handler(entry))
            except ValueError:
                continue
            vector = v
            break
        if vector is None:
            self._err(f"no free interrupt vector for nvme0q{q.qid}")
            return -ENOMEM
        self._vectors[entry] = vector
        base = self._entry_addr(entry)
        address = msi_address(q.irq_cpu)
        await self._bus.mmio_write(base, 4, address & 0xFFFF_FFFF)  # __pci_write_msi_msg, entry masked
        await self._bus.mmio_write(base + 4, 4, address >> 32)
        await self._bus.mmio_write(base + 8, 4, vector)
        await self._bus.mmio_read(base + 8, 4)
        await self._bus.mmio_write(base + 12, 4, 0)  # pci_msix_unmask + flush
        await self._bus.mmio_read(base + 12, 4)
        self._trace("request_irq", queue=q.qid, entry=entry, vector=vector, cpu=q.irq_cpu)
        return 0

    async def _free_irq(self, entry: int) -> None:
        """``pci_free_irq``: mask the entry and drop the handler."""
        await self._bus.mmio_write(self._entry_addr(entry) + 12, 4, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        self.kernel.machine.irq.unregister_msi(self._vectors.pop(entry))
        self._entry_queues.pop(entry, None)

    def _irq_handler(self, entry: int) -> Callable[[], None]:
        def handler() -> None:
            for q in list(self._entry_queues.get(entry, ())):
                q.irq_pending = True
                if not q.irq_running:
                    q.irq_running = True
                    self.sim.spawn(self._nvme_irq(q), name=f"{self.name}q{q.qid}.irq")
        return handler

    # -- completions (nvme_irq, nvme_poll_cq, nvme_handle_cqe) -------------------------------------------------
    async def _nvme_irq(self, q: _Queue) -> None:
        """The hard IRQ on the queue's CPU: consume CQEs, ring the CQ head, then complete the requests there."""
        while q.irq_pending:
            q.irq_pending = False
            found, done = self._poll_cq(q)
            if self.sim.tracing:
                self._trace("nvme_irq", queue=q.qid, cpu=q.irq_cpu, found=found)
            if found:
                await self._ring_cq_doorbell(q)
            for req, status, result in done:
                async with self.kernel.on_cpu(q.irq_cpu, irq=True):
                    if q.qid:
                        await sleep(self.kernel.cost.guest_io_complete_ps)
                    await self._end_request(q, req, status, result, q.irq_cpu)
        q.irq_running = False

    def _poll_cq(self, q: _Queue) -> tuple[int, list[tuple[_Request, int, int]]]:
        found = 0
        done: list[tuple[_Request, int, int]] = []
        for _ in range(q.depth):  # at most one pass over the ring per call
            addr = q.cq.paddr(q.cq_head * 16)
            if self._mem.read_u16(addr + 14) & 1 != q.cq_phase:
                break
            cqe = CompletionEntry.unpack(self._mem.read(addr, 16))
            found += 1
            q.cq_head += 1
            if q.cq_head == q.depth:
                q.cq_head = 0
                q.cq_phase ^= 1
            req = self._handle_cqe(q, cqe)
            if req is not None:
                done.append((req, cqe.status, cqe.result))
        return found, done

    def _handle_cqe(self, q: _Queue, cqe: CompletionEntry) -> _Request | None:
        cid = cqe.cid
        if q.qid == 0 and cid & 0xFFF >= NVME_AER_CID:
            self._complete_async_event(cqe)
            return None
        tag, gen = cid & 0xFFF, cid >> 12
        if tag >= q.tag_depth or not q.used[tag]:
            self.kernel.printk.log(self.sim.now, f"could not locate request for tag {_hex(tag)}", LOGLEVEL_ERR)
            req = None
        elif q.genctr[tag] & 0xF != gen:
            self._err(f"request {_hex(tag)} genctr mismatch (got {_hex(gen)} expected {_hex(q.genctr[tag] & 0xF)})")
            req = None
        else:
            req = q.inflight.get(tag)
        if req is None:
            self._warn(f"invalid id {cid} completed on queue {cqe.sq_id}")
        return req

    def _complete_async_event(self, cqe: CompletionEntry) -> None:
        """``nvme_complete_async_event``: successful events requeue the AER (async_event_work)."""
        self._trace("nvme_complete_async_event", status=cqe.status, result=cqe.result)
        if cqe.status == 0 and self.state == "LIVE":
            self.sim.spawn(self._submit_async_event(), name=f"{self.name}.async_event_work")

    async def _end_request(self, q: _Queue, req: _Request, status: int, result: int, cpu: int) -> None:
        """``nvme_pci_complete_rq``: unmap on the completing CPU, then end the request and free its tag."""
        if req.finished:
            return
        req.finished = True
        if req.mapping is not None:
            await self._unmap_data(cpu, req.mapping)
        req.status, req.result = status, result
        q.inflight.pop(req.tag, None)
        q.genctr[req.tag] += 1
        q.free_tag(req.tag)
        if self.sim.tracing:
            self._trace("nvme_complete_rq", queue=q.qid, cid=req.cid, cpu=cpu, status=status)
        req.done.set()

    # -- submission (nvme_queue_rq) ----------------------------------------------------------------------------
    async def _get_tag(self, q: _Queue, cpu: int) -> int:
        """``blk_mq_get_tag``: sleep until a tag is free (each wake-up follows a freed tag)."""
        while True:
            tag = q.alloc_tag(cpu)
            if tag is not None:
                return tag
            await q.tag_freed.wait()

    async def _map_data(self, q: _Queue, cpu: int, segments: list[tuple[int, int]], direction: int,
                        sqe: dict[str, int]) -> _Mapping:
        """``nvme_map_data`` of (paddr, length) segments.  One physically contiguous segment (the virt
        boundary makes the segment size unlimited): PRP simple, SGL simple on I/O queues, else a PRP
        list.  Several (the order-0 pages of direct I/O, so the average segment is below
        ``sgl_threshold`` and Linux picks PRPs): ``dma_map_sg`` of all, then ``nvme_pci_setup_prps``."""
        if len(segments) > 1:
            dmas = await self.dma.map_sg(cpu, segments, direction)
            length = sum(n for _, n in segments)
            mapping = _Mapping("sg", dmas[0], segments[0][0], length, direction, sg_dmas=dmas,
                               sg_segments=list(segments))
            await self._setup_prps(cpu, mapping, sqe)
            return mapping
        (paddr, length), = segments
        offset = paddr & (PAGE_SIZE - 1)
        if offset + length <= 2 * PAGE_SIZE or (q.qid and SGL_THRESHOLD and self._sgl_supported()):
            dma = await self.dma.map_page(cpu, paddr, length, direction)
            mapping = _Mapping("page", dma, paddr, length, direction)
            if offset + length <= 2 * PAGE_SIZE:  # nvme_setup_prp_simple
                first = PAGE_SIZE - offset
                sqe["prp1"], sqe["prp2"] = dma, dma + first if length > first else 0
            else:  # nvme_setup_sgl_simple
                desc = SglDescriptor(address=dma, length=length).pack()
                sqe["prp1"], sqe["prp2"] = struct.unpack("<QQ", desc)
                sqe["flags"] = PSDT_SGL
            return mapping
        (dma,) = await self.dma.map_sg(cpu, [(paddr, length)], direction)
        mapping = _Mapping("sg", dma, paddr, length, direction)
        await self._setup_prps(cpu, mapping, sqe)
        return mapping

    async def _setup_prps(self, cpu: int, mapping: _Mapping, sqe: dict[str, int]) -> None:
        """``nvme_pci_setup_prps`` over a DMA-contiguous mapping (dma-iommu gives a scatterlist one
        IOVA block, which ``__finalise_sg`` merges into one DMA segment)."""
        dma, length = mapping.dma, mapping.size
        first = PAGE_SIZE - (dma & (PAGE_SIZE - 1))
        entries = list(range(dma + first, dma + length, PAGE_SIZE))  # nvme_pci_setup_prps
        sqe["prp1"] = dma
        if len(entries) <= 1:
            sqe["prp2"] = entries[0] if entries else 0
            return
        pool = self._pools[PRP_POOL_SMALL if len(entries) <= PRP_POOL_SMALL // 8 else PRP_POOL_PAGE]
        chunks = prp_list_chunks(entries)
        blocks = [await pool.alloc(cpu, self.dma) for _ in chunks]
        mapping.pool_blocks = [(pool, d, p) for d, p in blocks]
        for i, chunk in enumerate(chunks):
            link = [blocks[i + 1][0]] if i + 1 < len(chunks) else []
            self._mem.write(blocks[i][1], struct.pack(f"<{len(chunk) + len(link)}Q", *chunk, *link))
        sqe["prp2"] = blocks[0][0]

    async def _unmap_data(self, cpu: int, m: _Mapping) -> None:
        if m.kind == "page":
            await self.dma.unmap_page(cpu, m.dma, m.size, m.direction)
        elif m.sg_segments:
            await self.dma.unmap_sg(cpu, m.sg_dmas, m.sg_segments, m.direction)
        else:
            await self.dma.unmap_sg(cpu, [m.dma], [(m.paddr, m.size)], m.direction)
        for pool, dma_addr, paddr in m.pool_blocks:
            pool.free(dma_addr, paddr)

    def _sgl_supported(self) -> bool:
        return self.id_ctrl is not None and bool(self.id_ctrl.sgls & 0x3)

    async def _queue_rq(self, q: _Queue, cpu: int, opcode: int, fields: dict[str, int],
                        data: tuple[list[tuple[int, int]], int] | None) -> _Request:
        """Take a tag, map the data, copy the SQE into the ring and write the tail doorbell."""
        tag = await self._get_tag(q, cpu)
        cid = (q.genctr[tag] & 0xF) << 12 | tag
        req = _Request(q.qid, tag, cid, opcode, cpu, Event(f"{self.name}q{q.qid}.cid{cid}"))
        sqe = dict(fields)
        async with self.kernel.on_cpu(cpu):  # from the block layer to the doorbell, the CPU is busy
            if q.qid:
                await sleep(self.kernel.cost.guest_io_submit_ps)
            if data is not None:
                try:
                    req.mapping = await self._map_data(q, cpu, *data, sqe)
                except DmaMappingError:
                    q.free_tag(tag)
                    req.status, req.finished = -ENOMEM, True
                    return req
            q.inflight[tag] = req
            async with q.lock:
                entry = SubmissionEntry(opcode=opcode, cid=cid, **sqe)
                self._mem.write(q.sq.paddr(q.sq_tail * 64), entry.pack())
                q.sq_tail = (q.sq_tail + 1) % q.depth
                if self.sim.tracing:
                    self._trace("nvme_queue_rq", queue=q.qid, cid=cid, opcode=opcode, cpu=cpu)
                await self._write_sq_db(q)
        return req

    async def _wait(self, q: _Queue, req: _Request, timeout: int) -> None:
        """Wait for the completion; on ``timeout``, run ``nvme_timeout`` (at most twice: abort, then reset).

        As blk-mq (``blk_add_timer``): the request carries its deadline and one timer per queue
        watches the earliest, so a completed request leaves nothing scheduled behind it (memory
        stays bounded however many requests a run completes)."""
        for _ in range(2):
            if req.finished:
                return
            req.deadline = self.sim.now + timeout
            req.expired = Event(f"{self.name}q{q.qid}.cid{req.cid}.timeout")
            q.waiting[req.tag] = req
            self._arm_queue_timer(q, req.deadline)
            done = req.done.wait()
            fired = await First(done, req.expired.wait())
            q.waiting.pop(req.tag, None)
            if fired is done:
                return
            if await self._timeout(q, req):
                return

    def _arm_queue_timer(self, q: _Queue, deadline: int) -> None:
        """``mod_timer(&q->timeout)`` when it is idle or due later than ``deadline``."""
        if q.timer_deadline is not None and q.timer_deadline <= deadline:
            return
        q.timer_deadline = deadline
        self.sim.call_at(deadline, lambda: self._queue_timeout(q, deadline))

    def _queue_timeout(self, q: _Queue, when: int) -> None:
        """``blk_mq_timeout_work``: expire the waiting requests whose deadline passed, re-arm for the next."""
        if q.timer_deadline != when:
            return  # re-armed for an earlier deadline meanwhile
        q.timer_deadline = None
        now = self.sim.now
        for tag in sorted(q.waiting):
            req = q.waiting[tag]
            if req.deadline <= now and req.expired is not None:
                del q.waiting[tag]
                req.expired.set()
        if q.waiting:
            self._arm_queue_timer(q, min(r.deadline for r in q.waiting.values()))

    async def _timeout(self, q: _Queue, req: _Request) -> bool:
        """``nvme_timeout``; True when the request is finished (polled or cancelled)."""
        csts = await self._readl(REG_CSTS)
        self._trace("nvme_timeout", queue=q.qid, cid=req.cid, csts=csts, state=self.state)
        found, done = self._poll_cq(q)  # did we miss an interrupt?
        if found:
            await self._ring_cq_doorbell(q)
        for r, status, result in done:
            await self._end_request(q, r, status, result, q.irq_cpu)
        if req.finished:
            self._warn(f"I/O tag {req.tag} ({req.cid:04x}) QID {q.qid} timeout, completion polled")
            return True
        if self._disabling:  # a command of the teardown itself: cancelled, as nvme_dev_disable's waits give up
            await self._end_request(q, req, NVME_SC_HOST_ABORTED_CMD, 0, req.cpu)
            return True
        if self.state == "CONNECTING":
            self.state = "DELETING"
            self._warn(f"I/O tag {req.tag} ({req.cid:04x}) QID {q.qid} timeout, disable controller")
            await self._dev_disable(req.cpu, shutdown=True)
            return True
        if q.qid == 0 or req.aborted:
            name = ADMIN_OPCODE_STR.get(req.opcode, "Unknown") if q.qid == 0 else IO_OPCODE_NAMES.get(req.opcode,
                                                                                                        "Unknown")
            self._warn(f"I/O tag {req.tag} ({req.cid:04x}) opcode {_hex(req.opcode)} ({name}) QID {q.qid} timeout, "
                       "reset controller")
            await self._dev_disable(req.cpu, shutdown=False)  # the reset work that follows is not modelled
            return True
        req.aborted = True
        op, op_num = BLK_OPS.get(req.opcode, ("DRV_IN", 34))
        size = req.mapping.size if req.mapping is not None else 0
        self._warn(f"I/O tag {req.tag} ({req.cid:04x}) opcode {_hex(req.opcode)} "
                   f"({IO_OPCODE_NAMES.get(req.opcode, 'Unknown')}) QID {q.qid} timeout, aborting "
                   f"req_op:{op}({op_num}) size:{size}")
        self.sim.spawn(self._abort(req), name=f"{self.name}.abort")
        return False

    async def _abort(self, victim: _Request) -> None:
        """The Abort command ``nvme_timeout`` sends without waiting (``abort_endio`` logs its status)."""
        status, _ = await self._submit_sync_cmd(victim.cpu, ADMIN_ABORT, cdw10=victim.qid | victim.cid << 16)
        self._warn(f"Abort status: {_hex(status & 0xFFFF_FFFF)}")

    async def _cancel_all(self, cpu: int) -> None:
        """``nvme_cancel_tagset`` / ``nvme_cancel_admin_tagset``: end every request with HOST_ABORTED_CMD."""
        for q in self.queues:
            for tag in sorted(q.inflight):
                req = q.inflight.get(tag)
                if req is not None:
                    await self._end_request(q, req, NVME_SC_HOST_ABORTED_CMD, 0, cpu)

    # -- admin commands ----------------------------------------------------------------------------------------
    async def _submit_sync_cmd(self, cpu: int, opcode: int, *, buf: tuple[int, int] | None = None,
                               **fields: int) -> tuple[int, int]:
        """``__nvme_submit_sync_cmd`` on the admin queue: (status, result); status < 0 is an errno."""
        if not self.queues or not self.queues[0].online:
            return -ENODEV, 0
        q = self.queues[0]
        data = None
        if buf is not None:
            data = ([buf], DMA_TO_DEVICE if opcode & 1 else DMA_FROM_DEVICE)  # nvme_is_write
        req = await self._queue_rq(q, cpu, opcode, fields, data)
        if not req.finished:
            await self._wait(q, req, ADMIN_TIMEOUT_PS)
        if not req.finished:  # cancelled by the timeout handler
            req.status = -EINTR
        elif req.status == NVME_SC_HOST_ABORTED_CMD:
            req.status = -EINTR  # NVME_REQ_CANCELLED
        status = req.status if req.status is not None else -EINTR
        self._trace("nvme_submit_sync_cmd", opcode=opcode, cid=req.cid, cdw10=fields.get("cdw10", 0), status=status)
        return status, req.result

    def _kbuf(self, size: int) -> int:
        """A zeroed kmalloc buffer (kzalloc)."""
        addr = self.kernel.mm.kmalloc(size)
        self._mem.fill(addr, size)
        return addr

    async def _identify(self, cpu: int, cns: int, nsid: int = 0, csi: int = 0) -> tuple[int, bytes]:
        """Identify into a 4 KiB kzalloc buffer; (status, the data as read back)."""
        buf = self._kbuf(NVME_IDENTIFY_DATA_SIZE)
        status, _ = await self._submit_sync_cmd(cpu, ADMIN_IDENTIFY, buf=(buf, NVME_IDENTIFY_DATA_SIZE), nsid=nsid,
                                                cdw10=cns, cdw11=csi << 24)
        data = self._mem.read(buf, NVME_IDENTIFY_DATA_SIZE)
        self.kernel.mm.kfree(buf, NVME_IDENTIFY_DATA_SIZE)
        return status, data

    async def _get_log(self, cpu: int, nsid: int, lid: int, buf: int, size: int) -> int:
        """``nvme_get_log`` (LSP 0, CSI NVM, offset 0): the status."""
        numd = size // 4 - 1
        status, _ = await self._submit_sync_cmd(cpu, ADMIN_GET_LOG_PAGE, buf=(buf, size), nsid=nsid,
                                                cdw10=lid | (numd & 0xFFFF) << 16, cdw11=numd >> 16,
                                                cdw14=NVME_CSI_NVM << 24)
        return status

    async def _set_features(self, cpu: int, fid: int, dword11: int, buf: tuple[int, int] | None = None
                            ) -> tuple[int, int]:
        return await self._submit_sync_cmd(cpu, ADMIN_SET_FEATURES, buf=buf, cdw10=fid, cdw11=dword11)

    # -- nvme_init_ctrl_finish -----------------------------------------------------------------------------------
    async def _init_ctrl_finish(self, cpu: int) -> int:
        self.vs = await self._readl(REG_VS)
        ret = await self._init_identify(cpu)
        if ret:
            return ret
        ctrl = self.id_ctrl
        assert ctrl is not None
        if ctrl.apsta:  # nvme_configure_apst
            table = self._kbuf(APST_TABLE_SIZE)
            self._mem.write(table, apst_table(ctrl))
            status, _ = await self._set_features(cpu, FEAT_AUTO_PST, 1, (table, APST_TABLE_SIZE))
            self.kernel.mm.kfree(table, APST_TABLE_SIZE)
            if status:
                self._err(f"failed to set APST feature ({status})")
                if status < 0:
                    return status
        if ctrl.oncs & NVME_CTRL_ONCS_TIMESTAMP:  # nvme_configure_timestamp: a stack value, bounced to a page
            page = self.kernel.mm.alloc_pages(0)
            self._mem.write(page, struct.pack("<Q", GUEST_EPOCH_MS + self.sim.now // PS_PER_MS))
            status, _ = await self._set_features(cpu, FEAT_TIMESTAMP, 0, (page, 8))
            self.kernel.mm.free_pages(page, 0)
            if status:
                self._warn(f"could not set timestamp ({status})")
                if status < 0:
                    return status
        acre, lbafee = int(bool(ctrl.crdt1)), int(bool(ctrl.ctratt & NVME_CTRL_ATTR_ELBAS))
        if acre or lbafee:  # nvme_configure_host_options
            host = self._kbuf(HOST_BEHAVIOR_SIZE)
            self._mem.write(host, bytes([acre, 0, lbafee]))
            status, _ = await self._set_features(cpu, FEAT_HOST_BEHAVIOR, 0, (host, HOST_BEHAVIOR_SIZE))
            self.kernel.mm.kfree(host, HOST_BEHAVIOR_SIZE)
            if status < 0:
                return status
        if CONFIG_BLK_SED_OPAL and ctrl.oacs & NVME_CTRL_OACS_SEC_SUPP:  # init_opal_dev -> opal_discovery0
            resp = self._kbuf(OPAL_IO_BUFFER_LENGTH)
            await self._submit_sync_cmd(cpu, ADMIN_SECURITY_RECV, buf=(resp, OPAL_IO_BUFFER_LENGTH),
                                        cdw10=OPAL_DISCOVERY_CDW10, cdw11=OPAL_IO_BUFFER_LENGTH)
            self.kernel.mm.kfree(resp, OPAL_IO_BUFFER_LENGTH)  # a failed discovery frees the opal_dev quietly
        if CONFIG_NVME_HWMON:  # nvme_hwmon_init: the SMART log in its own kzalloc'd buffer
            log = self._kbuf(SMART_LOG_SIZE)
            status = await self._get_log(cpu, NSID_BROADCAST, LOG_SMART, log, SMART_LOG_SIZE)
            if status:
                self._warn(f"Failed to read smart log (error {status})")
                self.kernel.mm.kfree(log, SMART_LOG_SIZE)
                if status == -EINTR:
                    return status
        return 0

    async def _init_identify(self, cpu: int) -> int:
        """``nvme_init_identify``: Identify Controller, the effects log, the shutdown timeout."""
        self._trace("nvme_init_identify")
        status, data = await self._identify(cpu, CNS_CTRL)
        if status:
            self._err(f"Identify Controller failed ({status})")
            return -EIO
        ctrl = IdentifyController.unpack(data)
        self.id_ctrl = ctrl
        if ctrl.lpa & NVME_CTRL_LPA_CMD_EFFECTS_LOG:  # nvme_init_effects -> nvme_get_effects_log
            cel = self._kbuf(EFFECTS_LOG_SIZE)
            status = await self._get_log(cpu, 0, LOG_CMD_EFFECTS, cel, EFFECTS_LOG_SIZE)
            if status:
                self.kernel.mm.kfree(cel, EFFECTS_LOG_SIZE)
                if status < 0:
                    return status
        if ctrl.mdts:
            mpsmin = cap_fields(self.cap)["mpsmin"]
            self.max_hw_bytes = min(self.max_hw_bytes, 1 << (ctrl.mdts + 12 + mpsmin))
        self.shutdown_timeout = shutdown_timeout(ctrl.rtd3e)
        if ctrl.rtd3e and self.shutdown_timeout != SHUTDOWN_TIMEOUT_S:
            self._info(f"Shutdown timeout set to {self.shutdown_timeout} seconds")
        return 0

    # -- DBBUF, I/O queues --------------------------------------------------------------------------------
    async def _dbbuf_dma_alloc(self, cpu: int) -> None:
        """``nvme_dbbuf_dma_alloc``: two coherent buffers of nr_allocated_queues x 8 x stride bytes."""
        assert self.id_ctrl is not None
        if not self.id_ctrl.oacs & NVME_CTRL_OACS_DBBUF_SUPP:
            return
        size = (self.kernel.ncpus + WRITE_QUEUES + POLL_QUEUES + 1) * 8 * self.db_stride
        try:
            dbs = await self.dma.alloc_coherent(cpu, size)
        except DmaMappingError:
            dbs = None
        try:
            eis = await self.dma.alloc_coherent(cpu, size) if dbs is not None else None
        except DmaMappingError:
            eis = None
        if dbs is None or eis is None:
            if dbs is not None:
                await self.dma.free_coherent(cpu, size, *dbs)
            self.kernel.printk.dev_warn(self.sim.now, self.dev.prefix_driver, self.dev.name,
                                        "unable to allocate dma for dbbuf")
            return
        self.dbbuf = (_Coherent(size, dbs[0], tuple(dbs[1])), _Coherent(size, eis[0], tuple(eis[1])))

    async def _dbbuf_set(self, cpu: int) -> None:
        """``nvme_dbbuf_set``: Doorbell Buffer Config; on failure the shadow doorbells are dropped."""
        if self.dbbuf is None:
            return
        dbs, eis = self.dbbuf
        status, _ = await self._submit_sync_cmd(cpu, ADMIN_DBBUF_CONFIG, prp1=dbs.iova, prp2=eis.iova)
        if status:
            self._warn("unable to set dbbuf")
            for q in self.queues[1:]:
                q.dbbuf = None
            for buf in (dbs, eis):
                await self.dma.free_coherent(cpu, buf.size, buf.iova, list(buf.pages))
            self.dbbuf = None

    async def _setup_io_queues(self, cpu: int) -> int:
        """``nvme_setup_io_queues``: queue count, IRQ vectors, queues; retried with fewer queues if creation fails."""
        self._trace("nvme_setup_io_queues")
        nr = self.kernel.ncpus + WRITE_QUEUES + POLL_QUEUES
        status, result = await self._set_features(cpu, FEAT_NUM_QUEUES, (nr - 1) | (nr - 1) << 16)
        if status < 0:
            return status
        if status > 0:
            self._err(f"Could not set queue count ({status})")
            nr = 0
        else:
            nr = min(nr, min(result & 0xFFFF, result >> 16) + 1)
        if not nr:
            return 0
        admin = self.queues[0]
        for _ in range(nr):  # every pass creates fewer queues: bounded
            await self._free_irq(admin.msix_entry)
            await self._pci_free_irq_vectors()
            nvecs = await self._pci_alloc_irq_vectors(1 + nr - POLL_QUEUES)
            if nvecs <= 0:
                return -EIO
            self.num_vecs = nvecs
            default, read = calc_irq_sets(nvecs - 1)
            self.io_queues = (default, read, min(POLL_QUEUES, nr - 1))
            self.max_qid = max(nvecs - 1, 1) + self.io_queues[2]
            groups = group_cpus_evenly(self.kernel.ncpus, max(nvecs - 1, 1))
            self._cpu_queue = [0] * self.kernel.ncpus
            for i, group in enumerate(groups):
                for c in group:
                    self._cpu_queue[c] = i + 1
            ret = await self._request_irq(admin, 0)
            if ret:
                return ret
            try:
                await self._create_io_queues(cpu, groups)
            except DmaMappingError:
                return -ENOMEM
            online = sum(q.online for q in self.queues[1:])
            if online < 1:
                return 0
            if online >= self.max_qid:
                default, read, poll = self.io_queues
                self._info(f"{default}/{read}/{poll} default/read/poll queues")
                return 0
            nr = online
            await self._delete_io_queues(cpu)
        return 0

    async def _create_io_queues(self, cpu: int, groups: list[list[int]]) -> None:
        """``nvme_create_io_queues``: allocate every pair first, then Create CQ/SQ in qid order."""
        for qid in range(1, self.max_qid + 1):
            await self._alloc_queue(cpu, qid, self.q_depth, self.q_depth - 1)
        for qid in range(1, self.max_qid + 1):
            q = self.queues[qid]
            if q.online:
                continue
            vector = 0 if self.num_vecs == 1 else qid
            q.irq_cpu = groups[min(qid, len(groups)) - 1][0] if self.num_vecs > 1 else self.admin_irq_cpu
            self._trace("nvme_create_queue", qid=qid, vector=vector, cpu=q.irq_cpu)
            status, _ = await self._submit_sync_cmd(cpu, ADMIN_CREATE_CQ, prp1=q.cq.iova,
                                                    cdw10=(q.depth - 1) << 16 | qid, cdw11=vector << 16 | 0x3)
            if status:
                break
            status, _ = await self._submit_sync_cmd(cpu, ADMIN_CREATE_SQ, prp1=q.sq.iova,
                                                    cdw10=(q.depth - 1) << 16 | qid, cdw11=qid << 16 | 0x1)
            if status:
                await self._submit_sync_cmd(cpu, ADMIN_DELETE_CQ, cdw10=qid)
                break
            self._init_queue(q)
            if await self._request_irq(q, vector):
                break

    async def _delete_io_queues(self, cpu: int) -> None:
        """``nvme_delete_io_queues``: Delete SQ for every online I/O queue, then Delete CQ."""
        online = [q for q in self.queues[1:] if q.online]
        for opcode in (ADMIN_DELETE_SQ, ADMIN_DELETE_CQ):
            for q in reversed(online):
                await self._submit_sync_cmd(cpu, opcode, cdw10=q.qid)
        for q in online:
            q.online = False
            if q.msix_entry in self._entry_queues and q in self._entry_queues[q.msix_entry]:
                self._entry_queues[q.msix_entry].remove(q)

    # -- start and scan ------------------------------------------------------------------------------------------
    async def _start_ctrl(self, cpu: int) -> None:
        """``nvme_start_ctrl``: AEN configuration and the AER, then ``nvme_scan_work`` (flushed by the probe)."""
        self._trace("nvme_start_ctrl")
        assert self.id_ctrl is not None
        aens = self.id_ctrl.oaes & NVME_AEN_SUPPORTED
        if aens:  # nvme_enable_aen
            status, _ = await self._set_features(cpu, FEAT_ASYNC_EVENT, aens)
            if status:
                self._warn(f"Failed to configure AEN (cfg {aens:x})")
            await self._submit_async_event()
        if any(q.online for q in self.queues[1:]):
            await self._scan_work(cpu)

    async def _submit_async_event(self) -> None:
        """``nvme_pci_submit_async_event``: the AER SQE with CID 31, written straight into the admin ring."""
        q = self.queues[0]
        async with q.lock:
            entry = SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=NVME_AER_CID)
            self._mem.write(q.sq.paddr(q.sq_tail * 64), entry.pack())
            q.sq_tail = (q.sq_tail + 1) % q.depth
            await self._write_sq_db(q)

    async def _scan_work(self, cpu: int) -> None:
        """``nvme_scan_work``: non-MDTS limits (CNS 06h), then the active namespace list (CNS 02h)."""
        self._trace("nvme_scan_work", cpu=cpu)
        ctrl = self.id_ctrl
        assert ctrl is not None
        limited_cns = self.vs < 0x00010100  # nvme_ctrl_limited_cns
        if not limited_cns and not self.skip_cns_cs:  # nvme_init_non_mdts_limits
            status, _ = await self._identify(cpu, CNS_CS_CTRL, csi=NVME_CSI_NVM)
            if status > 0:
                self.skip_cns_cs = True
            elif status < 0:
                self._warn(f"reading non-mdts-limits failed: {status}")
                return
        if limited_cns:  # nvme_scan_ns_sequential
            for nsid in range(1, ctrl.nn + 1):
                await self._scan_ns(cpu, nsid)
            return
        prev = 0
        for _ in range(ctrl.nn // 1024 + 1):  # nvme_scan_ns_list: one 1024-entry page per pass
            status, data = await self._identify(cpu, CNS_NS_ACTIVE_LIST, nsid=prev)
            if status:
                self._warn(f"Identify NS List failed (status=0x{status & 0xFFFF_FFFF:x})")
                return
            for nsid in struct.unpack("<1024I", data):
                if nsid <= prev:
                    return  # end of the list (or a list that does not ascend)
                await self._scan_ns(cpu, nsid)
                prev = nsid

    async def _scan_ns(self, cpu: int, nsid: int) -> None:
        """``nvme_scan_ns``: descriptors, Identify Namespace, then ``nvme_alloc_ns`` for a new namespace."""
        self._trace("nvme_scan_ns", nsid=nsid)
        multi_css = self.ctrl_config & (0x7 << 4) == NVME_CC_CSS_CSI
        csi = NVME_CSI_NVM
        if self.vs >= 0x00010300 or multi_css:  # nvme_identify_ns_descs
            status, data = await self._identify(cpu, CNS_NS_DESCR_LIST, nsid=nsid)
            if status:
                self._warn(f"Identify Descriptors failed (nsid={nsid}, status=0x{status & 0xFFFF_FFFF:x})")
                if status < 0:
                    return
            else:
                csi = _descriptor_csi(data)
        if csi != NVME_CSI_NVM:
            if not multi_css:
                self._warn(f"command set not reported for nsid: {nsid}")
            return  # other command sets (ZNS, KV) are not modelled
        status, data = await self._identify(cpu, CNS_NS, nsid=nsid)  # nvme_ns_info_from_identify
        if status or not IdentifyNamespace.unpack(data).ncap or nsid in self.namespaces:
            return
        status, data = await self._identify(cpu, CNS_NS, nsid=nsid)  # nvme_update_ns_info_block
        if status:
            return
        id_ns = IdentifyNamespace.unpack(data)
        assert self.id_ctrl is not None
        if self.id_ctrl.ctratt & NVME_CTRL_ATTR_ELBAS:  # nvme_init_ms: the NVM command set's namespace data
            await self._identify(cpu, CNS_CS_NS, nsid=nsid, csi=NVME_CSI_NVM)
        self.namespaces[nsid] = id_ns
        await self._partition_scan(cpu, nsid, id_ns)

    async def _partition_scan(self, cpu: int, nsid: int, id_ns: IdentifyNamespace) -> None:
        """``add_disk`` -> ``bdev_disk_changed``: read the page-cache pages the partition parsers touch."""
        bs = id_ns.block_size
        if not 512 <= bs <= PAGE_SIZE:
            return  # capacity 0: Linux does not scan a disk whose block size it cannot use
        capacity = id_ns.nsze * bs
        pages = []
        for sector in PARTITION_SCAN_SECTORS:
            page = sector * 512 // PAGE_SIZE * PAGE_SIZE
            if page + PAGE_SIZE <= capacity and page not in pages:
                pages.append(page)
        for page in pages:
            buf = self.kernel.mm.alloc_pages(0)
            status = await self._submit_fs_io(cpu, IO_READ, nsid, page // bs, PAGE_SIZE // bs, buf)
            if status:
                self.kernel.mm.free_pages(buf, 0)
                return
            self.page_cache[(nsid, page // 512)] = buf

    # -- I/O -------------------------------------------------------------------------------------------------
    async def submit_io(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int, paddr: int) -> int:
        """A block-layer request on ``cpu``'s queue: map, submit, wait for the completion interrupt, unmap.

        Returns the final 15-bit NVMe status (0 = success) after Linux's retries, or a negative
        errno (-EIO when the command never completed, -ENOMEM when it could not be mapped).
        """
        self._check_io(cpu, opcode, nsid, lba, nblocks)
        return await self._submit_fs_io(cpu, opcode, nsid, lba, nblocks, paddr)

    def _check_io(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int) -> None:
        if opcode not in BLK_OPS:
            raise ValueError(f"submit_io supports Read (0x2) and Write (0x1), not opcode {opcode:#x}")
        if not 0 <= cpu < self.kernel.ncpus:
            raise ValueError(f"cpu must be 0..{self.kernel.ncpus - 1}, not {cpu}")
        id_ns = self.namespaces.get(nsid)
        if id_ns is None:
            raise ValueError(f"{self.name} has no namespace {nsid} (known: {sorted(self.namespaces)})")
        length = nblocks * id_ns.block_size
        if not 1 <= nblocks <= 0x10000 or length > self.max_hw_bytes or not 0 <= lba <= id_ns.nsze - nblocks:
            raise ValueError(f"{nblocks} blocks at LBA {lba} do not fit nvme0n{nsid} ({id_ns.nsze} blocks, "
                             f"{self.max_hw_bytes} bytes per request)")

    async def submit_io_sg(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int,
                           pages: list[int]) -> int:
        """``submit_io`` of a buffer made of 4 KiB pages anywhere in guest memory (direct I/O of user
        pages): the data fills ``pages`` in order, one scatterlist segment per page.  Same result."""
        self._check_io(cpu, opcode, nsid, lba, nblocks)
        length = nblocks * self.namespaces[nsid].block_size
        if len(pages) != -(-length // PAGE_SIZE) or any(p & (PAGE_SIZE - 1) or p < 0 for p in pages):
            raise ValueError(f"{length} bytes need {-(-length // PAGE_SIZE)} page-aligned 4 KiB pages, "
                             f"not {len(pages)} pages {[_hex(p) for p in pages[:4]]}...")
        segments = [(p, min(PAGE_SIZE, length - i * PAGE_SIZE)) for i, p in enumerate(pages)]
        return await self._submit_fs_io(cpu, opcode, nsid, lba, nblocks, segments)

    async def _submit_fs_io(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int,
                            buf: int | list[tuple[int, int]]) -> int:
        """One block-layer request; ``buf`` is a physical address or (paddr, length) segments."""
        if self.state != "LIVE" or not self._cpu_queue or not self.queues[self._cpu_queue[cpu]].online:
            return -EIO
        q = self.queues[self._cpu_queue[cpu]]
        length = nblocks * self.namespaces[nsid].block_size
        segments = [(buf, length)] if isinstance(buf, int) else buf
        direction = DMA_FROM_DEVICE if opcode == IO_READ else DMA_TO_DEVICE
        fields = {"nsid": nsid, "cdw10": lba & 0xFFFF_FFFF, "cdw11": lba >> 32, "cdw12": nblocks - 1}
        status = -EIO
        for _ in range(NVME_MAX_RETRIES + 1):  # nvme_decide_disposition: retry while no DNR
            req = await self._queue_rq(q, cpu, opcode, fields, (segments, direction))
            if not req.finished:
                await self._wait(q, req, IO_TIMEOUT_PS)
            status = req.status if req.finished and req.status is not None else -EIO
            if status <= 0 or status & DNR or status == NVME_SC_HOST_ABORTED_CMD:
                break
        if status > 0:
            self.kernel.printk.log(self.sim.now, f"{self.name}n{nsid}: {IO_OPCODE_NAMES.get(opcode, 'Unknown')}"
                                   f"({_hex(opcode)}) @ LBA {lba}, {nblocks} blocks, {status_str(status)}",
                                   LOGLEVEL_ERR)
        return status

    # -- teardown ----------------------------------------------------------------------------------------------
    async def _dev_disable(self, cpu: int, shutdown: bool) -> None:
        """``nvme_dev_disable``: delete the I/O queues and stop a live controller, free the IRQs, cancel."""
        self._trace("nvme_dev_disable", shutdown=shutdown)
        self._disabling = True
        if self._pci_enabled:
            csts = await self._readl(REG_CSTS)
            if csts & CSTS_RDY and not csts & CSTS_CFS and self.queues:  # not nvme_pci_ctrl_is_dead
                await self._delete_io_queues(cpu)
                await self._disable_ctrl(shutdown)
        for q in self.queues:
            q.online = False
        await self._pci_free_irq_vectors()
        await self._pci_disable_device()
        await self._cancel_all(cpu)
        self._disabling = False

    async def _out_disable(self, cpu: int) -> None:
        """``nvme_probe``'s out_disable: disable, then free the queues and the DBBUF pages."""
        self.state = "DELETING"
        await self._dev_disable(cpu, shutdown=True)
        for q in reversed(self.queues):
            await self.dma.free_coherent(cpu, q.sq.size, q.sq.iova, list(q.sq.pages))
            await self.dma.free_coherent(cpu, q.cq.size, q.cq.iova, list(q.cq.pages))
        self.queues.clear()
        if self.dbbuf is not None:
            for buf in self.dbbuf:
                await self.dma.free_coherent(cpu, buf.size, buf.iova, list(buf.pages))
            self.dbbuf = None


def _descriptor_csi(data: bytes) -> int:
    """The Command Set Identifier of a Namespace Identification Descriptor list (NVM when absent)."""
    pos = 0
    while pos + 4 <= len(data):  # every descriptor advances by at least its 4-byte header
        nidt, nidl = data[pos], data[pos + 1]
        if not nidl:
            break
        if nidt == NIDT_CSI:
            return data[pos + 4]
        pos += 4 + nidl
    return NVME_CSI_NVM
