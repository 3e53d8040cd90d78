"""Events, signals, queues, locks and the First/Combine/with_timeout combinators."""

import pytest

from sim import (
    Cancelled,
    Combine,
    Event,
    First,
    Lock,
    Queue,
    QueueEmpty,
    QueueFull,
    Signal,
    Simulator,
    SimTimeoutError,
    Timer,
    ns,
    with_timeout,
)


def run(*coros):
    sim = Simulator()
    tasks = [sim.spawn(c(sim), name=f"t{i}") for i, c in enumerate(coros)]
    sim.run_sync()
    return sim, tasks


def test_event_wakes_all_waiters_in_wait_order():
    """set() wakes every waiter, FIFO, at the time of set()."""
    ev = Event()
    log = []

    async def waiter(i):
        await ev.wait()
        log.append((i, ev.data))

    async def main(sim):
        for i in range(3):
            sim.spawn(waiter(i))
        await Timer(ns(2))
        ev.set("go")
        log.append(("set", sim.now))

    run(main)
    assert log == [("set", 2000), (0, "go"), (1, "go"), (2, "go")]


def test_event_wait_returns_immediately_when_already_set_and_clear_rearms():
    """A set event does not block; clear() makes the next wait block."""
    ev = Event()
    log = []

    async def main(sim):
        ev.set()
        await ev.wait()
        log.append(("passed", sim.now))
        ev.clear()
        sim.call_at(ns(5), ev.set)
        await ev.wait()
        log.append(("woken", sim.now, ev.is_set()))

    run(main)
    assert log == [("passed", 0), ("woken", 5000, True)]


def test_signal_edges_fire_only_on_matching_transitions():
    """rising() fires on 0->1, falling() on 1->0, changed() on any change, no-op sets fire nothing."""
    irq = Signal(0, name="irq")
    log = []

    async def watch(kind):
        for _ in range(2):
            await getattr(irq, kind)()
            log.append((kind, irq.value))

    async def main(sim):
        for kind in ("rising", "falling", "changed"):
            sim.spawn(watch(kind))
        await Timer(1)
        irq.set(1)
        await Timer(1)
        irq.set(1)  # no change: nothing fires
        await Timer(1)
        irq.set(0)
        await Timer(1)
        irq.set(2)

    run(main)
    # on one change, changed() waiters wake before edge waiters
    assert log == [("changed", 1), ("rising", 1), ("changed", 0), ("falling", 0), ("rising", 2)]


def test_queue_is_fifo_and_get_blocks_until_put():
    """Items come out in put order; a getter waits for the producer."""
    q: Queue[int] = Queue()
    got = []

    async def consumer(sim):
        for _ in range(3):
            got.append((await q.get(), sim.now))

    async def producer(sim):
        for i in range(3):
            await Timer(ns(1))
            q.put_nowait(i)

    run(consumer, producer)
    assert got == [(0, 1000), (1, 2000), (2, 3000)]


def test_queue_maxsize_blocks_put_and_nowait_twins_raise():
    """A full queue blocks put() and raises QueueFull from put_nowait; an empty one raises QueueEmpty."""
    q: Queue[str] = Queue(maxsize=1, name="q")
    log = []

    async def producer(sim):
        await q.put("a")
        with pytest.raises(QueueFull, match="q is full"):
            q.put_nowait("x")
        await q.put("b")  # blocks until the consumer takes "a"
        log.append(("put b", sim.now))

    async def consumer(sim):
        await Timer(ns(3))
        log.append((q.get_nowait(), sim.now))
        await Timer(0)
        log.append((await q.get(), sim.now))
        with pytest.raises(QueueEmpty):
            q.get_nowait()

    run(producer, consumer)
    assert log == [("a", 3000), ("put b", 3000), ("b", 3000)]


