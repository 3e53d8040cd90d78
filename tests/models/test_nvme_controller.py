"""NVMe controller driven by a raw host driver: Linux-like bring-up, I/O, PRP/SGL, wrap, handshakes, statuses.

``PageTableDmaPort`` (a stand-in IOMMU) and ``NvmeHostDriver`` (SQEs written into GuestMemory,
doorbells rung through mmio_write) are defined here and reused by test_nvme_faults.py and
test_nvme_random_io.py.  To run the same tests through the virtio-iommu, replace the port by
one whose dma_read/dma_write call VirtioIommu.translate(): the controller sees only those two
methods.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import pytest

from models import CostModel, GuestMemory
from models._dma import DMA_READ, DMA_WRITE, DirectDmaPort, DmaFault
from models._nvme import NvmeController
from models._nvme_data import IdentifyController, IdentifyNamespace
from models._nvme_dma import CommandError
from models._nvme_wire import (
    ABORT_REQUESTED, ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_CREATE_CQ, ADMIN_CREATE_SQ,
    ADMIN_DBBUF_CONFIG, ADMIN_DELETE_CQ, ADMIN_DELETE_SQ, ADMIN_GET_FEATURES, ADMIN_GET_LOG_PAGE,
    ADMIN_IDENTIFY, ADMIN_SECURITY_RECV, ADMIN_SET_FEATURES, CMD_SEQ_ERROR, CNS_CS_CTRL, CNS_CTRL, CNS_NS,
    CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, COMPARE_FAILURE, COMPLETION_QUEUE_INVALID, CSTS_CFS, CSTS_RDY,
    DNR, FEAT_ASYNC_EVENT, FEAT_HOST_BEHAVIOR, FEAT_NUM_QUEUES, FEAT_TIMESTAMP, INVALID_FIELD,
    INVALID_INTERRUPT_VECTOR, INVALID_LOG_PAGE, INVALID_NSID, INVALID_OPCODE, INVALID_PRP_OFFSET,
    INVALID_QUEUE_DELETION, INVALID_QUEUE_ID, INVALID_QUEUE_SIZE, IO_COMPARE, IO_DSM, IO_FLUSH, IO_READ,
    IO_WRITE, IO_WRITE_ZEROES, LBA_OUT_OF_RANGE, REG_ACQ, REG_AQA, REG_ASQ, REG_CAP, REG_CC, REG_CSTS, REG_VS,
    SGL_TYPE_DATA_BLOCK, SGL_TYPE_LAST_SEGMENT, SUCCESS, CompletionEntry, SglDescriptor, SubmissionEntry,
)
from sim import Event, ListSink, Simulator, SimTimeoutError, ms, sleep, us, with_timeout
from staging import run_task

PAGE = 4096
RW = DMA_READ | DMA_WRITE
SGL_FLAGS = 0x40  # CDW0 PSDT = 01b: SGL for data


# --------------------------------------------------------------------------------------------
# the DMA port and the host driver
# --------------------------------------------------------------------------------------------


class PageTableDmaPort:
    """IOVA -> GPA through a dict of 4 KiB pages with READ/WRITE permission bits.

    Refused accesses are recorded in ``faults`` (as the host IOMMU would log them) and raised.
    """

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.pages: dict[int, tuple[int, int]] = {}
        self.faults: list[DmaFault] = []
        self.accesses = 0

    def map(self, iova: int, gpa: int, size: int, perm: int = RW) -> None:
        for off in range(0, size, PAGE):
            self.pages[(iova + off) >> 12] = ((gpa + off) >> 12, perm)

    def unmap(self, iova: int, size: int) -> None:
        for off in range(0, size, PAGE):
            self.pages.pop((iova + off) >> 12, None)

    def _chunks(self, iova: int, size: int, access: int) -> list[tuple[int, int]]:
        out = []
        pos, end = iova, iova + size
        while pos < end:
            n = min(PAGE - (pos & 0xFFF), end - pos)
            entry = self.pages.get(pos >> 12)
            reason = "no mapping" if entry is None else None if entry[1] & access else "permission"
            if reason is not None:
                fault = DmaFault(pos, access, reason)
                self.faults.append(fault)
                raise fault
            out.append(((entry[0] << 12) | (pos & 0xFFF), n))
            pos += n
        return out

    def dma_read(self, iova: int, size: int) -> bytes:
        self.accesses += 1
        return b"".join(self.memory.dma_read(gpa, n, "nvme") for gpa, n in self._chunks(iova, size, DMA_READ))

    def dma_write(self, iova: int, data: bytes) -> None:
        self.accesses += 1
        pos = 0
        for gpa, n in self._chunks(iova, len(data), DMA_WRITE):
            self.memory.dma_write(gpa, data[pos:pos + n], "nvme")
            pos += n


class Buffer:
    """An IOVA-contiguous buffer backed by (possibly scattered) guest pages."""

    def __init__(self, memory: GuestMemory, iova: int, gpas: list[int]) -> None:
        self.memory = memory
        self.iova = iova
        self.gpas = gpas
        self.size = len(gpas) * PAGE

    def write(self, off: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, inpage = divmod(off + pos, PAGE)
            n = min(PAGE - inpage, len(data) - pos)
            self.memory.write(self.gpas[page] + inpage, data[pos:pos + n])
            pos += n

    def read(self, off: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            page, inpage = divmod(off + len(out), PAGE)
            n = min(PAGE - inpage, size - len(out))
            out += self.memory.read(self.gpas[page] + inpage, n)
        return bytes(out)


class HostQueue:
    def __init__(self, qid: int, buf: Buffer, size: int, vector: int = 0) -> None:
        self.qid = qid
        self.buf = buf
        self.size = size
        self.vector = vector
        self.tail = 0
        self.head = 0
        self.phase = 1
        self.irq = Event(f"cq{qid}.irq")


class NvmeHostDriver:
    """A raw NVMe host driver: writes SQEs into guest memory and rings doorbells with mmio_write."""

    def __init__(self, sim: Simulator, identity: str = "vfio", *, cost: CostModel | None = None,
                 scatter: bool = True, direct: bool = False) -> None:
        self.sim = sim
        self.memory = GuestMemory(512 << 20)
        self.port = PageTableDmaPort(self.memory)
        self.bus_master = True
        self.scatter = scatter
        self.direct = direct
        self.msix_log: list[tuple[int, int]] = []
        self.cost = cost or CostModel()
        port = DirectDmaPort(self.memory, "nvme", lambda: self.bus_master) if direct else self.port
        self.ctrl = NvmeController(sim, identity, self.cost, port, self._msix, lambda: self.bus_master)
        self._gpa = 0x0010_0000
        self._iova = 0x1_0000_0000  # allocated top-down below 4 GiB, as dma-iommu does
        self.sqs: dict[int, HostQueue] = {}
        self.cqs: dict[int, HostQueue] = {}
        self._cid: dict[int, int] = {}
        self._done: dict[tuple[int, int], CompletionEntry] = {}
        self._waiters: dict[tuple[int, int], Event] = {}
        self.reaped: list[CompletionEntry] = []

    # memory ---------------------------------------------------------------------------------
    def alloc(self, size: int, perm: int = RW, scatter: bool | None = None) -> Buffer:
        npages = max(1, -(-size // PAGE))
        if self.direct:  # no IOMMU: bus address = guest-physical address
            self._gpa += npages * PAGE
            return Buffer(self.memory, self._gpa - npages * PAGE,
                          [self._gpa - (npages - k) * PAGE for k in range(npages)])
        self._iova -= npages * PAGE
        gpas = []
        for _ in range(npages):
            gpas.append(self._gpa)
            self._gpa += PAGE
        if self.scatter if scatter is None else scatter:
            gpas.reverse()  # IOVA-contiguous, GPA-scattered: every access must be split per page
        for k, gpa in enumerate(gpas):
            self.port.map(self._iova + k * PAGE, gpa, PAGE, perm)
        return Buffer(self.memory, self._iova, gpas)

    # registers ------------------------------------------------------------------------------
    def read32(self, off: int) -> int:
        return self.ctrl.mmio_read(off, 4)

    def write32(self, off: int, value: int) -> None:
        self.ctrl.mmio_write(off, 4, value)

    def write64(self, off: int, value: int) -> None:  # lo_hi_writeq
        self.write32(off, value & 0xFFFF_FFFF)
        self.write32(off + 4, value >> 32)

    async def wait_csts(self, mask: int, value: int, poll: int = ms(1), limit: int = 100) -> int:
        for _ in range(limit):
            csts = self.read32(REG_CSTS)
            if csts & mask == value:
                return csts
            await sleep(poll)
        raise AssertionError(f"CSTS never reached {value:#x} under mask {mask:#x} (CSTS={csts:#x})")

    # queues and commands ---------------------------------------------------------------------
    def _msix(self, vector: int) -> None:
        self.msix_log.append((self.sim.now, vector))
        for cq in self.cqs.values():
            if cq.vector == vector:
                cq.irq.set()

    def add_queue_pair(self, qid: int, sq_buf: Buffer, sq_size: int, cq_buf: Buffer, cq_size: int,
                       vector: int, reap: bool = True) -> None:
        self.sqs[qid] = HostQueue(qid, sq_buf, sq_size)
        cq = self.cqs[qid] = HostQueue(qid, cq_buf, cq_size, vector)
        if reap:
            self.sim.spawn(self._reaper(cq), name=f"host.reaper{qid}")

    async def _reaper(self, cq: HostQueue) -> None:
        while True:
            await cq.irq.wait()
            cq.irq.clear()
            self.reap(cq.qid)

    def reap(self, cqid: int) -> list[CompletionEntry]:
        """Consume CQEs while the phase tag matches (nvme_process_cq), then ring the CQ head doorbell."""
        cq = self.cqs[cqid]
        got = []
        while True:
            cqe = CompletionEntry.unpack(cq.buf.read(cq.head * 16, 16))
            if cqe.phase != cq.phase:
                break
            got.append(cqe)
            key = (cqe.sq_id, cqe.cid)
            self._done[key] = cqe
            waiter = self._waiters.pop(key, None)
            if waiter is not None:
                waiter.set()
            cq.head += 1
            if cq.head == cq.size:
                cq.head, cq.phase = 0, cq.phase ^ 1
        if got:
            self.write32(0x1000 + (2 * cqid + 1) * 4, cq.head)
        self.reaped += got
        return got

    def next_cid(self, qid: int) -> int:
        cid = self._cid.get(qid, 0)
        self._cid[qid] = (cid + 1) % (30 if qid == 0 else 0x10000)  # admin CID 31 is the AER's
        return cid

    def post(self, qid: int, sqe: SubmissionEntry, *, ring: bool = True) -> int:
        """Write ``sqe`` (with a fresh CID unless it has one) at the SQ tail and ring the doorbell."""
        sq = self.sqs[qid]
        cid = sqe.cid or self.next_cid(qid)
        sq.buf.write(sq.tail * 64, SubmissionEntry(**{**_fields(sqe), "cid": cid}).pack())
        sq.tail = (sq.tail + 1) % sq.size
        if ring:
            self.write32(0x1000 + 2 * qid * 4, sq.tail)
        return cid

    async def wait(self, qid: int, cid: int, timeout: int = ms(20)) -> CompletionEntry | None:
        key = (qid, cid)
        if key not in self._done:
            ev = self._waiters[key] = Event()
            try:
                await with_timeout(ev.wait(), timeout)
            except SimTimeoutError:
                self._waiters.pop(key, None)
                return None
        return self._done.pop(key)

    async def submit(self, qid: int, sqe: SubmissionEntry, timeout: int = ms(20)) -> CompletionEntry:
        cqe = await self.wait(qid, self.post(qid, sqe), timeout)
        assert cqe is not None, f"no completion for {sqe} on SQ {qid}"
        return cqe

    async def admin(self, opcode: int, **fields: Any) -> CompletionEntry:
        return await self.submit(0, SubmissionEntry(opcode=opcode, **fields))

    async def admin_read(self, opcode: int, size: int, **fields: Any) -> tuple[CompletionEntry, bytes]:
        """An admin command returning data (DMA_FROM_DEVICE: a WRITE-only mapping, PRP1 only)."""
        buf = self.alloc(size, DMA_WRITE)
        cqe = await self.admin(opcode, prp1=buf.iova, **fields)
        return cqe, buf.read(0, size)

    async def admin_write(self, opcode: int, data: bytes, **fields: Any) -> CompletionEntry:
        """An admin command carrying data (DMA_TO_DEVICE: a READ-only mapping)."""
        buf = self.alloc(len(data), DMA_READ)
        buf.write(0, data)
        return await self.admin(opcode, prp1=buf.iova, **fields)

    async def identify(self, cns: int, nsid: int = 0, csi: int = 0) -> tuple[CompletionEntry, bytes]:
        return await self.admin_read(ADMIN_IDENTIFY, 4096, nsid=nsid, cdw10=cns, cdw11=csi << 24)

    # bring-up as Linux 6.7 nvme_probe does it (reference 4.3) --------------------------------
    async def enable(self) -> int:
        cap = self.read32(REG_CAP) | self.read32(REG_CAP + 4) << 32
        self.write32(REG_CC, 0)
        await self.wait_csts(CSTS_RDY, 0)
        acq, asq = self.alloc(32 * 16), self.alloc(32 * 64)
        self.write32(REG_AQA, 0x001F001F)
        self.write64(REG_ASQ, asq.iova)
        self.write64(REG_ACQ, acq.iova)
        cc = 0x00460000 | (0x60 if cap >> 43 & 1 else 0)
        self.write32(REG_CC, cc)
        self.read32(REG_CC)
        self.write32(REG_CC, cc | 1)
        await self.wait_csts(CSTS_RDY, CSTS_RDY)
        self.add_queue_pair(0, asq, 32, acq, 32, vector=0)
        return cap

    async def create_io_queues(self, count: int, depth: int, *, sq_size: int | None = None) -> None:
        bufs = [(self.alloc(depth * 16), self.alloc((sq_size or depth) * 64)) for _ in range(count)]
        for qid, (cqb, sqb) in enumerate(bufs, start=1):
            st = await self.admin(ADMIN_CREATE_CQ, prp1=cqb.iova, cdw10=(depth - 1) << 16 | qid, cdw11=qid << 16 | 3)
            assert st.status == SUCCESS, st
            st = await self.admin(ADMIN_CREATE_SQ, prp1=sqb.iova, cdw10=((sq_size or depth) - 1) << 16 | qid,
                                  cdw11=qid << 16 | 1)
            assert st.status == SUCCESS, st
            self.add_queue_pair(qid, sqb, sq_size or depth, cqb, depth, vector=qid)
        await sleep(0)  # let the reaper tasks start

    async def bring_up(self, io_queues: int = 4, depth: int = 64) -> dict[str, Any]:
        """nvme_probe: enable, Identify, effects log, timestamp, ..., queues, AEN, namespace scan."""
        out: dict[str, Any] = {"cap": await self.enable()}
        _, raw = await self.identify(CNS_CTRL)
        ctrl = out["id_ctrl"] = IdentifyController.unpack(raw)
        if ctrl.lpa & 2:
            out["effects"] = (await self.admin_read(ADMIN_GET_LOG_PAGE, 4096, cdw10=0x03FF0005))[0].status
        if ctrl.oncs & 0x40:
            out["timestamp"] = (await self.admin_write(ADMIN_SET_FEATURES, struct.pack("<Q", 1_700_000_000_000),
                                                       cdw10=FEAT_TIMESTAMP)).status
        if ctrl.ctratt & 0x8000:  # ELBAS: nvme_configure_host_options sets Host Behavior Support
            out["host_behavior"] = (await self.admin_write(ADMIN_SET_FEATURES, bytes([0, 0, 0, 1]).ljust(512, b"\0"),
                                                           cdw10=FEAT_HOST_BEHAVIOR)).status
        if ctrl.oacs & 1:  # OPAL discovery0
            out["opal"] = (await self.admin_read(ADMIN_SECURITY_RECV, 2048, cdw10=0x01000100, cdw11=2048))[0].status
        out["smart"] = (await self.admin_read(ADMIN_GET_LOG_PAGE, 512, nsid=0xFFFF_FFFF, cdw10=0x007F0002))[0].status
        nq = await self.admin(ADMIN_SET_FEATURES, cdw10=FEAT_NUM_QUEUES, cdw11=(io_queues - 1) * 0x10001)
        out["nq_result"] = nq.result
        nr = min(io_queues, min(nq.result & 0xFFFF, nq.result >> 16) + 1)
        await self.create_io_queues(nr, min(depth, (out["cap"] & 0xFFFF) + 1))
        out["aec"] = (await self.admin(ADMIN_SET_FEATURES, cdw10=FEAT_ASYNC_EVENT,
                                       cdw11=ctrl.oaes & 0x80000B00)).status
        self.post(0, SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=31))
        out["cns6"] = (await self.identify(CNS_CS_CTRL))[0].status
        _, raw = await self.identify(CNS_NS_ACTIVE_LIST)
        out["nsids"] = [n for n in struct.unpack("<1024I", raw) if n]
        for nsid in out["nsids"]:
            out["descriptors"] = (await self.identify(CNS_NS_DESCR_LIST, nsid))[1]
            await self.identify(CNS_NS, nsid)
            out["id_ns"] = IdentifyNamespace.unpack((await self.identify(CNS_NS, nsid))[1])
        return out

    # I/O helpers ----------------------------------------------------------------------------------
    def prps(self, buf: Buffer, offset: int, length: int, lists: Buffer | None = None, list_off: int = 0
             ) -> tuple[int, int]:
        """PRP1/PRP2 for ``length`` bytes at ``buf + offset``; a PRP list (chained per page) in ``lists``."""
        prp1 = buf.iova + offset
        first = min(length, PAGE - (prp1 & 0xFFF))
        entries = [(prp1 & ~0xFFF) + PAGE * k for k in range(1, -(-(length - first) // PAGE) + 1)]
        if not entries:
            return prp1, 0
        if len(entries) == 1:
            return prp1, entries[0]
        assert lists is not None
        (page, off), i = divmod(list_off, PAGE), 0
        while True:
            room = (PAGE - off) // 8
            if len(entries) - i <= room:
                lists.write(page * PAGE + off, struct.pack(f"<{len(entries) - i}Q", *entries[i:]))
                break
            chunk = entries[i:i + room - 1] + [lists.iova + (page + 1) * PAGE]
            lists.write(page * PAGE + off, struct.pack(f"<{room}Q", *chunk))
            i, page, off = i + room - 1, page + 1, 0
        return prp1, lists.iova + list_off

    def rw(self, opcode: int, slba: int, nlb: int, prp1: int, prp2: int = 0, nsid: int = 1, flags: int = 0
           ) -> SubmissionEntry:
        return SubmissionEntry(opcode=opcode, flags=flags, nsid=nsid, prp1=prp1, prp2=prp2, cdw10=slba & 0xFFFF_FFFF,
                               cdw11=slba >> 32, cdw12=nlb - 1)


def _fields(sqe: SubmissionEntry) -> dict[str, int]:
    return {name: getattr(sqe, name) for name in ("opcode", "flags", "cid", "nsid", "cdw2", "cdw3", "mptr", "prp1",
                                                  "prp2", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15")}


def run(body: Callable[[NvmeHostDriver], Any], identity: str = "vfio", *, trace: bool = False,
        cost: CostModel | None = None, seed: int = 0, direct: bool = False) -> tuple[Any, NvmeHostDriver, list[Any]]:
    """Run ``await body(driver)`` in a fresh simulation; returns (result, driver, trace records)."""
    sink = ListSink()
    sim = Simulator(seed=seed, sinks=[sink] if trace else [])
    drv = NvmeHostDriver(sim, identity, cost=cost, direct=direct)
    return run_task(sim, body(drv), name="test"), drv, sink.records


async def up(drv: NvmeHostDriver, queues: int = 2, depth: int = 16) -> NvmeHostDriver:
    """Enable, set the number of queues, create ``queues`` I/O queue pairs."""
    await drv.enable()
    await drv.admin(ADMIN_SET_FEATURES, cdw10=FEAT_NUM_QUEUES, cdw11=(queues - 1) * 0x10001)
    await drv.create_io_queues(queues, depth)
    return drv


# --------------------------------------------------------------------------------------------
# bring-up
# --------------------------------------------------------------------------------------------


def test_bring_up_like_linux_on_the_vfio_pm173x():
    """Linux 6.7's probe sequence against the PM173X: every command and the answers Linux relies on."""
    out, drv, records = run(lambda d: d.bring_up(), "vfio", trace=True)

    fetched = [(r.fields["sqid"], r.fields["opcode"]) for r in records if r.event == "fetch"]
    assert fetched == [(0, 0x06), (0, 0x02), (0, 0x09), (0, 0x82), (0, 0x02), (0, 0x09)] + [
        (0, 0x05), (0, 0x01)] * 4 + [(0, 0x09), (0, 0x0C), (0, 0x06), (0, 0x06), (0, 0x06), (0, 0x06), (0, 0x06)]
    ctrl = out["id_ctrl"]
    assert (ctrl.vid, ctrl.ssvid, ctrl.mn, ctrl.fr, ctrl.mdts, ctrl.ver) == (
        0x144D, 0x144D, "SAMSUNG MZWLJ3T8HBLS-00007", "EPK98B5Q", 8, 0x10300)
    assert (ctrl.rtd3e, ctrl.oaes, ctrl.oacs, ctrl.lpa, ctrl.nn, ctrl.oncs, ctrl.sgls, ctrl.ieee) == (
        0x989680, 0x300, 0x5F, 0x0E, 32, 0x7F, 0xF0002, 0x002538)
    assert (out["effects"], out["timestamp"], out["smart"], out["aec"]) == (SUCCESS,) * 4
    assert out["opal"] == INVALID_FIELD | DNR  # a non-SED drive refuses OPAL discovery
    assert out["cns6"] == INVALID_FIELD | DNR  # an NVMe 1.3 controller knows no CNS 06h
    assert out["nq_result"] == 0x007F007F
    assert out["nsids"] == [1]
    assert (out["id_ns"].nsze, out["id_ns"].block_size) == (7_501_476_528, 512)
    assert drv.ctrl.queue_state() == {
        **{f"sq{q}": (0 if q else 21, 0 if q else 21, 32 if not q else 64, q) for q in range(5)},
        **{f"cq{q}": (0 if q else 20, 0 if q else 20, 32 if not q else 64, 1) for q in range(5)},
    }  # 21 admin commands fetched, 20 completed: the AER stays outstanding
    assert drv.read32(REG_CC) == 0x00460001 and drv.read32(REG_CSTS) == CSTS_RDY


