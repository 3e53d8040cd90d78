"""The NVMe controller's queue engine: its state, doorbells, SQ fetch, CQ post, command tasks.

Models NVMe 1.4 section 4.1 (submission and completion queues in host memory, head
and tail doorbells, the phase tag), sections 3.1.24-25 (doorbell registers), 5.7 of
NVMe 1.3 (shadow doorbells / event indexes after Doorbell Buffer Config) and the
command lifetime, after QEMU hw/nvme/ctrl.c: nvme_process_db (doorbell checks, Error
events for bad doorbell writes), nvme_process_sq (fetch; a failed fetch sets CFS),
nvme_post_cqes (a full CQ holds completions; one MSI-X per posted batch),
nvme_process_aers, nvme_check_mdts.

Arbitration is round robin across SQs in qid order, one command per SQ per round;
every fetched command runs in its own sim task (``_run``), which charges one PCIe
round trip for the SQ entry and hands the command to ``_execute`` -- the admin and
NVM command sets (models/_nvme_admin.py, models/_nvme_io.py) layered on this class.
The data movement every command set shares is here too: mapping the data pointer
(models/_nvme_prp.py), booking the one data link, moving the bytes through the DMA
engine (models/_nvme_dma.py).  A command whose controller was reset, or which was
aborted, ends in ``Abandoned`` and posts nothing.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable

import attrs

from sim import PS_PER_S, Event, Queue, Simulator, sleep

from ._cost import CostModel
from ._dma import DmaFault
from ._nvme_wire import (
    ADMIN_OPCODE_NAMES, AER_INFO_ERR_INVALID_DB_REGISTER, AER_INFO_ERR_INVALID_DB_VALUE, AER_TYPE_ERROR,
    CQE_SIZE, CQES_LOG2, CSTS_CFS, DATA_TRANSFER_ERROR, DNR, DOORBELL_BASE, FEAT_ARBITRATION, FEAT_VOLATILE_WC,
    INVALID_FIELD, IO_OPCODE_NAMES, LOG_ERROR, PSDT_PRP, SQES_LOG2, SQE_SIZE, SUCCESS, CompletionEntry,
    SubmissionEntry, aer_result,
)
from ._nvme_dma import CommandError, DirectEntries, NvmeDma
from ._nvme_ident import NvmeIdentity, identity_named
from ._nvme_namespace import Namespace
from ._nvme_prp import walk_prp, walk_sgl
from ._seams import DmaPort


@attrs.frozen
class NvmeStats:
    """Counters of one controller at one instant (``NvmeController.statistics()``)."""

    #: commands completed (their completion queued), and of those the ones with a non-zero status
    commands_completed: int
    commands_failed: int
    #: I/O Read and Write commands serviced (a Compare is neither)
    host_read_commands: int
    host_write_commands: int
    #: data bytes the controller wrote to / read from host memory
    bytes_to_host: int
    bytes_from_host: int
    #: DMA accesses the port refused (see NvmeDma.fault)
    dma_faults: int
    #: MSI-X messages sent
    interrupts: int


class Abandoned(Exception):
    """The command's controller was reset, or its SQ deleted / the command aborted: post nothing."""


class Held(Exception):
    """The command stays outstanding without a completion (Asynchronous Event Request)."""


class SubmissionQueue:
    """A submission queue in guest memory (NVMe 1.4 section 4.1): ring geometry, head/tail, in-flight commands."""

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
        self.inflight: list[InflightCommand] = []
        #: (doorbell IOVA, event-index IOVA) once Doorbell Buffer Config is in effect
        self.shadow: tuple[int, int] | None = None


class CompletionQueue:
    """A completion queue in guest memory (NVMe 1.4 section 4.1): ring, phase tag, vector, unposted entries."""

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
        self.pending: collections.deque[tuple[InflightCommand, int, int]] = collections.deque()
        self.sqids: list[int] = []
        self.shadow: tuple[int, int] | None = None


class InflightCommand:
    """A fetched command: its entry, its SQ and the controller epoch it was fetched in."""

    __slots__ = ("sqe", "sq", "epoch", "aborted")

    def __init__(self, sqe: SubmissionEntry, sq: SubmissionQueue, epoch: int) -> None:
        self.sqe = sqe
        self.sq = sq
        self.epoch = epoch
        self.aborted = False


#: Set Features values a controller starts with (Arbitration burst 7, volatile write cache on)
DEFAULT_FEATURES: dict[int, int] = {FEAT_ARBITRATION: 0x7, FEAT_VOLATILE_WC: 1}


