"""NVMe DMA faults, bus mastering and bad doorbells: what each identity's hardware does (reference 5.3)."""

from __future__ import annotations

from typing import Any

import pytest

from models._dma import DMA_READ, DMA_WRITE
from models._nvme_wire import (
    ADMIN_ASYNC_EVENT_REQUEST, ADMIN_GET_LOG_PAGE, CSTS_CFS, CSTS_RDY, DATA_TRANSFER_ERROR, IO_READ, IO_WRITE,
    SUCCESS, CompletionEntry, SubmissionEntry, aer_result,
)
from sim import ms, sleep
from test_nvme_controller import PAGE, NvmeHostDriver, run, up

DB = 0x1000


def _faults(drv: NvmeHostDriver) -> list[tuple[int, str]]:
    return [(f.access, f.reason) for f in drv.port.faults]


# --------------------------------------------------------------------------------------------
# data and PRP-list faults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity, expected", [("emulated", DATA_TRANSFER_ERROR), ("vfio", SUCCESS)])
def test_read_into_an_unmapped_buffer(identity: str, expected: int):
    """QEMU fails the Read with Data Transfer Error (no DNR); behind VFIO the posted write is dropped."""
    async def body(drv: NvmeHostDriver) -> tuple[int, bytes]:
        await up(drv)
        drv.ctrl.namespaces[1].write(0, b"\x5A" * 4096)
        buf = drv.alloc(PAGE)
        buf.write(0, b"\x11" * 4096)
        drv.port.unmap(buf.iova, PAGE)
        cqe = await drv.submit(1, drv.rw(IO_READ, 0, 8, buf.iova))
        return cqe.status, buf.read(0, 4096)

    (status, contents), drv, records = run(body, identity, trace=True)

    assert status == expected
    assert contents == b"\x11" * 4096  # nothing reached memory either way
    assert _faults(drv) == [(DMA_WRITE, "no mapping")]
    assert [r.fields["what"] for r in records if r.event == "dma_fault"] == ["data_write"]
    assert drv.ctrl.csts == CSTS_RDY


@pytest.mark.parametrize("identity", ["emulated", "vfio"])
def test_write_from_an_unmapped_buffer_is_a_data_transfer_error(identity: str):
    """A device read that faults fails the command with Data Transfer Error on both identities."""
    async def body(drv: NvmeHostDriver) -> CompletionEntry:
        await up(drv)
        buf = drv.alloc(2 * PAGE)
        drv.port.unmap(buf.iova + PAGE, PAGE)
        return await drv.submit(1, drv.rw(IO_WRITE, 0, 16, buf.iova, buf.iova + PAGE))

    cqe, drv, _ = run(body, identity)

    assert (cqe.status, cqe.dnr) == (DATA_TRANSFER_ERROR, False)
    assert _faults(drv) == [(DMA_READ, "no mapping")]
    assert drv.ctrl.namespaces[1].written_blocks == 0


@pytest.mark.parametrize("identity", ["emulated", "vfio"])
def test_unmapped_prp_list_is_a_data_transfer_error(identity: str):
    """The PRP-list fetch is a device read: a fault there fails the command before any data moves."""
    async def body(drv: NvmeHostDriver) -> int:
        await up(drv)
        buf, lists = drv.alloc(4 * PAGE), drv.alloc(PAGE)
        prp1, prp2 = drv.prps(buf, 0, 3 * PAGE, lists)
        drv.port.unmap(lists.iova, PAGE)
        return (await drv.submit(1, drv.rw(IO_READ, 0, 24, prp1, prp2))).status

    status, drv, records = run(body, identity, trace=True)

    assert status == DATA_TRANSFER_ERROR
    assert [r.fields["what"] for r in records if r.event == "dma_fault"] == ["prp_list"]