def test_bring_up_like_linux_on_the_emulated_qemu_nvme():
    """QEMU's controller: CSS=CSI in CC, CNS 06h and Host Behavior Support answered, 64 queue pairs."""
    out, drv, _ = run(lambda d: d.bring_up(), "emulated")

    ctrl = out["id_ctrl"]
    assert (ctrl.vid, ctrl.ssvid, ctrl.mn, ctrl.mdts, ctrl.ver, ctrl.ieee) == (
        0x1B36, 0x1AF4, "QEMU NVMe Ctrl", 7, 0x10400, 0x525400)
    assert out["cap"] == 0x0040_0820_0F01_07FF and drv.read32(REG_VS) == 0x10400
    assert drv.read32(REG_CC) == 0x00460061
    assert (out["cns6"], out["host_behavior"], out["nq_result"]) == (SUCCESS, SUCCESS, 0x003F003F)
    assert "opal" not in out  # QEMU 8.2 does not set OACS bit 0
    assert out["descriptors"][:4] == bytes([3, 16, 0, 0]) and out["descriptors"][20:24] == bytes([2 ** 0, 8, 0, 0])
    assert out["id_ns"].nsze == 1 << 25 and out["id_ns"].nlbaf == 7


def test_enable_and_disable_take_their_cost_model_latency():
    """CSTS.RDY follows CC.EN after nvme_enable_ps / nvme_disable_ps (the control task applies them)."""
    async def body(drv: NvmeHostDriver) -> list[tuple[int, int]]:
        await drv.enable()
        t_disable = drv.sim.now
        drv.write32(REG_CC, 0)
        seen = [(0, drv.read32(REG_CSTS))]
        await drv.wait_csts(CSTS_RDY, 0, poll=us(10), limit=1000)
        seen.append((drv.sim.now - t_disable, drv.read32(REG_CSTS)))
        return seen

    seen, drv, records = run(body, trace=True)

    writes = [r.time for r in records if r.event == "mmio_write" and r.fields["reg"] == "CC"]
    ready = [r.time for r in records if r.event == "ready"]
    disabled = [r.time for r in records if r.event == "disabled"]
    assert ready == [writes[2] + drv.cost.nvme_enable_ps]
    assert disabled == [writes[3] + drv.cost.nvme_disable_ps]
    assert seen == [(0, CSTS_RDY), (drv.cost.nvme_disable_ps, 0)]