def test_lock_is_fifo_fair():
    """Waiters acquire in the order they asked, each after the previous release."""
    lock = Lock()
    log = []

    async def user(sim, i):
        async with lock:
            log.append((i, sim.now))
            await Timer(ns(1))

    async def main(sim):
        for i in range(4):
            sim.spawn(user(sim, i))

    run(main)
    assert log == [(0, 0), (1, 1000), (2, 2000), (3, 3000)]


def test_lock_handed_to_a_cancelled_waiter_passes_on():
    """A waiter cancelled while queued never holds the lock; the next one gets it."""
    lock = Lock()
    log = []

    async def user(sim, i):
        try:
            async with lock:
                log.append((i, sim.now))
                await Timer(ns(2))
        except Cancelled:
            log.append((i, "cancelled"))
            raise

    async def main(sim):
        tasks = [sim.spawn(user(sim, i)) for i in range(3)]
        await Timer(ns(1))
        tasks[1].cancel()

    run(main)
    assert log == [(0, 0), (1, "cancelled"), (2, 2000)]
    assert not lock.locked()


def test_first_returns_the_trigger_that_fired_first():
    """First(event, timer) returns whichever fires first, and the loser never wakes the task."""
    ev = Event()
    log = []

    async def main(sim):
        t = Timer(ns(10))
        w = ev.wait()
        sim.call_at(ns(4), ev.set)
        fired = await First(w, t)
        log.append((fired is w, sim.now))
        fired = await First(Event().wait(), Timer(ns(3)))
        log.append((type(fired).__name__, sim.now))
        await Timer(ns(20))
        log.append(("end", sim.now))

    run(main)
    assert log == [(True, 4000), ("Timer", 7000), ("end", 27000)]


def test_first_with_a_task_returns_the_task():
    """A Task is a trigger; First(task, timer) fires when the task ends."""
    log = []

    async def main(sim):
        async def child():
            await Timer(ns(2))
            return "done"

        t = sim.spawn(child())
        fired = await First(t, Timer(ns(5)))
        log.append((fired is t, t.result(), sim.now))

    run(main)
    assert log == [(True, "done", 2000)]


def test_combine_waits_for_all():
    """Combine fires once every trigger has fired."""
    log = []

    async def main(sim):
        a, b = Event(), Event()
        sim.call_at(ns(3), a.set)
        sim.call_at(ns(8), b.set)
        await Combine(a.wait(), b.wait(), Timer(ns(5)))
        log.append(sim.now)

    run(main)
    assert log == [8000]


def test_with_timeout_raises_on_simulated_deadline_and_cancels_the_coroutine():
    """with_timeout spawns a coroutine, cancels it on timeout and raises SimTimeoutError."""
    log = []

    async def slow(sim):
        try:
            await Timer(ns(100))
        except Cancelled:
            log.append(("slow cancelled", sim.now))
            raise

    async def main(sim):
        with pytest.raises(SimTimeoutError, match="did not complete within 10 ns"):
            await with_timeout(slow(sim), ns(10))
        log.append(("timed out", sim.now))
        value = await with_timeout(_value_after(ns(2)), ns(10))
        log.append((value, sim.now))

    run(main)
    assert log == [("timed out", 10000), ("slow cancelled", 10000), ("value", 12000)]


async def _value_after(delay):
    await Timer(delay)
    return "value"


def test_with_timeout_on_a_trigger():
    """A trigger that fires in time is returned; one that does not raises."""
    log = []

    async def main(sim):
        ev = Event()
        sim.call_at(ns(1), ev.set)
        fired = await with_timeout(ev.wait(), ns(5))
        log.append((type(fired).__name__, sim.now))
        with pytest.raises(SimTimeoutError):
            await with_timeout(Event().wait(), ns(5))
        log.append(sim.now)

    run(main)
    assert log == [("_EventWait", 1000), 6000]


def test_first_refuses_a_bare_coroutine():
    """Passing a coroutine to First explains that it must be spawned first."""

    async def c():
        pass

    coro = c()
    with pytest.raises(TypeError, match="spawn it first"):
        First(coro)
    coro.close()