@pytest.mark.parametrize("identity, expected", [("emulated", DATA_TRANSFER_ERROR), ("vfio", SUCCESS)])
def test_read_into_a_read_only_mapping_is_a_permission_fault(identity: str, expected: int):
    """A device write needs IOMMU WRITE permission: a DMA_TO_DEVICE (R-only) buffer refuses it."""
    async def body(drv: NvmeHostDriver) -> int:
        await up(drv)
        return (await drv.submit(1, drv.rw(IO_READ, 0, 1, drv.alloc(PAGE, DMA_READ).iova))).status

    status, drv, _ = run(body, identity)

    assert status == expected
    assert _faults(drv) == [(DMA_WRITE, "permission")]


def test_translation_happens_at_the_moment_of_access():
    """A read whose buffer is unmapped during its service time faults; the same read before does not."""
    async def body(drv: NvmeHostDriver) -> list[int]:
        await up(drv)
        buf = drv.alloc(PAGE)
        first = await drv.submit(1, drv.rw(IO_READ, 0, 8, buf.iova))
        cid = drv.post(1, drv.rw(IO_READ, 0, 8, buf.iova))
        await sleep(drv.cost.pcie_latency_ps + drv.cost.nvme_cmd_service_ps // 2)  # fetched, not yet transferred
        drv.port.unmap(buf.iova, PAGE)
        second = await drv.wait(1, cid)
        assert second is not None
        return [first.status, second.status]

    statuses, drv, _ = run(body, "emulated")

    assert statuses == [SUCCESS, DATA_TRANSFER_ERROR]
    assert _faults(drv) == [(DMA_WRITE, "no mapping")]


# --------------------------------------------------------------------------------------------
# queue faults: SQ fetch, CQ post
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity, csts", [("emulated", CSTS_CFS), ("vfio", CSTS_RDY | CSTS_CFS)])
def test_sq_entry_fetch_fault_is_controller_fatal(identity: str, csts: int):
    """An unmapped SQ: no completion, CSTS.CFS (QEMU stores CFS alone; a device keeps RDY and halts)."""
    async def body(drv: NvmeHostDriver) -> tuple[CompletionEntry | None, int, CompletionEntry | None]:
        await up(drv)
        sq = drv.sqs[1].buf
        drv.port.unmap(sq.iova, sq.size)
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, drv.alloc(PAGE).iova))
        lost = await drv.wait(1, cid, timeout=ms(1))
        csts = drv.read32(0x1C)
        for k, gpa in enumerate(sq.gpas):
            drv.port.map(sq.iova + k * PAGE, gpa, PAGE)
        drv.write32(DB + 8, drv.sqs[1].tail)  # ring again with the queue mapped
        return lost, csts, await drv.wait(1, cid, timeout=ms(1))

    (lost, seen, retried), drv, records = run(body, identity, trace=True)

    assert lost is None and seen == csts
    sq_iova = drv.sqs[1].buf.iova
    assert [r.fields["what"] for r in records if r.event == "cfs"][:1] == [f"SQ 1 entry fetch at 0x{sq_iova:x}"]
    if identity == "emulated":  # QEMU keeps processing doorbells after CFS
        assert retried is not None and retried.status == SUCCESS
    else:  # the physical controller stays halted until a reset
        assert retried is None


@pytest.mark.parametrize("identity", ["emulated", "vfio"])
def test_cq_entry_post_fault(identity: str):
    """QEMU goes fatal and posts nothing; behind VFIO the entry is lost but the tail moves and MSI-X fires."""
    async def body(drv: NvmeHostDriver) -> tuple[CompletionEntry | None, list[int]]:
        await up(drv)
        cq = drv.cqs[1].buf
        drv.port.unmap(cq.iova, cq.size)
        drv.msix_log.clear()
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, drv.alloc(PAGE).iova))
        return await drv.wait(1, cid, timeout=ms(1)), [v for _, v in drv.msix_log]

    (cqe, vectors), drv, _ = run(body, identity)

    assert cqe is None
    assert _faults(drv) == [(DMA_WRITE, "no mapping")]
    if identity == "emulated":
        assert (drv.ctrl.csts, vectors, drv.ctrl.queue_state()["cq1"][1]) == (CSTS_CFS, [], 0)
    else:
        assert (drv.ctrl.csts, vectors, drv.ctrl.queue_state()["cq1"][1]) == (CSTS_RDY, [1], 1)