def test_shutdown_handshake_reports_occurring_then_complete():
    """CC.SHN=01b: CSTS.SHST reads 01b at once and 10b after nvme_shutdown_ps; a reset clears it."""
    async def body(drv: NvmeHostDriver) -> list[int]:
        await up(drv)
        drv.write32(REG_CC, 0x00464001)
        seen = [drv.read32(REG_CSTS)]
        await sleep(drv.cost.nvme_shutdown_ps - 1)
        seen.append(drv.read32(REG_CSTS))
        await sleep(1)
        await sleep(0)  # let the control task run first in this instant
        seen.append(drv.read32(REG_CSTS))
        drv.write32(REG_CC, 0)
        await drv.wait_csts(0xF, 0)
        seen.append(drv.read32(REG_CSTS))
        return seen

    seen, _, _ = run(body)

    assert seen == [CSTS_RDY | 1 << 2, CSTS_RDY | 1 << 2, CSTS_RDY | 2 << 2, 0]


@pytest.mark.parametrize("identity", ["vfio", "emulated"])
def test_enable_with_misaligned_admin_queue_sets_cfs(identity: str):
    """nvme_start_ctrl refuses an ASQ not aligned to the memory page: CSTS.CFS instead of RDY."""
    async def body(drv: NvmeHostDriver) -> int:
        drv.write32(REG_AQA, 0x001F001F)
        drv.write64(REG_ASQ, 0x1000_0800)
        drv.write64(REG_ACQ, 0x1000_2000)
        drv.write32(REG_CC, 0x00460001)
        await sleep(drv.cost.nvme_enable_ps + 1)
        return drv.read32(REG_CSTS)

    csts, _, records = run(body, identity, trace=True)

    assert csts == CSTS_CFS
    assert [r.fields["reason"] for r in records if r.event == "start_failed"] == [
        "ASQ 0x10000800 is not aligned to the 4096 B memory page"]