class ControllerCore:
    """The controller's state and queue engine (the BAR0 handler and command sets are layered on top).

    ``dma`` is the IOMMU-side port, ``msix(vector)`` delivers an MSI-X message through the PCI
    function, ``bus_master()`` reads the PCI command register's Bus Master Enable bit.
    Call ``bus_master_changed()`` when the guest sets it so pending work resumes.
    """

    def __init__(self, sim: Simulator, identity: str | NvmeIdentity, cost: CostModel, dma: DmaPort,
                 msix: Callable[[int], None], bus_master: Callable[[], bool], *, name: str = "nvme",
                 direct: DirectEntries | None = None) -> None:
        self.sim = sim
        self.identity = identity_named(identity) if isinstance(identity, str) else identity
        self.cost = cost
        self.dma = dma
        self.name = name
        self._trace = sim.tracer(name)
        self._msix = msix
        self._bus_master = bus_master
        self._dma_engine = NvmeDma(sim, name, dma, bus_master, direct)
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
        self._sqs: dict[int, SubmissionQueue] = {}
        self._cqs: dict[int, CompletionQueue] = {}
        self._qs_created = False
        self._aer_reqs: list[InflightCommand] = []
        self._aer_events: collections.deque[tuple[int, int, int]] = collections.deque()
        self._aer_mask = 0
        self._dbbuf: tuple[int, int] | None = None
        # features (QEMU keeps them across controller resets; so does this model)
        self._features: dict[int, int] = dict(DEFAULT_FEATURES)
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
        self._link_busy_ps = 0
        self._bw = cost.nvme_bandwidth_bytes_per_s
        self._pcie = cost.pcie_latency_ps
        # counters
        self._n = dict.fromkeys(("completed", "failed", "reads", "writes", "to_host", "from_host", "irqs"), 0)
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

    def statistics(self) -> NvmeStats:
        n = self._n
        return NvmeStats(n["completed"], n["failed"], n["reads"], n["writes"], n["to_host"], n["from_host"],
                         self._dma_engine.faults, n["irqs"])

    def link_busy_ps(self) -> int:
        """Simulated time the data link has been booked for transfers, in ps (the bandwidth ceiling's
        utilisation is its growth over a window)."""
        return self._link_busy_ps

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
        queue: SubmissionQueue | CompletionQueue | None = (self._cqs if is_cq else self._sqs).get(qid)
        if queue is None:
            self._bad_doorbell(kind, qid, value, AER_INFO_ERR_INVALID_DB_REGISTER, "no such queue")
            return
        if value >= queue.size:
            self._bad_doorbell(kind, qid, value, AER_INFO_ERR_INVALID_DB_VALUE, f"beyond queue size {queue.size}")
            return
        if self.sim.tracing:
            self._trace("doorbell", queue=f"{kind}{qid}", value=value)
        if isinstance(queue, CompletionQueue):
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
            return int(struct.unpack("<I", self._dma_engine.read(iova, 4))[0])
        except DmaFault as fault:
            self._dma_engine.fault(fault, "shadow_doorbell")
            return None

    def _write_shadow(self, iova: int, value: int) -> None:
        try:
            self._dma_engine.write(iova, struct.pack("<I", value))
        except DmaFault as fault:
            self._dma_engine.fault(fault, "shadow_doorbell")

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
        cqs = self._cqs
        for qid in sorted(cqs):
            cq = cqs[qid]
            if cq.pending or cq.shadow is not None:  # an idle CQ without shadow doorbells has nothing to do
                progressed |= self._post_cqes(cq)
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

    def _fetch_one(self, sq: SubmissionQueue) -> bool:
        addr = sq.base + (sq.head << SQES_LOG2)
        try:
            sqe = self._dma_engine.read_entry(addr, SQE_SIZE, SubmissionEntry.unpack)
        except DmaFault as fault:
            self._dma_engine.fault(fault, "sq_fetch", sqid=sq.qid, head=sq.head)
            self._fatal(f"SQ {sq.qid} entry fetch at 0x{addr:x}")
            return False
        sq.head = (sq.head + 1) % sq.size
        sq.outstanding += 1
        cmd = InflightCommand(sqe, sq, self._epoch)
        sq.inflight.append(cmd)
        if self.sim.tracing:
            names = ADMIN_OPCODE_NAMES if sq.qid == 0 else IO_OPCODE_NAMES
            self._trace("fetch", sqid=sq.qid, cid=sqe.cid, opcode=sqe.opcode,
                        name=names.get(sqe.opcode, "unknown"), nsid=sqe.nsid)
        self.sim.spawn(self._run(cmd), name=self._cmd_task_name)
        return True

    def _post_cqes(self, cq: CompletionQueue) -> bool:
        if cq.shadow is None and not cq.pending:
            return False  # nothing to post and no shadow doorbell to read or update
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
                self._dma_engine.write_entry(addr, cqe, cqe.pack, CQE_SIZE)
            except DmaFault as fault:
                self._dma_engine.fault(fault, "cq_post", cqid=cq.qid, tail=cq.tail)
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

    # -- asynchronous events (NVMe 1.4 section 5.2; posted by doorbell errors, taken by AERs) --
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

    # -- commands ------------------------------------------------------------------------------
    def _nsid_valid(self, nsid: int) -> bool:
        return 1 <= nsid <= self._id_ctrl.nn

    def _check_mdts(self, length: int) -> None:
        # MDTS is in units of CAP.MPSMIN pages; QEMU (nvme_check_mdts) scales the CC.MPS page, as here
        mdts = self._id_ctrl.mdts
        if mdts and length > self._page_size << mdts:
            raise CommandError(INVALID_FIELD | DNR)

    async def _delay(self, cmd: InflightCommand, ps: int) -> None:
        if ps:
            await sleep(ps)
        if cmd.epoch != self._epoch or cmd.aborted:
            raise Abandoned

    async def _execute(self, cmd: InflightCommand) -> tuple[int, int]:
        """Run one fetched command to its (status, DW0 result); the command sets provide it."""
        raise NotImplementedError

    async def _run(self, cmd: InflightCommand) -> None:
        try:
            await self._delay(cmd, self._pcie)  # the SQ-entry read round trip
            status, result = await self._execute(cmd)
        except CommandError as st:
            status, result = st.status, st.result
        except (Abandoned, Held):
            return
        self._complete(cmd, status, result)

    def _complete(self, cmd: InflightCommand, status: int, result: int = 0) -> None:
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
        """Walk a PRP pair / list with the CC.MPS page (models._nvme_prp.walk_prp): (segments, list reads)."""
        return walk_prp(self._dma_engine, self._page_size, prp1, prp2, length)

    def map_sgl(self, dptr: bytes, length: int) -> tuple[list[tuple[int, int]], int]:
        """Walk an SGL (models._nvme_prp.walk_sgl): (segments, segment reads)."""
        return walk_sgl(self._dma_engine, dptr, length, excess_ok=bool(self._id_ctrl.sgls & (1 << 18)))

    async def _map(self, cmd: InflightCommand, length: int) -> list[tuple[int, int]]:
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

    async def _reserve_link(self, cmd: InflightCommand, nbytes: int) -> int:
        """Book the shared data link for ``nbytes``; returns the transfer time once the slot starts."""
        now = self.sim.now
        start = max(now, self._link_free)
        duration = -(-nbytes * PS_PER_S // self._bw)
        self._link_free = start + duration
        self._link_busy_ps += duration
        await self._delay(cmd, start - now)
        return duration

    async def _to_host(self, cmd: InflightCommand, segs: list[tuple[int, int]], data: bytes) -> None:
        duration = await self._reserve_link(cmd, len(data))
        await self._delay(cmd, duration)
        pos = 0
        for iova, n in segs:
            try:
                self._dma_engine.write(iova, data[pos:pos + n])
            except DmaFault as fault:
                self._dma_engine.fault(fault, "data_write", sqid=cmd.sq.qid, cid=cmd.sqe.cid)
                if self._qemu:
                    raise CommandError(DATA_TRANSFER_ERROR) from None
                # vfio: the posted write is dropped by the host IOMMU; the command still succeeds
            pos += n
        self._n["to_host"] += len(data)
        await self._delay(cmd, self._pcie)

    async def _from_host(self, cmd: InflightCommand, segs: list[tuple[int, int]], length: int) -> bytes:
        duration = await self._reserve_link(cmd, length)
        chunks = []
        for iova, n in segs:
            try:
                chunks.append(self._dma_engine.read(iova, n))
            except DmaFault as fault:
                self._dma_engine.fault(fault, "data_read", sqid=cmd.sq.qid, cid=cmd.sqe.cid)
                raise CommandError(DATA_TRANSFER_ERROR) from None
        self._n["from_host"] += length
        await self._delay(cmd, duration + self._pcie)
        return b"".join(chunks)

    async def _c2h(self, cmd: InflightCommand, data: bytes) -> None:
        """Controller-to-host data of an admin command: map, service time, transfer."""
        segs = await self._map(cmd, len(data))
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        await self._to_host(cmd, segs, data)

    async def _h2c(self, cmd: InflightCommand, length: int) -> bytes:
        segs = await self._map(cmd, length)
        data = await self._from_host(cmd, segs, length)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return data

