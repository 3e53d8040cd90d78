"""The guest's NVMe PCI driver: Linux 6.7 drivers/nvme/host/pci.c, as far as probe and I/O go.

``NvmeDriver`` is ``struct nvme_dev``: it owns the PCI function (config space, BAR0 MMIO and
doorbells, MSI-X through ``MsixVectors``, the device's DMA API ``dev.dma``), the queue pairs
(``NvmeQueue``) and the submission and completion paths, and implements the ``NvmeTransport``
its ``NvmeCtrl`` (core.c, ``ctrl``) drives.  ``probe`` is ``nvme_probe``, in Linux's order
(reference pci-nvme.md §4.3, linux-guest.md §4.4, refboot §5.4):

1. ``nvme_pci_alloc_dev`` (64-bit DMA mask), log "pci function 0000:00:04.0";
2. ``nvme_pci_enable``: COMMAND.MEM and .MASTER, ``readl(CSTS)``, one MSI-X vector
   (``pci_alloc_irq_vectors(1, 1)``), CAP (``lo_hi_readq``), q_depth = min(MQES + 1, 1024), CMBSZ;
3. ``nvme_pci_configure_admin_queue``: VS, ``nvme_disable_ctrl`` (CC = 0, poll CSTS.RDY = 0),
   admin CQ then SQ (``dma_alloc_coherent``, 32 entries), AQA/ASQ/ACQ, ``nvme_enable_ctrl``
   (CC with CSS/MPS/IOSQES/IOCQES, then EN, poll RDY), IRQ "nvme0q0" on MSI-X entry 0;
4. ``nvme_init_ctrl_finish`` (core);
5. ``nvme_dbbuf_dma_alloc`` (OACS bit 8), ``nvme_setup_io_queues``: Set Features Number of
   Queues (``num_possible_cpus``), MSI-X re-allocated for 1 + n vectors (affinity spread),
   every I/O queue pair allocated (CQ then SQ), then Create I/O CQ/SQ for each, log
   "A/B/C default/read/poll queues"; Doorbell Buffer Config;
6. ``nvme_start_ctrl`` (core): the AER (CID 31), then ``nvme_scan_work`` and the partition scan.

Every data buffer is mapped just before its command and unmapped in the completion path
(``nvme_map_data`` / ``nvme_pci_unmap_rq``, in ``_nvme_prp``), sized and directed as Linux does
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

Waits on the controller are bounded: CSTS polls by CAP.TO, commands by admin_timeout (60 s)
or io_timeout (30 s); a timeout logs what ``nvme_wait_ready`` / ``nvme_timeout`` log and the
probe fails (``probe`` returns the negative errno; nothing raises).

Not modelled: CMB, HMB (HMPRE != 0 would allocate a host memory buffer), poll/read queues
(module defaults 0), multipath/ANA, the controller reset work after a timeout, namespaces of
command sets other than NVM, partition parsers beyond the sectors an empty disk makes them read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._nvme_wire import (
    ADMIN_CREATE_CQ, ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG, ADMIN_DELETE_CQ, ADMIN_DELETE_SQ, CSTS_CFS, CSTS_NSSRO,
    CSTS_RDY, REG_ACQ, REG_AQA, REG_ASQ, REG_CAP, REG_CMBSZ, REG_CSTS, REG_VS, cap_fields,
)
from .._nvme_data import IdentifyNamespace
from .._pci_config import PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from ._device import GuestDevice
from ._dma_iommu import DmaMappingError
from .._errno import EIO, ENODEV, ENOMEM
from ._nvme_core import NvmeCtrl
from ._nvme_io import NvmePciTransport
from ._nvme_msix import MsixVectors, PciConfigAccess
from ._nvme_prp import prp_pools
from ._nvme_queue import Coherent, NvmeQueue

if TYPE_CHECKING:
    from .._memory import GuestMemory
    from .._seams import CpuBus
    from ._kernel import GuestKernel

# -- driver constants (drivers/nvme/host/nvme.h, pci.c; module parameter defaults) ------------
NVME_AQ_DEPTH = 32
#: admin blk-mq tags: NVME_AQ_DEPTH - 1 (the AER slot) - 1
NVME_AQ_MQ_TAG_DEPTH = 30
IO_QUEUE_DEPTH = 1024
WRITE_QUEUES = 0
POLL_QUEUES = 0
#: NVME_MAX_KB_SZ: the driver's own transfer limit
NVME_MAX_TRANSFER = 8192 * 1024
#: dma_opt_mapping_size() through dma-iommu: iova_rcache_range() = 4 KiB << 5
IOMMU_DMA_OPT_MAPPING = 128 * 1024
NVME_CTRL_OACS_DBBUF_SUPP = 1 << 8


# -- pure decisions ------------------------------------------------------------------------------------
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


class NvmeDriver(NvmePciTransport):
    """One NVMe controller bound to the guest's nvme driver (``struct nvme_dev``; ``ctrl`` is its ``nvme_ctrl``)."""

    def __init__(self, kernel: GuestKernel, dev: GuestDevice, *, instance: int = 0, admin_irq_cpu: int = 0) -> None:
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
        self._bus: CpuBus = kernel.machine.bus
        self._mem: GuestMemory = kernel.machine.memory
        self._bar = bar.address
        self.ctrl = NvmeCtrl(kernel, self.name, self)
        self.error = 0
        self.q_depth = 0
        self.db_stride = 1
        self.queues: list[NvmeQueue] = []
        self.io_queues = (0, 0, 0)  # HCTX_TYPE_DEFAULT, READ, POLL
        self.num_vecs = 0
        self.max_qid = 0
        self._cpu_queue: list[int] = []
        self.dbbuf: tuple[Coherent, Coherent] | None = None
        self._pools = prp_pools()
        self._cfg = PciConfigAccess(self._bus, dev.bdf)
        self.msix = MsixVectors(kernel, dev, self._cfg, self.name)
        self._entry_queues: dict[int, list[NvmeQueue]] = {}
        self._pci_enabled = False
        self._disabling = False

    def __repr__(self) -> str:
        return f"<NvmeDriver {self.name} {self.dev.name} {self.state}>"

    # -- what the block layer and the tests read of the controller ---------------------------------------
    @property
    def state(self) -> str:
        return self.ctrl.state

    @property
    def namespaces(self) -> dict[int, IdentifyNamespace]:
        return self.ctrl.namespaces

    @property
    def page_cache(self) -> dict[tuple[int, int], int]:
        return self.ctrl.page_cache

    @property
    def skip_cns_cs(self) -> bool:
        return self.ctrl.skip_cns_cs

    @property
    def max_hw_bytes(self) -> int:
        return self.ctrl.max_hw_bytes

    async def submit_io(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int, paddr: int) -> int:
        """``NvmeCtrl.submit_io``: one block-layer read or write of a contiguous buffer; the status."""
        return await self.ctrl.submit_io(cpu, opcode, nsid, lba, nblocks, paddr)

    async def submit_io_sg(self, cpu: int, opcode: int, nsid: int, lba: int, nblocks: int,
                           pages: list[int]) -> int:
        """``NvmeCtrl.submit_io_sg``: the same over scattered 4 KiB pages."""
        return await self.ctrl.submit_io_sg(cpu, opcode, nsid, lba, nblocks, pages)

    # -- probe (nvme_probe) ------------------------------------------------------------------------------
    async def probe(self, cpu: int) -> int:
        """``nvme_probe`` on ``cpu``: 0, or the negative errno the probe failed with (also in ``error``)."""
        if not 0 <= cpu < self.kernel.ncpus:
            raise ValueError(f"cpu must be 0..{self.kernel.ncpus - 1}, not {cpu}")
        ctrl = self.ctrl
        ctrl.trace("nvme_probe", cpu=cpu, bdf=self.dev.bdf)
        self.dev.set_dma_mask(64)  # nvme_pci_alloc_dev: dma_set_mask_and_coherent(DMA_BIT_MASK(64))
        # max_hw_sectors: NVME_MAX_KB_SZ, or dma_opt_mapping_size() through dma-iommu
        ctrl.max_hw_bytes = IOMMU_DMA_OPT_MAPPING if self.dev.iommu_group is not None else NVME_MAX_TRANSFER
        ctrl.info(f"pci function {self.dev.name}")
        ret = await self._pci_enable(cpu)
        if ret:
            return self._fail(ret)
        ctrl.state = "CONNECTING"
        ret = await ctrl.init_ctrl_finish(cpu)
        if not ret:
            await self._dbbuf_dma_alloc(cpu)
            ret = await self._setup_io_queues(cpu)
        if ret:
            await self._out_disable(cpu)
            return self._fail(ret)
        if self.max_qid and self.io_queues_online():
            await self._dbbuf_set(cpu)
        else:
            ctrl.warn("IO queues not created")
        ctrl.state = "LIVE"
        await ctrl.start_ctrl(cpu)
        return 0

    def _fail(self, ret: int) -> int:
        self.error = ret
        self.ctrl.state = "DEAD"
        self.ctrl.trace("nvme_probe_failed", error=ret)
        return ret

    # -- nvme_pci_enable ---------------------------------------------------------------------------------
    async def _pci_enable(self, cpu: int) -> int:
        self.ctrl.trace("nvme_pci_enable")
        await self._cfg.update_command(set_bits=PCI_COMMAND_MEMORY)  # pci_enable_device_mem
        await self._cfg.update_command(clear_bits=PCI_COMMAND_INTX_DISABLE)  # do_pci_enable_device
        self._pci_enabled = True
        await self._cfg.update_command(set_bits=PCI_COMMAND_MASTER)  # pci_set_master
        if await self.reg_read32(REG_CSTS) == 0xFFFF_FFFF:
            await self._pci_disable_device()
            return -ENODEV
        if await self.msix.alloc_irq_vectors(1) < 1:
            await self._pci_disable_device()
            return -ENODEV
        self.ctrl.cap = await self.reg_read64(REG_CAP)
        cap = cap_fields(self.ctrl.cap)
        self.q_depth = min(cap["mqes"] + 1, IO_QUEUE_DEPTH)
        self.db_stride = 1 << cap["dstrd"]
        await self.reg_read32(REG_CMBSZ)  # nvme_map_cmb: CAP.CMBS is not used, CMBSZ reads 0 -> no CMB
        ret = await self._configure_admin_queue(cpu)
        if ret:
            await self._pci_free_irq_vectors()
            await self._pci_disable_device()
        return ret

    async def _pci_disable_device(self) -> None:
        """``pci_disable_device``: clear Bus Master Enable."""
        if self._pci_enabled:
            self._pci_enabled = False
            await self._cfg.update_command(clear_bits=PCI_COMMAND_MASTER)

    async def _configure_admin_queue(self, cpu: int) -> int:
        ctrl = self.ctrl
        ctrl.trace("nvme_pci_configure_admin_queue")
        ctrl.vs = await self.reg_read32(REG_VS)
        if ctrl.vs >= 0x00010100 and cap_fields(ctrl.cap)["nssrs"]:  # dev->subsystem: clear a stale NSSRO
            if await self.reg_read32(REG_CSTS) & CSTS_NSSRO:
                await self.reg_write32(REG_CSTS, CSTS_NSSRO)
        ret = await ctrl.disable_ctrl(shutdown=False)
        if ret:
            return ret
        try:
            admin = await self._alloc_queue(cpu, 0, NVME_AQ_DEPTH, NVME_AQ_MQ_TAG_DEPTH)
        except DmaMappingError:
            return -ENOMEM
        aqa = (NVME_AQ_DEPTH - 1) | (NVME_AQ_DEPTH - 1) << 16
        await self.reg_write32(REG_AQA, aqa)
        await self._lo_hi_writeq(REG_ASQ, admin.sq.iova)
        await self._lo_hi_writeq(REG_ACQ, admin.cq.iova)
        ret = await ctrl.enable_ctrl()
        if ret:
            return ret
        self._init_queue(admin)
        admin.irq_cpu = self.admin_irq_cpu
        return await self._request_irq(admin, 0)

    # -- queues -----------------------------------------------------------------------------------------------
    async def _alloc_queue(self, cpu: int, qid: int, depth: int, tag_depth: int) -> NvmeQueue:
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
        q = NvmeQueue(qid, depth, Coherent(cq_size, cq_iova, tuple(cq_pages)),
                      Coherent(sq_size, sq_iova, tuple(sq_pages)), tag_depth, f"{self.name}q{qid}",
                      direct=self.kernel.config.detail == "fast")
        self.queues.append(q)
        return q

    def _init_queue(self, q: NvmeQueue) -> None:
        """``nvme_init_queue``: empty rings, phase 1, a zeroed CQ, the shadow doorbells (I/O queues)."""
        q.reset_rings(self._mem)
        if self.dbbuf is not None and q.qid:
            dbs, eis = self.dbbuf
            sq_off, cq_off = q.qid * 2 * self.db_stride * 4, (q.qid * 2 + 1) * self.db_stride * 4
            q.dbbuf = (dbs.paddr(sq_off), dbs.paddr(cq_off), eis.paddr(sq_off), eis.paddr(cq_off))
        q.online = True

    # -- interrupts (queue_request_irq, nvme_irq) ------------------------------------------------------------
    async def _pci_free_irq_vectors(self) -> None:
        """``pci_free_irq_vectors``: free the handlers, then disable MSI-X."""
        if not self.msix.nvec:
            return
        for entry in range(self.msix.nvec):
            if entry in self.msix.vectors:
                await self._free_irq(entry)
        await self.msix.disable()

    # -- DBBUF, I/O queues --------------------------------------------------------------------------------
    async def _dbbuf_dma_alloc(self, cpu: int) -> None:
        """``nvme_dbbuf_dma_alloc``: two coherent buffers of nr_allocated_queues x 8 x stride bytes."""
        assert self.ctrl.id_ctrl is not None
        if not self.ctrl.id_ctrl.oacs & NVME_CTRL_OACS_DBBUF_SUPP:
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
        self.dbbuf = (Coherent(size, dbs[0], tuple(dbs[1])), Coherent(size, eis[0], tuple(eis[1])))

    async def _dbbuf_set(self, cpu: int) -> None:
        """``nvme_dbbuf_set``: Doorbell Buffer Config; on failure the shadow doorbells are dropped."""
        if self.dbbuf is None:
            return
        dbs, eis = self.dbbuf
        status, _ = await self.ctrl.submit_sync_cmd(cpu, ADMIN_DBBUF_CONFIG, prp1=dbs.iova, prp2=eis.iova)
        if status:
            self.ctrl.warn("unable to set dbbuf")
            for q in self.queues[1:]:
                q.dbbuf = None
            for buf in (dbs, eis):
                await buf.free(self.dma, cpu)
            self.dbbuf = None

    async def _setup_io_queues(self, cpu: int) -> int:
        """``nvme_setup_io_queues``: queue count, IRQ vectors, queues; retried with fewer queues if creation fails."""
        self.ctrl.trace("nvme_setup_io_queues")
        nr = await self.ctrl.set_queue_count(cpu, self.kernel.ncpus + WRITE_QUEUES + POLL_QUEUES)
        if nr < 0:
            return nr
        if not nr:
            return 0
        admin = self.queues[0]
        for _ in range(nr):  # every pass creates fewer queues: bounded
            await self._free_irq(admin.msix_entry)
            await self._pci_free_irq_vectors()
            nvecs = await self.msix.alloc_irq_vectors(1 + nr - POLL_QUEUES)
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
                self.ctrl.info(f"{default}/{read}/{poll} default/read/poll queues")
                return 0
            nr = online
            await self._delete_io_queues(cpu)
        return 0

    async def _create_io_queues(self, cpu: int, groups: list[list[int]]) -> None:
        """``nvme_create_io_queues``: allocate every pair first, then Create CQ/SQ in qid order."""
        for qid in range(1, self.max_qid + 1):
            await self._alloc_queue(cpu, qid, self.q_depth, self.q_depth - 1)
        submit = self.ctrl.submit_sync_cmd
        for qid in range(1, self.max_qid + 1):
            q = self.queues[qid]
            if q.online:
                continue
            vector = 0 if self.num_vecs == 1 else qid
            q.irq_cpu = groups[min(qid, len(groups)) - 1][0] if self.num_vecs > 1 else self.admin_irq_cpu
            self.ctrl.trace("nvme_create_queue", qid=qid, vector=vector, cpu=q.irq_cpu)
            status, _ = await submit(cpu, ADMIN_CREATE_CQ, prp1=q.cq.iova, cdw10=(q.depth - 1) << 16 | qid,
                                     cdw11=vector << 16 | 0x3)
            if status:
                break
            status, _ = await submit(cpu, ADMIN_CREATE_SQ, prp1=q.sq.iova, cdw10=(q.depth - 1) << 16 | qid,
                                     cdw11=qid << 16 | 0x1)
            if status:
                await submit(cpu, ADMIN_DELETE_CQ, cdw10=qid)
                break
            self._init_queue(q)
            if await self._request_irq(q, vector):
                break

    async def _delete_io_queues(self, cpu: int) -> None:
        """``nvme_delete_io_queues``: Delete SQ for every online I/O queue, then Delete CQ."""
        online = [q for q in self.queues[1:] if q.online]
        for opcode in (ADMIN_DELETE_SQ, ADMIN_DELETE_CQ):
            for q in reversed(online):
                await self.ctrl.submit_sync_cmd(cpu, opcode, cdw10=q.qid)
        for q in online:
            q.online = False
            if q.msix_entry in self._entry_queues and q in self._entry_queues[q.msix_entry]:
                self._entry_queues[q.msix_entry].remove(q)

    # -- teardown ----------------------------------------------------------------------------------------------
    async def _dev_disable(self, cpu: int, shutdown: bool) -> None:
        """``nvme_dev_disable``: delete the I/O queues and stop a live controller, free the IRQs, cancel."""
        self.ctrl.trace("nvme_dev_disable", shutdown=shutdown)
        self._disabling = True
        if self._pci_enabled:
            csts = await self.reg_read32(REG_CSTS)
            if csts & CSTS_RDY and not csts & CSTS_CFS and self.queues:  # not nvme_pci_ctrl_is_dead
                await self._delete_io_queues(cpu)
                await self.ctrl.disable_ctrl(shutdown)
        for q in self.queues:
            q.online = False
        await self._pci_free_irq_vectors()
        await self._pci_disable_device()
        await self._cancel_all(cpu)
        self._disabling = False

    async def _out_disable(self, cpu: int) -> None:
        """``nvme_probe``'s out_disable: disable, then free the queues and the DBBUF pages."""
        self.ctrl.state = "DELETING"
        await self._dev_disable(cpu, shutdown=True)
        for q in reversed(self.queues):
            await q.sq.free(self.dma, cpu)
            await q.cq.free(self.dma, cpu)
        self.queues.clear()
        if self.dbbuf is not None:
            for buf in self.dbbuf:
                await buf.free(self.dma, cpu)
            self.dbbuf = None