# --------------------------------------------------------------------------------------------
# I/O data paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity", ["vfio", "emulated"])
def test_write_then_read_round_trips_data_through_scattered_pages(identity: str):
    """A 3-page write and read at an in-page offset land in the namespace and come back byte for byte."""
    data = bytes((i * 7 + 3) & 0xFF for i in range(12 * 512))

    async def body(drv: NvmeHostDriver) -> tuple[int, int, bytes]:
        await up(drv)
        src, dst = drv.alloc(4 * PAGE, DMA_READ), drv.alloc(4 * PAGE, DMA_WRITE)
        lists = drv.alloc(PAGE)
        src.write(0x200, data)
        w = await drv.submit(1, drv.rw(IO_WRITE, 100, 12, *drv.prps(src, 0x200, len(data), lists)))
        r = await drv.submit(2, drv.rw(IO_READ, 100, 12, *drv.prps(dst, 0x600, len(data), lists, 0x100)))
        return w.status, r.status, dst.read(0x600, len(data))

    (w, r, back), drv, _ = run(body, identity)

    assert (w, r) == (SUCCESS, SUCCESS)
    assert back == data
    assert drv.ctrl.namespaces[1].read(100, 12) == data


def test_prp_list_chains_through_its_last_entry():
    """A PRP list starting 3 slots before its page end chains to a second list page (QEMU nvme_map_prp)."""
    data = bytes((i * 13) & 0xFF for i in range(8 * PAGE))

    async def body(drv: NvmeHostDriver) -> tuple[int, int, bytes]:
        await up(drv)
        src, dst, lists = drv.alloc(9 * PAGE), drv.alloc(9 * PAGE), drv.alloc(2 * PAGE)
        src.write(0x100, data)
        prp1, prp2 = drv.prps(src, 0x100, len(data), lists, PAGE - 24)
        assert struct.unpack("<3Q", lists.read(PAGE - 24, 24))[2] == lists.iova + PAGE  # the chain pointer
        w = await drv.submit(1, drv.rw(IO_WRITE, 0, 64, prp1, prp2))
        r = await drv.submit(1, drv.rw(IO_READ, 0, 64, *drv.prps(dst, 0, len(data), lists, 0)))
        return w.status, r.status, dst.read(0, len(data))

    (w, r, back), drv, records = run(body, trace=True)

    assert (w, r, back) == (SUCCESS, SUCCESS, data)
    assert drv.ctrl.namespaces[1].read(0, 64) == data


