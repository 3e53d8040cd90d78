"""The NVMe PCI driver's queue path: Linux 6.7 drivers/nvme/host/pci.c from doorbell to completion.

``NvmePciTransport`` is the half of ``struct nvme_dev`` that moves commands once the queues
exist, and the ``NvmeTransport`` the core (``NvmeCtrl``) drives:

* register access (``readl`` / ``writel`` / ``lo_hi_readq`` on BAR0) and which queue serves
  whom (the admin queue, the per-CPU I/O queue of ``blk_mq_map_queues``);
* doorbells, with the shadow doorbell buffer when the controller has one
  (``nvme_write_sq_db``, ``nvme_ring_cq_doorbell``, ``nvme_dbbuf_update_and_check_event``);
* interrupts: ``queue_request_irq`` / ``pci_free_irq`` per MSI-X entry and the handler that
  runs ``nvme_irq`` on the queue's CPU (``nvme_poll_cq``, ``nvme_handle_cqe``,
  ``nvme_pci_complete_rq`` with the unmap on the completing CPU);
* submission: ``blk_execute_rq`` -> ``nvme_queue_rq`` (a blk-mq tag, ``nvme_map_data``, the SQE
  copied under the SQ lock, the tail doorbell), ``nvme_pci_submit_async_event``;
* ``nvme_timeout``: poll for a missed interrupt, cancel during teardown, disable a connecting
  controller, reset after an admin or second timeout, else send an Abort.

``NvmeDriver`` (``_nvme_pci``) adds probe, queue creation and teardown; it sets every
attribute declared below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sim import Event, Simulator, sleep

from .._nvme_wire import (
    ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, DOORBELL_BASE, IO_OPCODE_NAMES, REG_CSTS, CompletionEntry, SubmissionEntry,
)
from ._device import GuestDevice
from ._dma_iommu import DirectDma, DmaMappingError
from .._errno import ENOMEM
from ._nvme_core import ADMIN_OPCODE_STR, BLK_OPS, NVME_SC_HOST_ABORTED_CMD, NvmeCtrl, kernel_hex
from ._nvme_msix import MsixVectors
from ._nvme_prp import map_data, unmap_data
from ._nvme_queue import DmaPool, NvmeDma, NvmeQueue, Request
from ._printk import LOGLEVEL_ERR

if TYPE_CHECKING:
    from .._memory import GuestMemory
    from .._seams import CpuBus
    from ._kernel import GuestKernel

#: the Asynchronous Event Request's command id (NVME_AQ_BLK_MQ_DEPTH), no generation bits
NVME_AER_CID = 31


def dbbuf_need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """``nvme_dbbuf_need_event``: must the MMIO doorbell be written after the shadow update?"""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old) & 0xFFFF


class NvmePciTransport:
    """Registers, doorbells, interrupts, submission, completion and timeouts of one ``nvme_dev``."""

    kernel: GuestKernel
    sim: Simulator
    dev: GuestDevice
    name: str
    ctrl: NvmeCtrl
    msix: MsixVectors
    _bus: CpuBus
    _mem: GuestMemory
    _bar: int
    db_stride: int
    queues: list[NvmeQueue]
    _cpu_queue: list[int]
    _pools: dict[int, DmaPool]
    _entry_queues: dict[int, list[NvmeQueue]]
    #: set while ``nvme_dev_disable`` runs: a command of the teardown that times out is cancelled
    _disabling: bool

    async def _dev_disable(self, cpu: int, shutdown: bool) -> None:
        """``nvme_dev_disable`` (the driver's teardown, which a timeout may trigger)."""
        raise NotImplementedError

    @property
    def dma(self) -> NvmeDma:
        if self.dev.dma is None:
            self.dev.dma = DirectDma(self.kernel, self.dev)
        dma: NvmeDma = self.dev.dma
        return dma

    # -- register access (the NvmeTransport the core uses) -------------------------------------------------
    async def reg_read32(self, off: int) -> int:
        return await self._bus.mmio_read(self._bar + off, 4)

    async def reg_write32(self, off: int, value: int) -> None:
        await self._bus.mmio_write(self._bar + off, 4, value & 0xFFFF_FFFF)

    async def reg_read64(self, off: int) -> int:
        """``lo_hi_readq``."""
        lo = await self.reg_read32(off)
        return lo | await self.reg_read32(off + 4) << 32

    async def _lo_hi_writeq(self, off: int, value: int) -> None:
        await self.reg_write32(off, value)
        await self.reg_write32(off + 4, value >> 32)

    def admin_queue(self) -> NvmeQueue | None:
        return self.queues[0] if self.queues and self.queues[0].online else None

    def io_queue(self, cpu: int) -> NvmeQueue | None:
        if not self._cpu_queue or not self.queues[self._cpu_queue[cpu]].online:
            return None
        return self.queues[self._cpu_queue[cpu]]

    def io_queues_online(self) -> bool:
        return any(q.online for q in self.queues[1:])


    # -- doorbells ------------------------------------------------------------------------------------
    def _sq_db(self, q: NvmeQueue) -> int:
        return DOORBELL_BASE + q.qid * 2 * self.db_stride * 4

    def _dbbuf_update_and_check_event(self, value: int, db: int, ei: int) -> bool:
        """``nvme_dbbuf_update_and_check_event``: write the shadow doorbell, then ask the event index."""
        old = self._mem.read_u32(db)
        self._mem.write_u32(db, value)
        return dbbuf_need_event(self._mem.read_u32(ei) & 0xFFFF, value, old & 0xFFFF)

    async def _write_sq_db(self, q: NvmeQueue) -> None:
        if q.dbbuf is None or self._dbbuf_update_and_check_event(q.sq_tail, q.dbbuf[0], q.dbbuf[2]):
            await self.reg_write32(self._sq_db(q), q.sq_tail)

    async def _ring_cq_doorbell(self, q: NvmeQueue) -> None:
        if q.dbbuf is None or self._dbbuf_update_and_check_event(q.cq_head, q.dbbuf[1], q.dbbuf[3]):
            await self.reg_write32(self._sq_db(q) + self.db_stride * 4, q.cq_head)

    # -- interrupts (queue_request_irq, pci_free_irq, the MSI-X handler) -------------------------------
    async def _request_irq(self, q: NvmeQueue, entry: int) -> int:
        """``queue_request_irq``: the queue's handler on MSI-X ``entry`` (activated and unmasked on first use)."""
        q.msix_entry = entry
        self._entry_queues.setdefault(entry, []).append(q)
        if entry in self.msix.vectors:
            return 0  # a shared vector (one MSI-X vector for every queue)
        return await self.msix.request_irq(entry, q.irq_cpu, self._irq_handler(entry), q.qid)

    async def _free_irq(self, entry: int) -> None:
        """``pci_free_irq``: mask the entry and drop the handler."""
        await self.msix.free_irq(entry)
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
    async def _nvme_irq(self, q: NvmeQueue) -> None:
        """The hard IRQ on the queue's CPU: consume CQEs, ring the CQ head, then complete the requests there."""
        while q.irq_pending:
            q.irq_pending = False
            found, done = self._poll_cq(q)
            if self.sim.tracing:
                self.ctrl.trace("nvme_irq", queue=q.qid, cpu=q.irq_cpu, found=found)
            if found:
                await self._ring_cq_doorbell(q)
            for req, status, result in done:
                async with self.kernel.on_cpu(q.irq_cpu, irq=True):
                    if q.qid:
                        await sleep(self.kernel.cost.guest_io_complete_ps)
                    await self._end_request(q, req, status, result, q.irq_cpu)
        q.irq_running = False

    def _poll_cq(self, q: NvmeQueue) -> tuple[int, list[tuple[Request, int, int]]]:
        found = 0
        done: list[tuple[Request, int, int]] = []
        for _ in range(q.depth):  # at most one pass over the ring per call
            cqe = q.next_cqe(self._mem)
            if cqe is None:
                break
            found += 1
            req = self._handle_cqe(q, cqe)
            if req is not None:
                done.append((req, cqe.status, cqe.result))
        return found, done

    def _handle_cqe(self, q: NvmeQueue, cqe: CompletionEntry) -> Request | None:
        cid = cqe.cid
        if q.qid == 0 and cid & 0xFFF >= NVME_AER_CID:
            self.ctrl.complete_async_event(cqe.status, cqe.result)
            return None
        tag, gen = cid & 0xFFF, cid >> 12
        if tag >= q.tag_depth or not q.used[tag]:
            self.kernel.printk.log(self.sim.now, f"could not locate request for tag {kernel_hex(tag)}", LOGLEVEL_ERR)
            req = None
        elif q.genctr[tag] & 0xF != gen:
            self.ctrl.err(f"request {kernel_hex(tag)} genctr mismatch (got {kernel_hex(gen)} expected "
                          f"{kernel_hex(q.genctr[tag] & 0xF)})")
            req = None
        else:
            req = q.inflight.get(tag)
        if req is None:
            self.ctrl.warn(f"invalid id {cid} completed on queue {cqe.sq_id}")
        return req

    async def _end_request(self, q: NvmeQueue, req: Request, status: int, result: int, cpu: int) -> None:
        """``nvme_pci_complete_rq``: unmap on the completing CPU, then end the request and free its tag."""
        if req.finished:
            return
        req.finished = True
        if req.mapping is not None:
            await unmap_data(self.dma, cpu, req.mapping)
        req.status, req.result = status, result
        q.inflight.pop(req.tag, None)
        q.genctr[req.tag] += 1
        q.free_tag(req.tag)
        if self.sim.tracing:
            self.ctrl.trace("nvme_complete_rq", queue=q.qid, cid=req.cid, cpu=cpu, status=status)
        req.done.set()

    # -- submission (nvme_queue_rq) ----------------------------------------------------------------------------
    async def execute_rq(self, q: NvmeQueue, cpu: int, opcode: int, fields: dict[str, int],
                         data: tuple[list[tuple[int, int]], int] | None, timeout: int) -> Request:
        """``blk_execute_rq``: ``nvme_queue_rq``, then wait for the completion (``nvme_timeout`` on expiry)."""
        req = await self._queue_rq(q, cpu, opcode, fields, data)
        if not req.finished:
            await q.wait(self.sim, req, timeout, self._timeout)
        return req

    async def _queue_rq(self, q: NvmeQueue, cpu: int, opcode: int, fields: dict[str, int],
                        data: tuple[list[tuple[int, int]], int] | None) -> Request:
        """Take a tag, map the data, copy the SQE into the ring and write the tail doorbell."""
        tag = await q.get_tag(cpu)
        cid = (q.genctr[tag] & 0xF) << 12 | tag
        req = Request(q.qid, tag, cid, opcode, cpu, Event(f"{q.label}.cid{cid}"))
        sqe = dict(fields)
        async with self.kernel.on_cpu(cpu):  # from the block layer to the doorbell, the CPU is busy
            if q.qid:
                await sleep(self.kernel.cost.guest_io_submit_ps)
            if data is not None:
                segments, direction = data
                sgls = self.ctrl.id_ctrl is not None and bool(self.ctrl.id_ctrl.sgls & 0x3)
                try:
                    req.mapping = await map_data(self.dma, self._mem, self._pools, cpu, segments, direction, sqe,
                                                 io_queue=bool(q.qid), ctrl_sgls=sgls)
                except DmaMappingError:
                    q.free_tag(tag)
                    req.status, req.finished = -ENOMEM, True
                    return req
            q.inflight[tag] = req
            async with q.lock:
                q.copy_cmd(self._mem, SubmissionEntry(opcode=opcode, cid=cid, **sqe))
                if self.sim.tracing:
                    self.ctrl.trace("nvme_queue_rq", queue=q.qid, cid=cid, opcode=opcode, cpu=cpu)
                await self._write_sq_db(q)
        return req

    async def submit_async_event(self) -> None:
        """``nvme_pci_submit_async_event``: the AER SQE with CID 31, written straight into the admin ring."""
        q = self.queues[0]
        async with q.lock:
            q.copy_cmd(self._mem, SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=NVME_AER_CID))
            await self._write_sq_db(q)

    # -- timeouts (nvme_timeout) -------------------------------------------------------------------------------
    async def _timeout(self, q: NvmeQueue, req: Request) -> bool:
        """``nvme_timeout``; True when the request is finished (polled or cancelled)."""
        ctrl = self.ctrl
        csts = await self.reg_read32(REG_CSTS)
        ctrl.trace("nvme_timeout", queue=q.qid, cid=req.cid, csts=csts, state=ctrl.state)
        found, done = self._poll_cq(q)  # did we miss an interrupt?
        if found:
            await self._ring_cq_doorbell(q)
        for r, status, result in done:
            await self._end_request(q, r, status, result, q.irq_cpu)
        if req.finished:
            ctrl.warn(f"I/O tag {req.tag} ({req.cid:04x}) QID {q.qid} timeout, completion polled")
            return True
        if self._disabling:  # a command of the teardown itself: cancelled, as nvme_dev_disable's waits give up
            await self._end_request(q, req, NVME_SC_HOST_ABORTED_CMD, 0, req.cpu)
            return True
        if ctrl.state == "CONNECTING":
            ctrl.state = "DELETING"
            ctrl.warn(f"I/O tag {req.tag} ({req.cid:04x}) QID {q.qid} timeout, disable controller")
            await self._dev_disable(req.cpu, shutdown=True)
            return True
        if q.qid == 0 or req.aborted:
            name = ADMIN_OPCODE_STR.get(req.opcode, "Unknown") if q.qid == 0 else IO_OPCODE_NAMES.get(req.opcode,
                                                                                                        "Unknown")
            ctrl.warn(f"I/O tag {req.tag} ({req.cid:04x}) opcode {kernel_hex(req.opcode)} ({name}) QID {q.qid} "
                      "timeout, reset controller")
            await self._dev_disable(req.cpu, shutdown=False)  # the reset work that follows is not modelled
            return True
        req.aborted = True
        op, op_num = BLK_OPS.get(req.opcode, ("DRV_IN", 34))
        size = req.mapping.size if req.mapping is not None else 0
        ctrl.warn(f"I/O tag {req.tag} ({req.cid:04x}) opcode {kernel_hex(req.opcode)} "
                  f"({IO_OPCODE_NAMES.get(req.opcode, 'Unknown')}) QID {q.qid} timeout, aborting "
                  f"req_op:{op}({op_num}) size:{size}")
        self.sim.spawn(self._abort(req), name=f"{self.name}.abort")
        return False

    async def _abort(self, victim: Request) -> None:
        """The Abort command ``nvme_timeout`` sends without waiting (``abort_endio`` logs its status)."""
        status, _ = await self.ctrl.submit_sync_cmd(victim.cpu, ADMIN_ABORT, cdw10=victim.qid | victim.cid << 16)
        self.ctrl.warn(f"Abort status: {kernel_hex(status & 0xFFFF_FFFF)}")

    async def _cancel_all(self, cpu: int) -> None:
        """``nvme_cancel_tagset`` / ``nvme_cancel_admin_tagset``: end every request with HOST_ABORTED_CMD."""
        for q in self.queues:
            for tag in sorted(q.inflight):
                req = q.inflight.get(tag)
                if req is not None:
                    await self._end_request(q, req, NVME_SC_HOST_ABORTED_CMD, 0, cpu)