# --------------------------------------------------------------------------------------------
# bus mastering
# --------------------------------------------------------------------------------------------


def test_bus_master_off_accepts_the_doorbell_but_moves_nothing_on_the_device():
    """vfio: with BME clear no DMA is issued; once BME is set and the controller woken, the command runs."""
    async def body(drv: NvmeHostDriver) -> tuple[int, CompletionEntry | None, CompletionEntry | None]:
        await up(drv)
        buf = drv.alloc(PAGE)
        drv.bus_master = False
        before = drv.port.accesses
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, buf.iova))
        stalled = await drv.wait(1, cid, timeout=ms(2))
        moved = drv.port.accesses - before
        drv.bus_master = True
        drv.ctrl.bus_master_changed()
        return moved, stalled, await drv.wait(1, cid)

    (moved, stalled, done), drv, _ = run(body, "vfio")

    assert (moved, stalled) == (0, None)
    assert done is not None and done.status == SUCCESS
    assert drv.ctrl.csts == CSTS_RDY


def test_bus_master_off_makes_qemu_fail_the_entry_fetch():
    """emulated: the SQ fetch through the disabled bus-master address space fails, so CSTS = CFS."""
    async def body(drv: NvmeHostDriver) -> tuple[int, CompletionEntry | None]:
        await up(drv)
        drv.bus_master = False
        before = drv.port.accesses
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, drv.alloc(PAGE).iova))
        return drv.port.accesses - before, await drv.wait(1, cid, timeout=ms(2))

    (moved, cqe), drv, records = run(body, "emulated", trace=True)

    assert (moved, cqe, drv.ctrl.csts) == (0, None, CSTS_CFS)
    assert [r.fields["reason"] for r in records if r.event == "dma_fault"] == ["bus master disabled"]


# --------------------------------------------------------------------------------------------
# bad doorbells
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity", ["emulated", "vfio"])
def test_bad_doorbell_writes_complete_the_outstanding_aer(identity: str):
    """SQ tail / CQ head beyond the queue, and a doorbell of a missing queue: Error events 01h and 00h."""
    async def body(drv: NvmeHostDriver) -> list[Any]:
        await up(drv, queues=1, depth=16)
        out: list[Any] = []
        drv.post(0, SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=31))
        await sleep(ms(1))
        drv.write32(DB + 8, 16)  # SQ 1 tail == size
        out.append(await drv.wait(0, 31))
        drv.post(0, SubmissionEntry(opcode=ADMIN_ASYNC_EVENT_REQUEST, cid=31))
        await sleep(ms(1))
        drv.write32(DB + 12, 99)  # CQ 1 head beyond size: the Error type is masked until log 01h is read
        out.append(await drv.wait(0, 31, timeout=ms(1)))
        await drv.admin_read(ADMIN_GET_LOG_PAGE, 64, cdw10=0x000F0001)  # RAE = 0 clears the mask
        drv.write32(DB + 5 * 8, 1)  # SQ 5 does not exist
        out.append(await drv.wait(0, 31))
        out.append(drv.ctrl.queue_state()["sq1"])
        return out

    (first, masked, missing, sq1), drv, _ = run(body, identity)

    assert first is not None and (first.status, first.result) == (SUCCESS, aer_result(0, 1, 1))
    assert masked is None
    assert missing is not None and (missing.status, missing.result) == (SUCCESS, aer_result(0, 0, 1))
    assert sq1 == (0, 0, 16, 1)  # the bad values were ignored