def test_map_prp_counts_list_reads_and_rejects_offsets():
    """map_prp: segments per page, one read per list page, PRP Offset Invalid for offset entries."""
    async def body(drv: NvmeHostDriver) -> list[Any]:
        await up(drv)
        buf, lists = drv.alloc(4 * PAGE), drv.alloc(PAGE)
        ctrl = drv.ctrl
        out: list[Any] = [ctrl.map_prp(buf.iova + 0x10, 0, 0x100), ctrl.map_prp(buf.iova, buf.iova + PAGE, 2 * PAGE)]
        out.append(ctrl.map_prp(*drv.prps(buf, 0x800, 3 * PAGE, lists), 3 * PAGE))
        lists.write(8, struct.pack("<Q", buf.iova + 2 * PAGE + 0x10))
        for args in [(buf.iova, buf.iova + PAGE + 8, 2 * PAGE), (buf.iova + 0x800, lists.iova, 3 * PAGE),
                     (buf.iova, lists.iova + 4, 3 * PAGE)]:
            with pytest.raises(CommandError) as err:
                ctrl.map_prp(*args)
            out.append(err.value.status)
        return out

    out, drv, _ = run(body)
    base = out[0][0][0][0] - 0x10

    assert out[0] == ([(base + 0x10, 0x100)], 0)
    assert out[1] == ([(base, PAGE), (base + PAGE, PAGE)], 0)
    assert out[2] == ([(base + 0x800, 0x800), (base + PAGE, PAGE), (base + 2 * PAGE, PAGE),
                       (base + 3 * PAGE, 0x800)], 1)
    assert out[3:] == [INVALID_PRP_OFFSET | DNR] * 3  # PRP2 page, list entry, list pointer not qword aligned


def test_sgl_data_block_and_last_segment_round_trip():
    """I/O with one SGL Data Block, then a Last Segment of three Data Blocks (Linux's SGL shapes)."""
    data = bytes((i * 5 + 1) & 0xFF for i in range(24 * 512))

    async def body(drv: NvmeHostDriver) -> tuple[int, int, int, bytes]:
        await up(drv)
        src, dst, seg = drv.alloc(3 * PAGE), drv.alloc(6 * PAGE), drv.alloc(PAGE)
        src.write(0, data)
        block = SglDescriptor(address=src.iova, length=len(data)).pack()
        w = await drv.submit(1, drv.rw(IO_WRITE, 8, 24, *struct.unpack("<QQ", block), flags=SGL_FLAGS))
        pieces = [(dst.iova + 0x10, 4096), (dst.iova + 2 * PAGE, 4096), (dst.iova + 5 * PAGE, 4096)]
        seg.write(0, b"".join(SglDescriptor(address=a, length=n).pack() for a, n in pieces))
        last = SglDescriptor(address=seg.iova, length=48, type=SGL_TYPE_LAST_SEGMENT).pack()
        r = await drv.submit(1, drv.rw(IO_READ, 8, 24, *struct.unpack("<QQ", last), flags=SGL_FLAGS))
        bad = SglDescriptor(address=seg.iova, length=40, type=SGL_TYPE_LAST_SEGMENT).pack()
        b = await drv.submit(1, drv.rw(IO_READ, 8, 24, *struct.unpack("<QQ", bad), flags=SGL_FLAGS))
        back = dst.read(0x10, 4096) + dst.read(2 * PAGE, 4096) + dst.read(5 * PAGE, 4096)
        return w.status, r.status, b.status, back

    (w, r, b, back), _, _ = run(body)

    assert (w, r, b) == (SUCCESS, SUCCESS, 0x00D | DNR)  # a segment length not a multiple of 16
    assert back == data


