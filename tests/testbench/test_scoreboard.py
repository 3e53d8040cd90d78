"""Monitors collect trace records; scoreboards pair expected with observed and name both in every complaint."""

import pytest

from sim import ListSink, Simulator, SimTimeoutError, TraceRecord, ns, sleep
from testbench import Monitor, Scoreboard, ScoreboardError


def driver_and_device(sim, iovas_sent, iovas_done, start=ns(3)):
    """A driver traces map requests every 10 ns; a device traces completions from `start` on, every 10 ns."""
    async def driver():
        for iova in iovas_sent:
            sim.trace("viommu-drv", "map_req", iova=iova, size=4096)
            await sleep(ns(10))

    async def device():
        await sleep(start)
        for iova in iovas_done:
            sim.trace("viommu-dev", "mapped", iova=iova, size=4096)
            sim.trace("viommu-dev", "irq")
            await sleep(ns(10))

    sim.spawn(driver(), name="driver")
    sim.spawn(device(), name="device")


def test_monitor_keeps_matching_records_in_emission_order():
    """source/event/where filter the records; callbacks see each one once."""
    sim = Simulator()
    mon = Monitor(sim, source="viommu-dev", event=("mapped",), where=lambda r: r.fields["iova"] >= 0x2000)
    seen = []
    mon.add_callback(seen.append)
    driver_and_device(sim, [0x1000, 0x2000, 0x3000], [0x1000, 0x2000, 0x3000])
    sim.run_sync()
    assert [(r.time, r.event, r.fields["iova"]) for r in mon.records] == [(13000, "mapped", 0x2000), (23000, "mapped", 0x3000)]
    assert seen == mon.records
    assert len(mon) == 2


def test_monitor_next_wakes_a_sim_task_with_the_next_record():
    """await mon.next() returns the next matching record emitted after the call; timeout raises SimTimeoutError."""
    sim = Simulator()
    mon = Monitor(sim, event="mapped")
    got = []

    async def test():
        rec = await mon.next()
        got.append((sim.now, rec.fields["iova"]))
        rec = await mon.next(timeout=ns(20))
        got.append((sim.now, rec.fields["iova"]))
        with pytest.raises(SimTimeoutError):
            await mon.next(timeout=ns(5))
        got.append(sim.now)

    driver_and_device(sim, [1, 2], [1, 2])
    sim.spawn(test(), name="test")
    sim.run_sync()
    assert got == [(3000, 1), (13000, 2), 18000]
    assert mon._waiters == []


def test_monitor_close_detaches_its_sink():
    """After close() the monitor sees nothing and tracing is off again if it was the only sink."""
    sim = Simulator()
    mon = Monitor(sim)
    assert sim.tracing
    mon.close()
    assert not sim.tracing
    sim.trace("x", "y")
    assert mon.records == []


def test_scoreboard_in_order_reports_mismatch_with_both_events_and_times():
    """An observation that differs from the oldest expectation is reported with both records and both times."""
    sim = Simulator()
    board = Scoreboard(sim, "map-path")
    board.connect(expected=Monitor(sim, event="map_req"), observed=Monitor(sim, event="mapped"))
    driver_and_device(sim, [0x1000, 0x2000], [0x1000, 0x5000])
    sim.run_sync()
    assert board.matched == 1
    with pytest.raises(ScoreboardError) as err:
        board.check()
    assert str(err.value) == (
        "scoreboard 'map-path': 1 problem(s), 1 matched, checked at 23 ns:\n"
        "  mismatch: expected viommu-drv.map_req(iova=8192, size=4096) (expected at 10 ns) "
        "but observed viommu-dev.mapped(iova=20480, size=4096) at 13 ns: iova: 8192 != 20480"
    )
    assert isinstance(err.value, AssertionError)


def test_scoreboard_reports_missing_and_unexpected_items_with_their_times():
    """Expectations never met and observations nobody expected are each named with their time."""
    sim = Simulator()
    board = Scoreboard(sim, "sb")
    board.expect(TraceRecord(ns(4), 0, "drv", "unmap_req", {"iova": 1}))
    with pytest.raises(ScoreboardError, match=r"missing: expected drv.unmap_req\(iova=1\) \(expected at 4 ns\) was never observed"):
        board.check()
    board.pending.clear()
    board.observe(TraceRecord(ns(9), 1, "dev", "unmap", {"iova": 1}))
    with pytest.raises(ScoreboardError, match=r"unexpected: observed dev.unmap\(iova=1\) at 9 ns, nothing was expected"):
        board.check()


def test_scoreboard_unordered_pairs_by_key_and_compares_the_rest():
    """With ordered=False and a key, completions may come in any order; the remaining fields are compared."""

    class ByIova(Scoreboard):
        def key(self, item):
            return item.fields["iova"]

    sim = Simulator()
    board = ByIova(sim, "by-iova", ordered=False)
    board.connect(expected=Monitor(sim, event="map_req"), observed=Monitor(sim, event="mapped"))
    driver_and_device(sim, [0x1000, 0x2000, 0x3000], [0x3000, 0x1000, 0x2000], start=ns(25))
    sim.run_sync()
    board.check()
    assert (board.matched, board.pending, board.errors) == (3, [], [])

    board.expect(TraceRecord(ns(40), 0, "viommu-drv", "map_req", {"iova": 7, "size": 4096}))
    board.observe(TraceRecord(ns(45), 1, "viommu-dev", "mapped", {"iova": 7, "size": 8192}))
    assert board.errors == [
        "mismatch: expected viommu-drv.map_req(iova=7, size=4096) (expected at 40 ns) "
        "but observed viommu-dev.mapped(iova=7, size=8192) at 45 ns: size: 4096 != 8192"
    ]


def test_scoreboard_fail_immediately_raises_in_the_observing_task():
    """fail_immediately raises ScoreboardError at the mismatching observe(), naming both items."""
    sim = Simulator(sinks=[ListSink()])
    board = Scoreboard(sim, "now", fail_immediately=True)
    board.expect(5)

    async def checker():
        await sleep(ns(2))
        board.observe(6)

    sim.spawn(checker(), name="checker")
    with pytest.raises(ScoreboardError, match=r"now: mismatch: expected 5 \(expected at 0 ps\) but observed 6 at 2 ns: 5 != 6"):
        sim.run_sync()


def test_scoreboard_left_unchecked_is_checked_when_the_test_returns(pytester):
    """A scoreboard created in a @testbench.test is checked at its end, so a forgotten check() cannot hide a miss."""
    pytester.makepyfile(test_sb="""
import testbench

@testbench.test
async def test_forgot_check(sim):
    board = testbench.Scoreboard(sim, "forgotten")
    board.expect("MAP")
    await testbench.Timer(5)

@testbench.test
async def test_checked(sim):
    board = testbench.Scoreboard(sim, "fine")
    board.expect("MAP")
    board.observe("MAP")
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ScoreboardError: scoreboard 'forgotten': 1 problem(s), 0 matched, checked at 5 ps:",
                                 "*missing: expected 'MAP' (expected at 0 ps) was never observed"])