def test_bad_doorbells_without_an_aer_are_ignored_and_traced():
    """No AER outstanding: invalid doorbell writes change nothing; misaligned and odd sizes are ignored too."""
    async def body(drv: NvmeHostDriver) -> dict[str, tuple[int, ...]]:
        await up(drv, queues=1)
        before = drv.ctrl.queue_state()
        drv.write32(DB + 8, 0xFFFF)
        drv.write32(DB + 12, 40)
        drv.write32(DB + 200 * 8, 1)
        drv.ctrl.mmio_write(DB + 2, 2, 1)
        drv.ctrl.mmio_write(DB + 8, 3, 1)
        drv.ctrl.mmio_write(0x7FFFF, 4, 1)
        await sleep(ms(1))
        assert drv.ctrl.queue_state() == before
        return before

    _, drv, records = run(body, trace=True)

    assert [(r.event, r.fields.get("reason")) for r in records
            if r.event in ("doorbell_invalid", "doorbell_ignored", "mmio_write_invalid")] == [
        ("doorbell_invalid", "beyond queue size 16"), ("doorbell_invalid", "beyond queue size 16"),
        ("doorbell_invalid", "no such queue"), ("doorbell_ignored", "misaligned"),
        ("mmio_write_invalid", None), ("mmio_write_invalid", None)]
    assert drv.ctrl.csts == CSTS_RDY


def test_doorbells_before_enable_are_ignored():
    """With CC.EN = 0 there are no queues: a doorbell write is an invalid-register write, nothing else."""
    async def body(drv: NvmeHostDriver) -> int:
        drv.write32(DB, 1)
        drv.write32(DB + 4, 1)
        await sleep(ms(1))
        return drv.port.accesses

    accesses, drv, _ = run(body)

    assert (accesses, drv.ctrl.csts, drv.ctrl.queue_state()) == (0, 0, {})


def test_disable_abandons_in_flight_commands_without_completions():
    """CC.EN 1->0 deletes the queues: a command in flight posts nothing, and a re-enable starts clean."""
    async def body(drv: NvmeHostDriver) -> tuple[CompletionEntry | None, dict[str, tuple[int, ...]], int]:
        await up(drv)
        cid = drv.post(1, drv.rw(IO_READ, 0, 1, drv.alloc(PAGE).iova))
        await sleep(drv.cost.pcie_latency_ps + 1)
        drv.write32(0x14, 0)
        lost = await drv.wait(1, cid, timeout=ms(3))
        state = drv.ctrl.queue_state()
        drv.cqs.clear()
        drv.sqs.clear()
        await drv.enable()
        return lost, state, (await drv.admin_read(0x06, 4096, cdw10=1))[0].status

    lost, state, status = run(body)[0]

    assert (lost, state, status) == (None, {}, SUCCESS)


def test_write_data_faults_leave_the_store_untouched_and_later_io_works():
    """After a faulting Write, a good Write/Read pair still round trips (no stale state in the engine)."""
    async def body(drv: NvmeHostDriver) -> list[Any]:
        await up(drv)
        bad, good = drv.alloc(PAGE), drv.alloc(PAGE)
        drv.port.unmap(bad.iova, PAGE)
        good.write(0, b"\xC3" * 512)
        out = [(await drv.submit(1, drv.rw(IO_WRITE, 4, 1, bad.iova))).status,
               (await drv.submit(1, drv.rw(IO_WRITE, 4, 1, good.iova))).status]
        good.write(0, bytes(512))
        out.append((await drv.submit(2, drv.rw(IO_READ, 4, 1, good.iova))).status)
        out.append(good.read(0, 512))
        return out

    out, _, _ = run(body, "emulated")

    assert out == [DATA_TRANSFER_ERROR, SUCCESS, SUCCESS, b"\xC3" * 512]


@pytest.mark.parametrize("identity, size", [("vfio", 256 * 64), ("emulated", 64)])
def test_error_log_page_is_elpe_plus_one_entries(identity: str, size: int):
    """Get Log Page 01h transfers (ELPE + 1) x 64 zeroed bytes at most: 256 entries on the PM1733, 1 on QEMU."""
    async def body(drv: NvmeHostDriver) -> int:
        await drv.enable()
        buf = drv.alloc(5 * PAGE)
        buf.write(0, b"\xFF" * 5 * PAGE)
        cqe = await drv.admin(ADMIN_GET_LOG_PAGE, prp1=buf.iova, prp2=drv.prps(buf, 0, 4 * PAGE,
                                                                              drv.alloc(PAGE))[1],
                              cdw10=(4 * PAGE // 4 - 1) << 16 | 1)
        assert cqe.status == SUCCESS
        return buf.read(0, 5 * PAGE).index(b"\xFF")

    assert run(body, identity)[0] == size