def test_sgl_on_an_admin_command_is_invalid_field():
    """SGLs shall not be used for admin commands over PCIe (QEMU nvme_admin_cmd)."""
    async def body(drv: NvmeHostDriver) -> int:
        await drv.enable()
        buf = drv.alloc(PAGE)
        desc = SglDescriptor(address=buf.iova, length=4096, type=SGL_TYPE_DATA_BLOCK).pack()
        prp1, prp2 = struct.unpack("<QQ", desc)
        return (await drv.admin(ADMIN_IDENTIFY, flags=SGL_FLAGS, prp1=prp1, prp2=prp2, cdw10=CNS_CTRL)).status

    status, _, _ = run(body)

    assert status == INVALID_FIELD | DNR


def test_other_nvm_commands_flush_write_zeroes_dsm_compare():
    """Write Zeroes and DSM deallocate blocks (reads return zeros), Compare detects a mismatch, Flush succeeds."""
    async def body(drv: NvmeHostDriver) -> list[int]:
        await up(drv)
        buf, ranges = drv.alloc(2 * PAGE), drv.alloc(PAGE)
        buf.write(0, b"\xAB" * 16 * 512)
        out = [(await drv.submit(1, drv.rw(IO_WRITE, 0, 16, *drv.prps(buf, 0, 8192)))).status]
        out.append((await drv.submit(1, drv.rw(IO_COMPARE, 0, 8, *drv.prps(buf, 0, 4096)))).status)
        buf.write(0, b"\xAC")
        out.append((await drv.submit(1, drv.rw(IO_COMPARE, 0, 8, *drv.prps(buf, 0, 4096)))).status)
        out.append((await drv.submit(1, SubmissionEntry(opcode=IO_WRITE_ZEROES, nsid=1, cdw10=2, cdw12=1))).status)
        ranges.write(0, struct.pack("<IIQ", 0, 3, 10))
        out.append((await drv.submit(1, SubmissionEntry(opcode=IO_DSM, nsid=1, prp1=ranges.iova, cdw11=4))).status)
        out.append((await drv.submit(1, SubmissionEntry(opcode=IO_FLUSH, nsid=1))).status)
        return out

    statuses, drv, _ = run(body)
    ns = drv.ctrl.namespaces[1]

    assert statuses == [SUCCESS, SUCCESS, COMPARE_FAILURE, SUCCESS, SUCCESS, SUCCESS]
    assert [ns.read(lba, 1)[:1] for lba in range(16)] == [b"\xAB"] * 2 + [b"\0"] * 2 + [b"\xAB"] * 6 + [
        b"\0"] * 3 + [b"\xAB"] * 3


# --------------------------------------------------------------------------------------------
# queues, arbitration, interrupts, timing
# --------------------------------------------------------------------------------------------


def test_queue_indices_and_phase_tags_wrap():
    """On a 4-entry queue pair the SQ head in each CQE and the phase tag wrap every 4 commands."""
    async def body(drv: NvmeHostDriver) -> list[tuple[int, int]]:
        await drv.enable()
        await drv.create_io_queues(1, 4)
        buf = drv.alloc(PAGE)
        for _ in range(10):
            await drv.submit(1, drv.rw(IO_READ, 0, 1, buf.iova))
        return [(c.sq_head, c.phase) for c in drv.reaped if c.sq_id == 1]

    got, drv, _ = run(body)

    assert got == [(1, 1), (2, 1), (3, 1), (0, 1), (1, 0), (2, 0), (3, 0), (0, 0), (1, 1), (2, 1)]
    assert drv.ctrl.queue_state()["cq1"] == (2, 2, 4, 1)


def test_full_completion_queue_holds_entries_until_the_head_moves():
    """With nobody consuming, a 4-entry CQ takes 3 entries; the head doorbell releases the rest."""
    async def body(drv: NvmeHostDriver) -> list[int]:
        await drv.enable()
        cqb, sqb = drv.alloc(PAGE), drv.alloc(PAGE)
        await drv.admin(ADMIN_CREATE_CQ, prp1=cqb.iova, cdw10=3 << 16 | 1, cdw11=1 << 16 | 3)
        await drv.admin(ADMIN_CREATE_SQ, prp1=sqb.iova, cdw10=7 << 16 | 1, cdw11=1 << 16 | 1)
        drv.add_queue_pair(1, sqb, 8, cqb, 4, vector=1, reap=False)
        buf = drv.alloc(PAGE)
        for _ in range(6):
            drv.post(1, drv.rw(IO_READ, 0, 1, buf.iova))
        await sleep(ms(1))
        counts = [len(drv.reap(1))]
        await sleep(ms(1))
        counts.append(len(drv.reap(1)))
        await sleep(ms(1))
        counts.append(len(drv.reap(1)))
        return counts

    counts, _, _ = run(body)

    assert counts == [3, 3, 0]


def test_fetch_is_round_robin_across_submission_queues_in_qid_order():
    """Commands waiting on SQ 1 and SQ 2 are fetched alternately, SQ 1 first."""
    async def body(drv: NvmeHostDriver) -> None:
        await up(drv)
        buf = drv.alloc(PAGE)
        cids = [drv.post(q, drv.rw(IO_READ, 0, 1, buf.iova), ring=False) for q in (1, 1, 1, 2, 2)]
        drv.write32(0x1000 + 2 * 4, 3)
        drv.write32(0x1000 + 4 * 4, 2)
        for q, cid in zip((1, 1, 1, 2, 2), cids):
            await drv.wait(q, cid)

    _, _, records = run(body, trace=True)
    io = [(r.fields["sqid"], r.fields["cid"]) for r in records if r.event == "fetch" and r.fields["sqid"]]

    assert io == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]


def test_each_completion_queue_interrupts_on_its_own_vector():
    """MSI-X vector = the CQ's vector (Create I/O CQ CDW11[31:16]); admin completions use vector 0."""
    async def body(drv: NvmeHostDriver) -> None:
        await up(drv)
        drv.msix_log.clear()
        buf = drv.alloc(PAGE)
        await drv.submit(2, drv.rw(IO_READ, 0, 1, buf.iova))
        await drv.submit(1, drv.rw(IO_READ, 0, 1, buf.iova))
        await drv.admin(ADMIN_GET_FEATURES, cdw10=FEAT_NUM_QUEUES)

    _, drv, _ = run(body)

    assert [v for _, v in drv.msix_log] == [2, 1, 0]


