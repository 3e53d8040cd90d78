"""The transport-independent half of the guest's NVMe driver: Linux 6.7 drivers/nvme/host/core.c.

``NvmeCtrl`` is ``struct nvme_ctrl``: its state, the registers it caches (CAP, VS, CC), the
Identify data, the namespaces.  It reaches the controller only through an ``NvmeTransport``
(the part of ``nvme_ctrl_ops`` and blk-mq it uses: 32/64-bit register access, the admin and
per-CPU I/O queues, executing a request, the AER), which the PCI driver implements:

* ``nvme_wait_ready`` / ``nvme_disable_ctrl`` / ``nvme_enable_ctrl``: CC writes and CSTS polls
  bounded by CAP.TO (or the shutdown timeout);
* ``__nvme_submit_sync_cmd`` and its users: Identify into a kzalloc'd 4 KiB buffer,
  ``nvme_get_log``, ``nvme_set_features``, ``nvme_set_queue_count``;
* ``nvme_init_ctrl_finish``: Identify Controller, the Commands Supported and Effects log,
  the shutdown timeout, APST (``nvme_configure_apst``), the timestamp, host behaviour, OPAL
  discovery (CONFIG_BLK_SED_OPAL), the hwmon SMART log (CONFIG_NVME_HWMON);
* ``nvme_start_ctrl``: AEN configuration and the AER, then ``nvme_scan_work`` (non-MDTS limits,
  the active namespace list, ``nvme_scan_ns``) and ``add_disk``'s partition scan;
* the namespace's read/write path (``nvme_setup_rw``, ``nvme_decide_disposition``'s retries,
  ``nvme_log_error``), which ``submit_io`` / ``submit_io_sg`` offer to workloads.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Protocol

from sim import PS_PER_MS, ms, seconds, sleep

from .._nvme_wire import (
    ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SECURITY_RECV, ADMIN_SET_FEATURES, CNS_CS_CTRL, CNS_CS_NS, CNS_CTRL,
    CNS_NS, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CSTS_RDY, CSTS_SHST_MASK, CSTS_SHST_SHIFT, DNR, FEAT_ASYNC_EVENT,
    FEAT_AUTO_PST, FEAT_HOST_BEHAVIOR, FEAT_NUM_QUEUES, FEAT_TIMESTAMP, IO_OPCODE_NAMES, IO_READ, IO_WRITE,
    LOG_CMD_EFFECTS, LOG_SMART, MORE, NIDT_CSI, NSID_BROADCAST, REG_CAP, REG_CC, REG_CSTS, REG_VS, SHST_COMPLETE,
    STATUS_NAMES, cap_fields,
)
from .._errno import EINTR, EIO, ENODEV
from .._nvme_data import IdentifyController, IdentifyNamespace
from ._dma_iommu import DMA_FROM_DEVICE, DMA_TO_DEVICE
from ._kmem_consts import PAGE_SIZE
from ._nvme_queue import NvmeQueue, Request
from ._printk import LOGLEVEL_ERR

if TYPE_CHECKING:
    from .._memory import GuestMemory
    from ._kernel import GuestKernel

# -- driver constants (drivers/nvme/host/nvme.h, core.c; module parameter defaults) --------------------
SHUTDOWN_TIMEOUT_S = 5
ADMIN_TIMEOUT_PS = seconds(60)
IO_TIMEOUT_PS = seconds(30)
NVME_MAX_RETRIES = 5
#: NVME_AEN_CFG_NS_ATTR | FW_ACT | ANA_CHANGE | DISC_CHANGE
NVME_AEN_SUPPORTED = 0x8000_0B00
NVME_CC_CSS_CSI = 0x6 << 4
NVME_CAP_CSS_CSI = 1 << 6  # in CAP.CSS
NVME_CTRL_LPA_CMD_EFFECTS_LOG = 1 << 1
NVME_CTRL_ONCS_TIMESTAMP = 1 << 6
NVME_CTRL_OACS_SEC_SUPP = 1 << 0
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
#: ``usleep_range(1000, 2000)`` in nvme_wait_ready: the hrtimer fires at the range's end on an idle CPU
READY_POLL_PS = ms(2)
#: ktime_get_real() at simulated time 0 (ms since the epoch; 2024-01-01T00:00:00Z, a fixed stand-in)
GUEST_EPOCH_MS = 1_704_067_200_000
#: 512-byte sectors the default partition parsers read on a disk without a partition table
#: (msdos/efi sector 0, amiga's RDB search 0-15, ultrix's label at sector 31): 4 KiB pages 0, 1, 3
PARTITION_SCAN_SECTORS = (0, 15, 31)

#: blk status of a request the host cancelled (NVME_SC_HOST_ABORTED_CMD)
NVME_SC_HOST_ABORTED_CMD = 0x371

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


def status_str(status: int) -> str:
    """``nvme_get_error_status_str`` plus the "(sct / sc) MORE DNR" tail of ``nvme_log_error``."""
    code = status & 0x7FF
    name = "Host Aborted Command" if code == NVME_SC_HOST_ABORTED_CMD else STATUS_NAMES.get(code, "Unknown")
    more = "MORE " if status & MORE else ""
    dnr = "DNR " if status & DNR else ""
    return f"{name} (sct {status >> 8 & 7:#x} / sc {status & 0xFF:#x}) {more}{dnr}"


def kernel_hex(value: int) -> str:
    """The kernel's ``%#x``: "0x0" for zero too (lib/vsprintf.c has no glibc special case)."""
    return f"0x{value:x}"


