"""The NVMe media model (models/_nvme_media.py): dies and channels, the page register, the write cache,
the seeded service-time distribution; and the controller's Read / Write / Flush charging it."""

from __future__ import annotations

import heapq
import random

import attrs
import pytest

from models import CostModel
from models._nvme_media import MediaSpec, NvmeMedia, media_spec
from models._nvme_wire import (
    ADMIN_SET_FEATURES, FEAT_VOLATILE_WC, IO_FLUSH, IO_READ, IO_WRITE, SUCCESS, SubmissionEntry,
)
from sim import PS_PER_S, us
from test_nvme_controller import PAGE, NvmeHostDriver, run, up

#: a small exact geometry: 4 dies on 2 channels, 16 KiB pages, no tails unless a test sets them
SPEC = MediaSpec(units=4, channels=2, page_bytes=16384, read_ps=us(40), read_tail_ps=0,
                 channel_bytes_per_s=1 << 30, write_ps=us(5), write_tail_ps=0, drain_bytes_per_s=1 << 30,
                 cache_bytes=1 << 20, volatile=True, sense_cache=True)


def xfer(nbytes: int, rate: int = 1 << 30) -> int:
    return -(-nbytes * PS_PER_S // rate)


def media(**changes: object) -> NvmeMedia:
    return NvmeMedia(attrs.evolve(SPEC, **changes), random.Random(0))


def test_a_read_senses_each_page_on_its_die_then_transfers_on_its_channel():
    """4 KiB: one sense then one 4 KiB transfer; 64 KiB at page 0: four dies sense in parallel, dies 0/2 and
    1/3 share channels 0 and 1, so each channel carries two 16 KiB transfers one after the other."""
    m = media()
    assert m.read(0, 16384 * 8, 4096) == us(40) + xfer(4096)
    m = media()
    assert m.read(0, 0, 65536) == us(40) + 2 * xfer(16384)


def test_reads_on_one_die_queue_and_reads_on_other_dies_overlap():
    """Pages 0 and 4 are both on die 0: the second sense starts when the first ends; page 1 (die 1) does not wait."""
    m = media()
    first = m.read(0, 0, 4096)
    same_die = m.read(0, 4 * 16384, 4096)
    other_die = m.read(0, 1 * 16384, 4096)
    assert first == us(40) + xfer(4096)
    assert same_die == 2 * us(40) + xfer(4096)
    assert other_die == us(40) + xfer(4096)


def test_the_page_register_serves_a_reread_of_the_last_page_until_a_write_to_it():
    """The next 4 KiB of the same 16 KiB page needs no sense; after a write to the page it does again."""
    m = media()
    t = m.read(0, 0, 4096)
    assert m.read(t, 4096, 4096) == t + xfer(4096)
    m.write(t, 8192, 4096, cache_enabled=True)
    assert m.read(t, 4096, 4096) == t + us(40) + xfer(4096)
    stats = m.statistics()
    assert (stats.senses, stats.sense_hits) == (2, 1)


def test_writes_complete_in_the_cache_until_it_is_full_then_wait_for_the_drain():
    """A 1 MiB cache draining at 1 GiB/s: four 256 KiB writes fit at once, the fifth waits until 256 KiB
    have drained; each completes one insert time after it is admitted."""
    m = media()
    quarter = 256 * 1024
    done = [m.write(0, i * quarter, quarter, cache_enabled=True) for i in range(5)]
    assert done[:4] == [us(5)] * 4
    # the drain takes each write from its admission: the 5th fits once 256 KiB of the 1 MiB have drained
    admit = 4 * xfer(quarter) - (1 << 20) * 3 // 4 * PS_PER_S // (1 << 30)
    assert done[4] == admit + us(5)
    stats = m.statistics()
    assert (stats.cache_writes, stats.cache_full_waits, stats.cache_wait_ps) == (5, 1, admit)


def test_flush_waits_for_a_volatile_enabled_cache_to_drain_and_not_otherwise():
    """After 512 KiB of writes a Flush at 10 us ends at the drain's end; a non-volatile cache's Flush, or one
    with the volatile cache disabled, returns at once."""
    half = 512 * 1024
    m = media()
    m.write(0, 0, half, cache_enabled=True)
    assert m.flush(us(10), cache_enabled=True) == xfer(half)
    assert m.statistics().flush_wait_ps == xfer(half) - us(10)
    for m, enabled in ((media(volatile=False), True), (media(), False)):
        m.write(0, 0, half, cache_enabled=True)
        assert m.flush(us(10), cache_enabled=enabled) == us(10)


def test_a_disabled_volatile_cache_makes_writes_write_through():
    """With VWE off a write completes when its bytes are on the media; a non-volatile cache still completes at once."""
    assert media().write(0, 0, 65536, cache_enabled=False) == xfer(65536)
    assert media(volatile=False).write(0, 0, 65536, cache_enabled=False) == us(5)


def test_service_times_are_base_plus_an_exponential_tail_from_the_seeded_stream():
    """Senses with a 10 us tail: never below the base, the same sequence for the same seed, another for another."""
    def senses(seed: int) -> list[int]:
        m = NvmeMedia(attrs.evolve(SPEC, read_tail_ps=us(10), channel_bytes_per_s=1 << 50), random.Random(seed))
        return [m.read(0, 4 * 16384 * i, 512) for i in range(1000)]  # all on die 0: each waits for the previous
    times = senses(0)
    each = [b - a for a, b in zip([0] + times, times)]
    assert min(each) >= us(40) - 1 and senses(0) == times and senses(1) != times
    assert each[:3] == [58_606_072, 54_186_291, 45_457_131]
    assert sum(each) // len(each) == 49_847_102  # base + tail mean = 50 us


def closed_loop_read_latency(qd: int, n: int = 2000) -> int:
    """Mean latency (ps) of ``n`` random 4 KiB reads kept ``qd`` deep on the default PM1733 media."""
    m = NvmeMedia(media_spec(CostModel(), emulated=False, volatile=False), random.Random(0))
    offsets = random.Random(1)
    slots = [(0, i) for i in range(qd)]
    total = 0
    for _ in range(n):
        now, i = heapq.heappop(slots)
        done = m.read(now, offsets.randrange(1 << 27) * 4096, 4096)
        total += done - now
        heapq.heappush(slots, (done, i))
    return total // n


def test_read_latency_is_flat_while_dies_are_idle_then_grows_with_queue_depth():
    """64 dies: QD 8 is within 8 % of QD 1 (two reads rarely meet on a die), QD 64 queues (about twice QD 1)."""
    lat = {qd: closed_loop_read_latency(qd) for qd in (1, 8, 64)}
    assert lat == {1: 52_812_286, 8: 56_715_743, 64: 106_100_813}


# -- through the controller ------------------------------------------------------------------------


async def _writes_then_flush(drv: NvmeHostDriver, vwe: int | None = None) -> tuple[list[int], int]:
    """Eight 128 KiB writes posted together, then a Flush: (write latencies, flush latency) in ps."""
    await up(drv, queues=1, depth=16)
    if vwe is not None:
        assert (await drv.admin(ADMIN_SET_FEATURES, cdw10=FEAT_VOLATILE_WC, cdw11=vwe)).status == SUCCESS
    bufs = [drv.alloc(32 * PAGE) for _ in range(8)]
    lists = drv.alloc(8 * PAGE)
    t0 = drv.sim.now
    cids = [drv.post(1, drv.rw(IO_WRITE, 256 * i, 256, *drv.prps(b, 0, 128 * 1024, lists, i * PAGE)))
            for i, b in enumerate(bufs)]
    lat = []
    for cid in cids:
        cqe = await drv.wait(1, cid)
        assert cqe is not None and cqe.status == SUCCESS
        lat.append(drv.sim.now - t0)
    t1 = drv.sim.now
    assert (await drv.submit(1, SubmissionEntry(opcode=IO_FLUSH, nsid=1))).status == SUCCESS
    return lat, drv.sim.now - t1


@pytest.mark.parametrize("identity, drain_wait_ps", [("emulated", 611_109_947), ("vfio", 0)])
def test_a_flush_after_writes_waits_for_a_volatile_cache_to_drain(identity: str, drain_wait_ps: int):
    """QEMU (VWC 1: the host page cache is volatile) answers the Flush once the 1 MiB written has drained at
    1 GiB/s; the PM1733's cache is power-loss protected (VWC 0): its Flush costs only the SQ-entry read and
    the controller's time.  The writes themselves complete as the 2.5 GiB/s link brings them in."""
    (lat, flush), drv, _ = run(lambda d: _writes_then_flush(d), identity)
    stats = drv.ctrl.media.statistics()
    assert (stats.cache_writes, stats.cache_full_waits, stats.flushes, stats.flush_wait_ps) == (8, 0, 1, drain_wait_ps)
    assert flush == 500_000 + 10_000_000 + drain_wait_ps
    assert lat[-1] < 8 * 52_000_000


def test_disabling_the_volatile_write_cache_makes_emulated_writes_wait_for_the_media():
    """Set Features Volatile Write Cache = 0 on QEMU's NVMe: each 128 KiB write completes when written back,
    one 1 GiB/s drain time after the previous; the Flush then finds nothing to wait for."""
    (lat, flush), _, _ = run(lambda d: _writes_then_flush(d, vwe=0), "emulated")
    assert lat[0] == 182_398_438
    assert [b - a for a, b in zip(lat, lat[1:])] == [xfer(131072)] * 7
    assert flush == 10_500_000


def test_io_read_and_write_differ_at_queue_depth_one():
    """One 4 KiB write then one 4 KiB read (vfio): the write is done in the cache, the read senses flash."""
    async def body(drv: NvmeHostDriver) -> tuple[int, int]:
        await up(drv, queues=1)
        buf = drv.alloc(PAGE)
        t0 = drv.sim.now
        await drv.submit(1, drv.rw(IO_WRITE, 0, 8, buf.iova))
        t1 = drv.sim.now
        await drv.submit(1, drv.rw(IO_READ, 800, 8, buf.iova))
        return t1 - t0, drv.sim.now - t1
    (write, read), _, _ = run(body)
    assert (write, read) == (22_085_837, 64_750_421)


def test_cli_randread_and_randwrite_at_iodepth_1_differ_and_have_a_latency_spread(capsys):
    """Issue #14's acceptance: at iodepth 1 randread and randwrite differ in mean latency, each p50 < p99 < max."""
    import json

    from viommu_sim.cli import main
    lat = {}
    for rw in ("randread", "randwrite"):
        assert main(["run", "--rw", rw, "--iodepth", "1", "--ios", "500", "--json"]) == 0
        lat[rw] = json.loads(capsys.readouterr().out)["latency_us"]
        assert lat[rw]["p50"] < lat[rw]["p99"] < lat[rw]["max"]
    assert lat["randread"]["mean"] > lat["randwrite"]["mean"] + 30  # a flash sense vs a cache insert
