"""One NVMe queue pair as the guest driver keeps it: Linux 6.7 ``struct nvme_queue`` plus its blk-mq hctx.

* ``NvmeQueue``: the SQ and CQ rings in coherent memory, the SQ tail, CQ head and phase
  (``nvme_sq_copy_cmd``, ``nvme_cqe_pending`` / ``nvme_update_cq_head`` of
  drivers/nvme/host/pci.c), the shadow doorbells, the MSI-X entry and IRQ CPU;
* its blk-mq tag set (block/blk-mq-tag.c ``blk_mq_get_tag`` over an sbitmap whose per-CPU hint
  starts at 0, where Linux seeds it randomly) and the per-queue timeout timer of
  block/blk-timeout.c (``blk_add_timer``: requests carry their deadline, one timer watches the
  earliest, ``blk_mq_timeout_work`` expires what is due);
* ``Request`` (``struct request`` + ``nvme_iod``) and ``Mapping`` (what ``nvme_unmap_data``
  undoes), ``Coherent`` (a ``dma_alloc_coherent`` buffer) and ``DmaPool`` (mm/dmapool.c).

The queue knows guest memory only through the two calls that touch its rings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import attrs

from sim import Event, First, Lock, Simulator

from .._nvme_wire import CompletionEntry, SubmissionEntry
from ._kmem_consts import PAGE_SIZE

if TYPE_CHECKING:
    from .._memory import GuestMemory


class NvmeDma(Protocol):
    """The DMA API as the NVMe driver calls it (dma-iommu's ``DmaApi`` or dma-direct's ``DirectDma``)."""

    async def map_page(self, cpu: int, paddr: int, size: int, direction: int) -> int: ...

    async def unmap_page(self, cpu: int, iova: int, size: int, direction: int) -> None: ...

    async def map_sg(self, cpu: int, segments: list[tuple[int, int]], direction: int) -> list[int]: ...

    async def unmap_sg(self, cpu: int, iovas: list[int], segments: list[tuple[int, int]],
                       direction: int) -> None: ...

    async def alloc_coherent(self, cpu: int, size: int) -> tuple[int, list[int]]: ...

    async def free_coherent(self, cpu: int, size: int, iova: int, pages: list[int]) -> None: ...


@attrs.frozen
class Coherent:
    """A ``dma_alloc_coherent`` buffer: its DMA address and physical pages (4 KiB, in IOVA order)."""

    size: int
    iova: int
    pages: tuple[int, ...]

    def paddr(self, offset: int) -> int:
        return self.pages[offset >> 12] + (offset & (PAGE_SIZE - 1))

    async def free(self, dma: NvmeDma, cpu: int) -> None:
        """``dma_free_coherent``."""
        await dma.free_coherent(cpu, self.size, self.iova, list(self.pages))


class DmaPool:
    """``dma_pool``: blocks carved from coherent pages allocated on first need, freed blocks reused LIFO."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.pages: list[Coherent] = []
        self._free: list[tuple[int, int]] = []  # (dma, paddr), popped from the end

    def __repr__(self) -> str:
        return f"<dma_pool {self.name!r} {self.size} B, {len(self.pages)} pages>"

    async def alloc(self, cpu: int, dma: NvmeDma) -> tuple[int, int]:
        if not self._free:
            iova, pages = await dma.alloc_coherent(cpu, PAGE_SIZE)
            page = Coherent(PAGE_SIZE, iova, tuple(pages))
            self.pages.append(page)
            self._free += [(iova + off, page.paddr(off)) for off in range(PAGE_SIZE - self.size, -1, -self.size)]
        return self._free.pop()

    def free(self, dma_addr: int, paddr: int) -> None:
        self._free.append((dma_addr, paddr))


@attrs.define(eq=False)
class Mapping:
    """What the completion path unmaps: a page mapping or a one-segment scatterlist, plus pool blocks."""

    kind: str  # "page" or "sg"
    dma: int
    paddr: int
    size: int
    direction: int
    pool_blocks: list[tuple[DmaPool, int, int]] = attrs.Factory(list)
    #: a multi-segment scatterlist: each segment's DMA address and its (paddr, length)
    sg_dmas: list[int] = attrs.Factory(list)
    sg_segments: list[tuple[int, int]] = attrs.Factory(list)


@attrs.define(eq=False)
class Request:
    """One blk-mq request on a queue: its tag and command id, the mapping, the outcome."""

    qid: int
    tag: int
    cid: int
    opcode: int
    cpu: int
    done: Event
    mapping: Mapping | None = None
    status: int | None = None  # 15-bit NVMe status, or a negative errno (cancelled / not submitted)
    result: int = 0
    finished: bool = False
    aborted: bool = False
    #: ``rq->deadline`` and the event the queue's timeout timer sets when it passes
    deadline: int = 0
    expired: Event | None = None