def descriptor_csi(data: bytes) -> int:
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


class NvmeTransport(Protocol):
    """What core.c asks of the transport (``nvme_ctrl_ops`` and the blk-mq queues it drives)."""

    async def reg_read32(self, off: int) -> int: ...

    async def reg_write32(self, off: int, value: int) -> None: ...

    async def reg_read64(self, off: int) -> int: ...

    def admin_queue(self) -> NvmeQueue | None:
        """The admin queue, if it is live."""

    def io_queue(self, cpu: int) -> NvmeQueue | None:
        """The I/O queue ``cpu`` maps to, if it is live."""

    def io_queues_online(self) -> bool: ...

    async def execute_rq(self, q: NvmeQueue, cpu: int, opcode: int, fields: dict[str, int],
                         data: tuple[list[tuple[int, int]], int] | None, timeout: int) -> Request:
        """``blk_execute_rq``: queue the command on ``q`` and wait for it (bounded by ``timeout``)."""

    async def submit_async_event(self) -> None: ...


class NvmeCtrl:
    """``struct nvme_ctrl``: controller state, cached registers and Identify data, namespaces."""

    def __init__(self, kernel: GuestKernel, name: str, transport: NvmeTransport) -> None:
        self.kernel = kernel
        self.sim = kernel.sim
        self.name = name
        #: the driver's trace helper (source ``guest/<name>``), also used by its transport
        self.trace = kernel.sim.tracer(f"guest/{name}")
        self.transport = transport
        self._mem: GuestMemory = kernel.machine.memory
        self.state = "NEW"  # enum nvme_ctrl_state
        self.cap = 0
        self.vs = 0
        self.ctrl_config = 0
        self.id_ctrl: IdentifyController | None = None
        self.shutdown_timeout = SHUTDOWN_TIMEOUT_S
        self.max_hw_bytes = 0
        self.skip_cns_cs = False
        self.namespaces: dict[int, IdentifyNamespace] = {}
        #: page cache of the partition scan: (nsid, sector of the page) -> guest-physical page
        self.page_cache: dict[tuple[int, int], int] = {}

    def __repr__(self) -> str:
        return f"<NvmeCtrl {self.name} {self.state}>"

    # -- logging ----------------------------------------------------------------------------
    def info(self, text: str) -> None:
        self.kernel.printk.dev_info(self.sim.now, "nvme", self.name, text)

    def warn(self, text: str) -> None:
        self.kernel.printk.dev_warn(self.sim.now, "nvme", self.name, text)

    def err(self, text: str) -> None:
        self.kernel.printk.dev_err(self.sim.now, "nvme", self.name, text)

    # -- CC / CSTS ------------------------------------------------------------------------------------------
    async def _wait_ready(self, mask: int, val: int, timeout_s: int, op: str) -> int:
        """``nvme_wait_ready``: poll CSTS every READY_POLL_PS until (CSTS & mask) == val, bounded by timeout_s."""
        deadline = self.sim.now + seconds(timeout_s)
        while True:
            csts = await self.transport.reg_read32(REG_CSTS)
            if csts == 0xFFFF_FFFF:
                return -ENODEV
            if csts & mask == val:
                return 0
            await sleep(READY_POLL_PS)
            if self.sim.now > deadline:
                self.err(f"Device not ready; aborting {op}, CSTS={kernel_hex(csts)}")
                return -ENODEV

    async def disable_ctrl(self, shutdown: bool) -> int:
        """``nvme_disable_ctrl``: clear EN (or request a normal shutdown) and wait for the controller."""
        self.trace("nvme_disable_ctrl", shutdown=shutdown)
        self.ctrl_config &= ~(0x3 << 14)
        if shutdown:
            self.ctrl_config |= 1 << 14
        else:
            self.ctrl_config &= ~1
        await self.transport.reg_write32(REG_CC, self.ctrl_config)
        if shutdown:
            return await self._wait_ready(CSTS_SHST_MASK << CSTS_SHST_SHIFT, SHST_COMPLETE << CSTS_SHST_SHIFT,
                                          self.shutdown_timeout, "shutdown")
        return await self._wait_ready(CSTS_RDY, 0, (cap_fields(self.cap)["to"] + 1) // 2, "reset")

    async def enable_ctrl(self) -> int:
        """``nvme_enable_ctrl``: CC = CSS | MPS 0 | AMS RR | IOSQES 6 | IOCQES 4, then EN, then wait RDY."""
        self.trace("nvme_enable_ctrl")
        self.cap = await self.transport.reg_read64(REG_CAP)
        cap = cap_fields(self.cap)
        if cap["mpsmin"] > 0:
            self.err(f"Minimum device page size {1 << (cap['mpsmin'] + 12)} too large for host ({PAGE_SIZE})")
            return -ENODEV
        self.ctrl_config = NVME_CC_CSS_CSI if cap["css"] & NVME_CAP_CSS_CSI else 0
        self.ctrl_config |= 6 << 16 | 4 << 20
        await self.transport.reg_write32(REG_CC, self.ctrl_config)
        self.cap = await self.transport.reg_read64(REG_CAP)  # CAP may change after the first CC write
        self.ctrl_config |= 1
        await self.transport.reg_write32(REG_CC, self.ctrl_config)
        return await self._wait_ready(CSTS_RDY, CSTS_RDY, (cap_fields(self.cap)["to"] + 1) // 2, "initialisation")

    # -- admin commands ----------------------------------------------------------------------------------------
    async def submit_sync_cmd(self, cpu: int, opcode: int, *, buf: tuple[int, int] | None = None,
                              **fields: int) -> tuple[int, int]:
        """``__nvme_submit_sync_cmd`` on the admin queue: (status, result); status < 0 is an errno."""
        q = self.transport.admin_queue()
        if q is None:
            return -ENODEV, 0
        data = None
        if buf is not None:
            data = ([buf], DMA_TO_DEVICE if opcode & 1 else DMA_FROM_DEVICE)  # nvme_is_write
        req = await self.transport.execute_rq(q, cpu, opcode, fields, data, ADMIN_TIMEOUT_PS)
        if not req.finished:  # cancelled by the timeout handler
            req.status = -EINTR
        elif req.status == NVME_SC_HOST_ABORTED_CMD:
            req.status = -EINTR  # NVME_REQ_CANCELLED
        status = req.status if req.status is not None else -EINTR
        self.trace("nvme_submit_sync_cmd", opcode=opcode, cid=req.cid, cdw10=fields.get("cdw10", 0), status=status)
        return status, req.result

    def _kbuf(self, size: int) -> int:
        """A zeroed kmalloc buffer (kzalloc)."""
        addr = self.kernel.mm.kmalloc(size)
        self._mem.fill(addr, size)
        return addr

    async def _identify(self, cpu: int, cns: int, nsid: int = 0, csi: int = 0) -> tuple[int, bytes]:
        """Identify into a 4 KiB kzalloc buffer; (status, the data as read back)."""
        buf = self._kbuf(NVME_IDENTIFY_DATA_SIZE)
        status, _ = await self.submit_sync_cmd(cpu, ADMIN_IDENTIFY, buf=(buf, NVME_IDENTIFY_DATA_SIZE), nsid=nsid,
                                               cdw10=cns, cdw11=csi << 24)
        data = self._mem.read(buf, NVME_IDENTIFY_DATA_SIZE)
        self.kernel.mm.kfree(buf, NVME_IDENTIFY_DATA_SIZE)
        return status, data

    async def _get_log(self, cpu: int, nsid: int, lid: int, buf: int, size: int) -> int:
        """``nvme_get_log`` (LSP 0, CSI NVM, offset 0): the status."""
        numd = size // 4 - 1
        status, _ = await self.submit_sync_cmd(cpu, ADMIN_GET_LOG_PAGE, buf=(buf, size), nsid=nsid,
                                               cdw10=lid | (numd & 0xFFFF) << 16, cdw11=numd >> 16,
                                               cdw14=NVME_CSI_NVM << 24)
        return status

    async def _set_features(self, cpu: int, fid: int, dword11: int, buf: tuple[int, int] | None = None
                            ) -> tuple[int, int]:
        return await self.submit_sync_cmd(cpu, ADMIN_SET_FEATURES, buf=buf, cdw10=fid, cdw11=dword11)

    async def set_queue_count(self, cpu: int, count: int) -> int:
        """``nvme_set_queue_count``: the I/O queue count granted (0 after an NVMe error), or a negative errno."""
        status, result = await self._set_features(cpu, FEAT_NUM_QUEUES, (count - 1) | (count - 1) << 16)
        if status < 0:
            return status
        if status > 0:
            self.err(f"Could not set queue count ({status})")
            return 0
        return min(count, min(result & 0xFFFF, result >> 16) + 1)

    # -- nvme_init_ctrl_finish -----------------------------------------------------------------------------------
    async def init_ctrl_finish(self, cpu: int) -> int:
        self.vs = await self.transport.reg_read32(REG_VS)
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
                self.err(f"failed to set APST feature ({status})")
                if status < 0:
                    return status
        if ctrl.oncs & NVME_CTRL_ONCS_TIMESTAMP:  # nvme_configure_timestamp: a stack value, bounced to a page
            page = self.kernel.mm.alloc_pages(0)
            self._mem.write(page, struct.pack("<Q", GUEST_EPOCH_MS + self.sim.now // PS_PER_MS))
            status, _ = await self._set_features(cpu, FEAT_TIMESTAMP, 0, (page, 8))
            self.kernel.mm.free_pages(page, 0)
            if status:
                self.warn(f"could not set timestamp ({status})")
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
            await self.submit_sync_cmd(cpu, ADMIN_SECURITY_RECV, buf=(resp, OPAL_IO_BUFFER_LENGTH),
                                       cdw10=OPAL_DISCOVERY_CDW10, cdw11=OPAL_IO_BUFFER_LENGTH)
            self.kernel.mm.kfree(resp, OPAL_IO_BUFFER_LENGTH)  # a failed discovery frees the opal_dev quietly
        if CONFIG_NVME_HWMON:  # nvme_hwmon_init: the SMART log in its own kzalloc'd buffer
            log = self._kbuf(SMART_LOG_SIZE)
            status = await self._get_log(cpu, NSID_BROADCAST, LOG_SMART, log, SMART_LOG_SIZE)
            if status:
                self.warn(f"Failed to read smart log (error {status})")
                self.kernel.mm.kfree(log, SMART_LOG_SIZE)
                if status == -EINTR:
                    return status
        return 0

    async def _init_identify(self, cpu: int) -> int:
        """``nvme_init_identify``: Identify Controller, the effects log, the shutdown timeout."""
        self.trace("nvme_init_identify")
        status, data = await self._identify(cpu, CNS_CTRL)
        if status:
            self.err(f"Identify Controller failed ({status})")
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
            self.info(f"Shutdown timeout set to {self.shutdown_timeout} seconds")
        return 0

    # -- start and scan ------------------------------------------------------------------------------------------
    async def start_ctrl(self, cpu: int) -> None:
        """``nvme_start_ctrl``: AEN configuration and the AER, then ``nvme_scan_work`` (flushed by the probe)."""
        self.trace("nvme_start_ctrl")
        assert self.id_ctrl is not None
        aens = self.id_ctrl.oaes & NVME_AEN_SUPPORTED
        if aens:  # nvme_enable_aen
            status, _ = await self._set_features(cpu, FEAT_ASYNC_EVENT, aens)
            if status:
                self.warn(f"Failed to configure AEN (cfg {aens:x})")
            await self.transport.submit_async_event()
        if self.transport.io_queues_online():
            await self._scan_work(cpu)

    def complete_async_event(self, status: int, result: int) -> None:
        """``nvme_complete_async_event``: successful events requeue the AER (async_event_work)."""
        self.trace("nvme_complete_async_event", status=status, result=result)
        if status == 0 and self.state == "LIVE":
            self.sim.spawn(self.transport.submit_async_event(), name=f"{self.name}.async_event_work")

    async def _scan_work(self, cpu: int) -> None:
        """``nvme_scan_work``: non-MDTS limits (CNS 06h), then the active namespace list (CNS 02h)."""
        self.trace("nvme_scan_work", cpu=cpu)
        ctrl = self.id_ctrl
        assert ctrl is not None
        limited_cns = self.vs < 0x00010100  # nvme_ctrl_limited_cns
        if not limited_cns and not self.skip_cns_cs:  # nvme_init_non_mdts_limits
            status, _ = await self._identify(cpu, CNS_CS_CTRL, csi=NVME_CSI_NVM)
            if status > 0:
                self.skip_cns_cs = True
            elif status < 0:
                self.warn(f"reading non-mdts-limits failed: {status}")
                return
        if limited_cns:  # nvme_scan_ns_sequential
            for nsid in range(1, ctrl.nn + 1):
                await self._scan_ns(cpu, nsid)
            return
        prev = 0
        for _ in range(ctrl.nn // 1024 + 1):  # nvme_scan_ns_list: one 1024-entry page per pass
            status, data = await self._identify(cpu, CNS_NS_ACTIVE_LIST, nsid=prev)
            if status:
                self.warn(f"Identify NS List failed (status=0x{status & 0xFFFF_FFFF:x})")
                return
            for nsid in struct.unpack("<1024I", data):
                if nsid <= prev:
                    return  # end of the list (or a list that does not ascend)
                await self._scan_ns(cpu, nsid)
                prev = nsid

    async def _scan_ns(self, cpu: int, nsid: int) -> None:
        """``nvme_scan_ns``: descriptors, Identify Namespace, then ``nvme_alloc_ns`` for a new namespace."""
        self.trace("nvme_scan_ns", nsid=nsid)
        multi_css = self.ctrl_config & (0x7 << 4) == NVME_CC_CSS_CSI
        csi = NVME_CSI_NVM
        if self.vs >= 0x00010300 or multi_css:  # nvme_identify_ns_descs
            status, data = await self._identify(cpu, CNS_NS_DESCR_LIST, nsid=nsid)
            if status:
                self.warn(f"Identify Descriptors failed (nsid={nsid}, status=0x{status & 0xFFFF_FFFF:x})")
                if status < 0:
                    return
            else:
                csi = descriptor_csi(data)
        if csi != NVME_CSI_NVM:
            if not multi_css:
                self.warn(f"command set not reported for nsid: {nsid}")
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
                             f"not {len(pages)} pages {[kernel_hex(p) for p in pages[:4]]}...")
        segments = [(p, min(PAGE_SIZE, length - i * PAGE_SIZE)) for i, p in enumerate(pages)]
        return await self._submit_fs_io(cpu, opcode, nsid, lba, nblocks, segments)

    async def _submit_fs_io(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int,
                            buf: int | list[tuple[int, int]]) -> int:
        """One block-layer request; ``buf`` is a physical address or (paddr, length) segments."""
        q = self.transport.io_queue(cpu) if self.state == "LIVE" else None
        if q is None:
            return -EIO
        length = nblocks * self.namespaces[nsid].block_size
        segments = [(buf, length)] if isinstance(buf, int) else buf
        direction = DMA_FROM_DEVICE if opcode == IO_READ else DMA_TO_DEVICE
        fields = {"nsid": nsid, "cdw10": lba & 0xFFFF_FFFF, "cdw11": lba >> 32, "cdw12": nblocks - 1}
        status = -EIO
        for _ in range(NVME_MAX_RETRIES + 1):  # nvme_decide_disposition: retry while no DNR
            req = await self.transport.execute_rq(q, cpu, opcode, fields, (segments, direction), IO_TIMEOUT_PS)
            status = req.status if req.finished and req.status is not None else -EIO
            if status <= 0 or status & DNR or status == NVME_SC_HOST_ABORTED_CMD:
                break
        if status > 0:
            self.kernel.printk.log(self.sim.now, f"{self.name}n{nsid}: {IO_OPCODE_NAMES.get(opcode, 'Unknown')}"
                                   f"({kernel_hex(opcode)}) @ LBA {lba}, {nblocks} blocks, {status_str(status)}",
                                   LOGLEVEL_ERR)
        return status