def test_read_latency_is_fetch_service_media_transfer_and_completion():
    """A 4 KiB read completes 2 PCIe latencies + firmware time + one flash sense and channel transfer +
    ceil(4096 B / bandwidth) after its doorbell; a 128 KiB read of the same LBAs finds page 0 still in
    its die's page register and senses the other 7 pages on 7 dies in parallel."""
    cost = CostModel().evolve(pcie_latency_ps=700_000, nvme_cmd_service_ps=9_000_000,
                              nvme_bandwidth_bytes_per_s=3_000_000_000, nvme_flash_read_tail_ps=0)

    async def body(drv: NvmeHostDriver) -> tuple[int, int, int]:
        await up(drv)
        a, b = drv.alloc(32 * PAGE), drv.alloc(32 * PAGE)
        lists = drv.alloc(2 * PAGE)
        t0 = drv.sim.now
        await drv.submit(1, drv.rw(IO_READ, 0, 8, a.iova))
        t1 = drv.sim.now
        c1 = drv.post(1, drv.rw(IO_READ, 0, 256, *drv.prps(a, 0, 128 * 1024, lists)))
        c2 = drv.post(2, drv.rw(IO_READ, 0, 256, *drv.prps(b, 0, 128 * 1024, lists, PAGE)))
        await drv.wait(1, c1)
        t2 = drv.sim.now
        await drv.wait(2, c2)
        return t1 - t0, t2 - t1, drv.sim.now - t2

    (single, big1, gap), _, _ = run(body, cost=cost)
    xfer_4k = -(-4096 * 10**12 // 3_000_000_000)
    xfer_128k = -(-131072 * 10**12 // 3_000_000_000)
    sense, chan_4k, chan_16k = 40_000_000, -(-4096 * 10**12 // 875_000_000), -(-16384 * 10**12 // 875_000_000)

    assert single == 2 * 700_000 + 9_000_000 + sense + chan_4k + xfer_4k
    assert big1 == 3 * 700_000 + 9_000_000 + sense + chan_16k + xfer_128k  # plus one PRP-list read
    assert gap == xfer_128k  # the second burst waits for the shared link


# --------------------------------------------------------------------------------------------
# admin command statuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity", ["vfio", "emulated"])
def test_admin_command_statuses(identity: str):
    """Unknown opcode, bad CNS, queue-creation checks, late Number of Queues, queue deletion rules."""
    async def body(drv: NvmeHostDriver) -> dict[str, int]:
        await up(drv, queues=1)
        buf = drv.alloc(PAGE)
        s: dict[str, int] = {}

        async def st(key: str, opcode: int, **f: Any) -> None:
            s[key] = (await drv.admin(opcode, **f)).status

        await st("opcode", 0xC0)
        await st("cns", ADMIN_IDENTIFY, prp1=buf.iova, cdw10=0x55)
        await st("ns_inactive", ADMIN_IDENTIFY, prp1=buf.iova, nsid=7, cdw10=CNS_NS)
        await st("ns_invalid", ADMIN_IDENTIFY, prp1=buf.iova, nsid=0x1000, cdw10=CNS_NS)
        await st("cq_qid0", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=15 << 16, cdw11=3)
        await st("cq_exists", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=15 << 16 | 1, cdw11=3)
        await st("cq_qid_max", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=15 << 16 | 0x1000, cdw11=3)
        await st("cq_size0", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=2, cdw11=3)
        await st("cq_size_big", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=0xFFFF << 16 | 2, cdw11=3)
        await st("cq_offset", ADMIN_CREATE_CQ, prp1=buf.iova + 8, cdw10=15 << 16 | 2, cdw11=3)
        await st("cq_vector", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=15 << 16 | 2, cdw11=0x4000 << 16 | 3)
        await st("cq_noncontig", ADMIN_CREATE_CQ, prp1=buf.iova, cdw10=15 << 16 | 2, cdw11=2)
        await st("sq_no_cq", ADMIN_CREATE_SQ, prp1=buf.iova, cdw10=15 << 16 | 2, cdw11=9 << 16 | 1)
        await st("nq_late", ADMIN_SET_FEATURES, cdw10=FEAT_NUM_QUEUES, cdw11=0)
        await st("del_cq_busy", ADMIN_DELETE_CQ, cdw10=1)
        await st("del_cq_none", ADMIN_DELETE_CQ, cdw10=9)
        await st("del_sq_none", ADMIN_DELETE_SQ, cdw10=9)
        await st("del_sq", ADMIN_DELETE_SQ, cdw10=1)
        await st("del_cq", ADMIN_DELETE_CQ, cdw10=1)
        await st("log_unknown", ADMIN_GET_LOG_PAGE, prp1=buf.iova, cdw10=0x00FF0077)
        await st("log_offset", ADMIN_GET_LOG_PAGE, prp1=buf.iova, cdw10=0x00FF0002, cdw12=2)
        await st("feature_unknown", ADMIN_GET_FEATURES, cdw10=0x7F)
        await st("feature_save", ADMIN_SET_FEATURES, cdw10=1 << 31 | FEAT_ASYNC_EVENT)
        return s

    s, _, _ = run(body, identity)
    qemu = identity == "emulated"

    assert s == {
        "opcode": INVALID_OPCODE | DNR, "cns": INVALID_FIELD | DNR, "ns_inactive": SUCCESS,
        "ns_invalid": INVALID_NSID | DNR, "cq_qid0": INVALID_QUEUE_ID | DNR, "cq_exists": INVALID_QUEUE_ID | DNR,
        "cq_qid_max": INVALID_QUEUE_ID | DNR, "cq_size0": INVALID_QUEUE_SIZE | DNR,
        "cq_size_big": INVALID_QUEUE_SIZE | DNR, "cq_offset": INVALID_PRP_OFFSET | DNR,
        "cq_vector": INVALID_INTERRUPT_VECTOR | DNR, "cq_noncontig": INVALID_FIELD | DNR,
        "sq_no_cq": COMPLETION_QUEUE_INVALID | DNR, "nq_late": CMD_SEQ_ERROR | DNR,
        "del_cq_busy": INVALID_QUEUE_DELETION,
        "del_cq_none": (COMPLETION_QUEUE_INVALID if qemu else INVALID_QUEUE_ID) | DNR,
        "del_sq_none": INVALID_QUEUE_ID | DNR, "del_sq": SUCCESS, "del_cq": SUCCESS,
        "log_unknown": (INVALID_FIELD if qemu else INVALID_LOG_PAGE) | DNR, "log_offset": INVALID_FIELD | DNR,
        "feature_unknown": INVALID_FIELD | DNR, "feature_save": 0x10D | DNR,
    }


@pytest.mark.parametrize("identity", ["vfio", "emulated"])
def test_io_command_statuses(identity: str):
    """Unknown I/O opcode, NSID 0 / inactive, LBA out of range, MDTS exceeded, PRP2 with an offset."""
    async def body(drv: NvmeHostDriver) -> list[int]:
        await up(drv, queues=1)
        buf = drv.alloc(2 * PAGE)
        cmds = [
            SubmissionEntry(opcode=0x7E, nsid=1),
            drv.rw(IO_READ, 0, 1, buf.iova, nsid=0),
            drv.rw(IO_READ, 0, 1, buf.iova, nsid=5),
            drv.rw(IO_READ, drv.ctrl.namespaces[1].nsze - 1, 2, buf.iova),
            drv.rw(IO_READ, 0, 0x10000, buf.iova),
            drv.rw(IO_READ, 0, 16, buf.iova, buf.iova + PAGE + 0x200),
        ]
        return [(await drv.submit(1, c)).status for c in cmds]

    statuses, _, _ = run(body, identity)
    inactive = INVALID_FIELD if identity == "emulated" else INVALID_NSID

    assert statuses == [INVALID_OPCODE | DNR, INVALID_NSID | DNR, inactive | DNR, LBA_OUT_OF_RANGE | DNR,
                        INVALID_FIELD | DNR, INVALID_PRP_OFFSET | DNR]


def test_get_features_reports_current_default_and_capabilities():
    """SEL 0/1/3 of Get Features, Timestamp data advancing with simulated time (Figure 305)."""
    async def body(drv: NvmeHostDriver) -> list[Any]:
        await drv.enable()
        await drv.admin(ADMIN_SET_FEATURES, cdw10=FEAT_ASYNC_EVENT, cdw11=0x300)
        out: list[Any] = [(await drv.admin(ADMIN_GET_FEATURES, cdw10=sel << 8 | FEAT_ASYNC_EVENT)).result
                          for sel in (0, 1, 3)]
        await drv.admin_write(ADMIN_SET_FEATURES, struct.pack("<Q", 5000), cdw10=FEAT_TIMESTAMP)
        await sleep(ms(7))
        _, raw = await drv.admin_read(ADMIN_GET_FEATURES, 8, cdw10=FEAT_TIMESTAMP)
        ts = struct.unpack("<Q", raw)[0]
        out.append((ts & (1 << 48) - 1, ts >> 49 & 7))
        return out

    out, _, _ = run(body)

    assert out[:3] == [0x300, 0, 0x4]
    assert out[3][1] == 1 and 5007 <= out[3][0] <= 5008


def test_abort_completes_the_outstanding_async_event_request():
    """Abort of the AER (CID 31 on SQ 0) completes it with Command Abort Requested; DW0 bit 0 = 0."""
    async def body(drv: NvmeHostDriver) -> tuple[int, int, CompletionEntry | None]:
        await drv.enable()
        drv.post(0, SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=31))
        miss = await drv.admin(ADMIN_ABORT, cdw10=77 << 16)
        hit = await drv.admin(ADMIN_ABORT, cdw10=31 << 16)
        return miss.result, hit.result, await drv.wait(0, 31)

    miss, hit, aer = run(body)[0]

    assert (miss, hit) == (1, 0)
    assert aer is not None and aer.status == ABORT_REQUESTED


def test_shadow_doorbells_on_the_emulated_controller():
    """Doorbell Buffer Config (QEMU): the controller reads SQ tails from the shadow buffer, writes event indexes."""
    async def body(drv: NvmeHostDriver) -> tuple[int, int, int, int]:
        await drv.enable()
        dbs, eis = drv.alloc(PAGE), drv.alloc(PAGE)
        st = (await drv.admin(ADMIN_DBBUF_CONFIG, prp1=dbs.iova, prp2=eis.iova)).status
        await drv.create_io_queues(1, 8)
        buf = drv.alloc(PAGE)
        drv.post(1, drv.rw(IO_READ, 0, 1, buf.iova), ring=False)
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, buf.iova), ring=False)
        dbs.write(8, struct.pack("<I", 2))  # the shadow SQ 1 tail, no MMIO write
        drv.write32(0x1000 + 2 * 4, 1)  # a stale MMIO value: the shadow wins
        cqe = await drv.wait(1, cid)
        assert cqe is not None
        return st, struct.unpack("<I", eis.read(8, 4))[0], struct.unpack("<I", dbs.read(0, 4))[0], cqe.status

    (st, sq1_eventidx, admin_shadow, io), _, _ = run(body, "emulated")

    assert (st, sq1_eventidx, io) == (SUCCESS, 2, SUCCESS)
    assert admin_shadow == 3  # set at Config, then QEMU mirrors MMIO admin SQ doorbells into the shadow