class NvmeQueue:
    """``struct nvme_queue`` with its blk-mq tags: rings in coherent memory, head/tail/phase, IRQ."""

    def __init__(self, qid: int, depth: int, cq: Coherent, sq: Coherent, tag_depth: int, label: str, *,
                 direct: bool = False) -> None:
        self.qid = qid
        #: the transaction level (``MachineConfig.detail`` fast): entries are handed over as objects at
        #: their guest-physical addresses (``GuestMemory.direct_entries``, models/_nvme_dma.py)
        self.direct = direct
        self.depth = depth
        self.cq = cq
        self.sq = sq
        #: "nvme0q1": the prefix of the names of this queue's requests and timers
        self.label = label
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
        self.inflight: dict[int, Request] = {}
        #: requests whose completion is awaited (by tag), and the deadline the queue's timer is armed for
        self.waiting: dict[int, Request] = {}
        self.timer_deadline: int | None = None
        self.hints: dict[int, int] = {}
        self.tag_freed = Event(f"nvmeq{qid}.tag_freed")
        #: shadow doorbells (sq db, cq db, sq event index, cq event index) as guest-physical addresses
        self.dbbuf: tuple[int, int, int, int] | None = None
        self.irq_pending = False
        self.irq_running = False

    def __repr__(self) -> str:
        return f"<NvmeQueue {self.label} depth={self.depth} online={self.online}>"

    # -- the rings (pci.c) -----------------------------------------------------------------------------
    def reset_rings(self, mem: GuestMemory) -> None:
        """The ring half of ``nvme_init_queue``: empty rings, phase 1, a zeroed CQ."""
        self.sq_tail = self.cq_head = 0
        self.cq_phase = 1
        for page in self.cq.pages:
            mem.fill(page, PAGE_SIZE)
        if self.direct:  # no entry object survives the reset of either ring
            for i in range(self.depth):
                mem.direct_entries.pop(self.cq.paddr(i * 16), None)
                mem.direct_entries.pop(self.sq.paddr(i * 64), None)

    def copy_cmd(self, mem: GuestMemory, entry: SubmissionEntry) -> None:
        """``nvme_sq_copy_cmd``: the SQE at the tail, the tail advanced (the doorbell is the caller's)."""
        addr = self.sq.paddr(self.sq_tail * 64)
        if self.direct:
            mem.direct_entries[addr] = entry
        else:
            mem.write(addr, entry.pack())
        self.sq_tail = (self.sq_tail + 1) % self.depth

    def next_cqe(self, mem: GuestMemory) -> CompletionEntry | None:
        """``nvme_cqe_pending`` then ``nvme_update_cq_head``: the CQE at the head if its phase is current."""
        addr = self.cq.paddr(self.cq_head * 16)
        posted: CompletionEntry | None = mem.direct_entries.get(addr) if self.direct else None
        if posted is not None:
            if posted.phase != self.cq_phase:
                return None
            cqe = posted
        else:
            if mem.read_u16(addr + 14) & 1 != self.cq_phase:
                return None
            cqe = CompletionEntry.unpack(mem.read(addr, 16))
        self.cq_head += 1
        if self.cq_head == self.depth:
            self.cq_head = 0
            self.cq_phase ^= 1
        return cqe

    # -- blk-mq tags ---------------------------------------------------------------------------------------
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

    async def get_tag(self, cpu: int) -> int:
        """``blk_mq_get_tag``: sleep until a tag is free (each wake-up follows a freed tag)."""
        while True:
            tag = self.alloc_tag(cpu)
            if tag is not None:
                return tag
            await self.tag_freed.wait()

    # -- blk-mq timeouts -----------------------------------------------------------------------------------
    async def wait(self, sim: Simulator, req: Request, timeout: int,
                   on_timeout: Callable[[NvmeQueue, Request], Awaitable[bool]]) -> None:
        """Wait for the completion; on ``timeout``, run ``on_timeout`` (``nvme_timeout``) at most
        twice (abort, then reset); it returns True when the request is finished.

        As blk-mq (``blk_add_timer``): the request carries its deadline and one timer per queue
        watches the earliest, so a completed request leaves nothing scheduled behind it (memory
        stays bounded however many requests a run completes)."""
        for _ in range(2):
            if req.finished:
                return
            req.deadline = sim.now + timeout
            req.expired = Event(f"{self.label}.cid{req.cid}.timeout")
            self.waiting[req.tag] = req
            self._arm_timer(sim, req.deadline)
            done = req.done.wait()
            fired = await First(done, req.expired.wait())
            self.waiting.pop(req.tag, None)
            if fired is done:
                return
            if await on_timeout(self, req):
                return

    def _arm_timer(self, sim: Simulator, deadline: int) -> None:
        """``mod_timer(&q->timeout)`` when it is idle or due later than ``deadline``."""
        if self.timer_deadline is not None and self.timer_deadline <= deadline:
            return
        self.timer_deadline = deadline
        sim.call_at(deadline, lambda: self._timeout_work(sim, deadline))

    def _timeout_work(self, sim: Simulator, when: int) -> None:
        """``blk_mq_timeout_work``: expire the waiting requests whose deadline passed, re-arm for the next."""
        if self.timer_deadline != when:
            return  # re-armed for an earlier deadline meanwhile
        self.timer_deadline = None
        now = sim.now
        for tag in sorted(self.waiting):
            req = self.waiting[tag]
            if req.deadline <= now and req.expired is not None:
                del self.waiting[tag]
                req.expired.set()
        if self.waiting:
            self._arm_timer(sim, min(r.deadline for r in self.waiting.values()))
