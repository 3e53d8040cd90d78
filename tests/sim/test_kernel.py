"""The kernel's scheduling rule, tasks, cancellation and error propagation."""

import pytest
import trio

from sim import (
    Cancelled,
    Event,
    SimDeadlockError,
    Simulator,
    TaskState,
    Timer,
    ns,
)


def test_timeline_of_three_periodic_processes_is_exact():
    """Processes with periods 1, 2, 3 ps wake at exactly the multiples, ties in schedule order."""
    sim = Simulator()
    log = []

    async def proc(i, period):
        for _ in range(3):
            await Timer(period)
            log.append((sim.now, i))

    for i, period in enumerate((1, 2, 3)):
        sim.spawn(proc(i, period), name=f"p{i}")
    sim.run_sync()
    # at t=2, p1's wake-up was scheduled at t=0 and p0's at t=1: p1 runs first
    assert log == [(1, 0), (2, 1), (2, 0), (3, 2), (3, 0), (4, 1), (6, 2), (6, 1), (9, 2)]


def test_same_time_events_run_in_the_order_they_were_scheduled():
    """Ten tasks all waking at t=5 run in spawn order, whatever their names."""
    sim = Simulator()
    log = []

    async def proc(i):
        await Timer(5)
        log.append(i)

    for i in (3, 1, 4, 1, 5, 9, 2, 6, 5, 3):
        sim.spawn(proc(i), name=str(i))
    sim.run_sync()
    assert log == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]


def test_timer_zero_yields_to_tasks_already_scheduled_now():
    """Timer(0) lets every task already scheduled at this instant run first."""
    sim = Simulator()
    log = []

    async def a():
        log.append("a1")
        await Timer(0)
        log.append("a2")

    async def b():
        log.append("b1")

    sim.spawn(a())
    sim.spawn(b())
    sim.run_sync()
    assert log == ["a1", "b1", "a2"]


def test_negative_delay_is_refused():
    """Simulated time only moves forward."""
    with pytest.raises(ValueError, match="negative delay -1"):
        Timer(-1)


def test_float_delay_is_refused_with_the_fix():
    """A float delay points at the unit helpers that refuse to round."""
    with pytest.raises(TypeError, match="convert with sim.ns"):
        Timer(1.5)  # type: ignore[arg-type]


def test_run_until_time_stops_and_sets_now():
    """run(until=t) executes events at or before t and leaves now == t."""
    sim = Simulator()
    log = []

    async def proc():
        for _ in range(10):
            await Timer(ns(1))
            log.append(sim.now)

    sim.spawn(proc())
    sim.run_sync(until=ns(3) + 500)
    assert (log, sim.now) == ([1000, 2000, 3000], 3500)
    sim.run_sync(until=ns(5))
    assert log == [1000, 2000, 3000, 4000, 5000]


def test_awaiting_a_task_returns_its_result():
    """A parent awaiting a child gets the child's return value at the child's end time."""
    sim = Simulator()

    async def child():
        await Timer(7)
        return 42

    async def parent():
        t = sim.spawn(child(), name="child")
        value = await t
        return (value, sim.now, t.done(), t.result())

    p = sim.spawn(parent(), name="parent")
    sim.run_sync()
    assert p.result() == (42, 7, True, 42)
    assert p.state is TaskState.DONE


def test_awaited_task_exception_is_delivered_to_the_awaiter():
    """An exception in a task someone awaits goes to that awaiter, not to run()."""
    sim = Simulator()

    async def child():
        await Timer(1)
        raise KeyError("boom")

    async def parent():
        t = sim.spawn(child(), name="child")
        try:
            await t
        except KeyError as exc:
            return ("caught", str(exc), t.exception() is exc)
        return "not caught"

    p = sim.spawn(parent())
    sim.run_sync()
    assert p.result() == ("caught", "'boom'", True)


def test_unhandled_task_exception_stops_run_with_task_name_and_time():
    """An exception nobody awaits stops run() and names the task and the simulated time."""
    sim = Simulator()
    after = []

    async def bad():
        await Timer(ns(3))
        raise ValueError("descriptor table overflow")

    async def other():
        await Timer(ns(10))
        after.append(sim.now)

    sim.spawn(bad(), name="device")
    sim.spawn(other(), name="other")
    with pytest.raises(ValueError, match="descriptor table overflow") as info:
        sim.run_sync()
    assert info.value.__notes__ == ["(raised by sim task 'device' at simulated time 3 ns = 3000 ps)"]
    assert after == [] and sim.now == ns(3)


def test_cancel_delivers_cancelled_inside_the_task_and_cleanup_runs():
    """Cancellation is an exception at the task's await; finally blocks run, even with awaits."""
    sim = Simulator()
    log = []

    async def worker():
        try:
            await Timer(ns(100))
            log.append("not reached")
        except Cancelled:
            log.append(("cancelled at", sim.now))
            await Timer(ns(1))  # cleanup may take simulated time
            log.append(("cleaned up at", sim.now))
            raise

    async def boss():
        w = sim.spawn(worker(), name="worker")
        await Timer(ns(5))
        assert w.cancel("stop") is True
        try:
            await w
        except Cancelled as exc:
            log.append(("boss saw", str(exc), sim.now))
        assert w.cancelled() and w.cancel() is False

    sim.spawn(boss())
    sim.run_sync()
    assert log == [("cancelled at", 5000), ("cleaned up at", 6000), ("boss saw", "stop", 6000)]