def test_doorbell_buffer_config_is_unknown_to_the_pm173x():
    """OACS bit 8 is clear on the PM1733: Doorbell Buffer Config is an invalid opcode."""
    async def body(drv: NvmeHostDriver) -> int:
        await drv.enable()
        return (await drv.admin(ADMIN_DBBUF_CONFIG, prp1=drv.alloc(PAGE).iova, prp2=drv.alloc(PAGE).iova)).status

    assert run(body)[0] == INVALID_OPCODE | DNR


def test_identity_pci_facts_for_the_machine_builder():
    """BAR0 sizes and PCI IDs the PCI function will publish (reference 1.3; QEMU nvme_init_pci)."""
    sim = Simulator()
    ports = PageTableDmaPort(GuestMemory(128 << 20))
    vfio = NvmeController(sim, "vfio", CostModel(), ports, lambda v: None, lambda: True)
    qemu = NvmeController(sim, "emulated", CostModel(), ports, lambda v: None, lambda: True)

    assert (vfio.identity.pci_vendor, vfio.identity.pci_device, vfio.identity.bar0_size) == (0x144D, 0xA824, 32768)
    assert (qemu.identity.pci_vendor, qemu.identity.pci_device, qemu.identity.bar0_size) == (0x1B36, 0x0010, 16384)
    assert qemu.identity.pci_class == vfio.identity.pci_class == 0x010802
    assert vfio.mmio_read(REG_CAP, 8) == vfio.identity.cap and vfio.mmio_read(REG_VS, 4) == 0x10300
    assert vfio.identity.guesses and qemu.identity.guesses


@pytest.mark.parametrize("identity", ["vfio", "emulated"])
def test_the_machine_dma_port_drops_in_for_the_test_port(identity: str):
    """With models._dma.DirectDmaPort (no IOMMU) the same driver brings the controller up and moves data."""
    data = bytes(range(256)) * 32

    async def body(drv: NvmeHostDriver) -> tuple[dict[str, Any], bytes]:
        out = await drv.bring_up(io_queues=2, depth=16)
        src, dst, lists = drv.alloc(3 * PAGE), drv.alloc(3 * PAGE), drv.alloc(PAGE)
        src.write(0x80, data)
        assert (await drv.submit(1, drv.rw(IO_WRITE, 3, 16, *drv.prps(src, 0x80, 8192, lists)))).status == SUCCESS
        assert (await drv.submit(2, drv.rw(IO_READ, 3, 16, *drv.prps(dst, 0, 8192)))).status == SUCCESS
        return out, dst.read(0, 8192)

    (out, back), drv, _ = run(body, identity, direct=True)

    assert out["nsids"] == [1] and back == data