def test_cancelling_a_task_that_never_started_closes_it():
    """A pending task cancelled before its first step never runs."""
    sim = Simulator()
    ran = []

    async def never():
        ran.append(1)

    t = sim.spawn(never())
    t.cancel()
    sim.run_sync()
    assert ran == [] and t.cancelled()


def test_cancelled_task_is_not_woken_by_its_old_trigger():
    """A stale wake-up (the event the task waited on) is ignored after cancellation."""
    sim = Simulator()
    ev = Event()
    log = []

    async def waiter():
        try:
            await ev.wait()
            log.append("woken")
        except Cancelled:
            log.append("cancelled")
            await Timer(ns(10))
            log.append("after cleanup")

    async def driver():
        w = sim.spawn(waiter())
        await Timer(1)
        w.cancel()
        ev.set()

    sim.spawn(driver())
    sim.run_sync()
    assert log == ["cancelled", "after cleanup"]


def test_a_task_cannot_cancel_itself():
    """Self-cancellation is a RuntimeError that names the fix."""
    sim = Simulator()

    async def selfish():
        me = sim.current_task()
        me.cancel()

    sim.spawn(selfish(), name="selfish")
    with pytest.raises(RuntimeError, match="cannot cancel itself"):
        sim.run_sync()


async def test_awaiting_a_trio_primitive_raises_typeerror_naming_the_fix():
    """Model code that awaits trio gets a TypeError that says to use sim triggers."""
    sim = Simulator()

    async def confused():
        await trio.sleep(1)

    sim.spawn(confused(), name="confused")
    with pytest.raises(TypeError, match=r"\(an object from trio\).*not on trio or asyncio: await sim triggers") as info:
        await sim.run()
    assert "'confused'" in str(info.value)


def test_awaiting_an_asyncio_future_raises_typeerror():
    """asyncio objects are refused the same way."""
    import asyncio

    sim = Simulator()

    async def confused():
        loop = asyncio.new_event_loop()
        try:
            await loop.create_future()
        finally:
            loop.close()

    sim.spawn(confused(), name="aio")
    with pytest.raises(TypeError, match=r"\(an object from asyncio\)"):
        sim.run_sync()


def test_spawn_refuses_a_function_instead_of_a_coroutine():
    """Passing the function rather than calling it is a clear TypeError."""
    sim = Simulator()

    async def f():
        pass

    with pytest.raises(TypeError, match="did you pass the function instead of calling it"):
        sim.spawn(f)  # type: ignore[arg-type]


def test_task_names_are_made_unique_deterministically():
    """Repeated names get #1, #2 suffixes in spawn order."""
    sim = Simulator()

    async def f():
        pass

    names = [sim.spawn(f(), name="dev").name for _ in range(3)]
    sim.run_sync()
    assert names == ["dev", "dev#1", "dev#2"]


def test_run_until_task_that_can_never_finish_reports_deadlock():
    """Running until a task that waits forever names the task and what it waits on."""
    sim = Simulator()
    ev = Event(name="never-set")

    async def stuck():
        await ev.wait()

    t = sim.spawn(stuck(), name="stuck")
    with pytest.raises(SimDeadlockError, match=r"<Task .stuck. waiting on <Event never-set clear>.wait\(\)>"):
        sim.run_sync(until=t)


def test_result_before_completion_is_an_error():
    """result() of an unfinished task says to await it first."""
    sim = Simulator()

    async def f():
        await Timer(1)

    t = sim.spawn(f(), name="f")
    with pytest.raises(RuntimeError, match="await it first"):
        t.result()
    sim.run_sync()
    assert t.result() is None


def test_call_at_runs_a_plain_callback_at_its_time():
    """call_at schedules a callback in the same total order as tasks."""
    sim = Simulator()
    log = []
    sim.call_at(ns(2), lambda: log.append(("cb", sim.now)))

    async def f():
        await Timer(ns(2))
        log.append(("task", sim.now))

    sim.spawn(f())
    sim.run_sync()
    assert log == [("cb", 2000), ("task", 2000)]


async def test_run_from_trio_is_interrupted_promptly_by_move_on_after():
    """An endless simulation yields to trio often enough for a wall-clock timeout to stop it."""
    sim = Simulator()

    async def forever():
        while True:
            await Timer(1)

    sim.spawn(forever())
    start = trio.current_time()
    with trio.move_on_after(0.05) as scope:
        await sim.run()
    elapsed = trio.current_time() - start
    assert scope.cancelled_caught
    assert elapsed < 0.5
    assert sim.now > 0


async def test_run_from_trio_with_fail_after_raises_too_slow():
    """trio.fail_after around sim.run() raises TooSlowError on a runaway model."""
    sim = Simulator()

    async def forever():
        while True:
            await Timer(1)

    sim.spawn(forever())
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.05):
            await sim.run()


async def test_run_from_trio_completes_a_finite_simulation():
    """await sim.run() returns when no events remain."""
    sim = Simulator()

    async def f():
        await Timer(ns(4))
        return sim.now

    t = sim.spawn(f())
    await sim.run()
    assert t.result() == 4000
