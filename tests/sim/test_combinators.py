"""First and Combine over every kind of branch, including branches that fired
before the combinator was awaited; each trigger forgets the waiters that lost."""

import itertools

import pytest

from sim import Combine, Event, First, Signal, Simulator, Timer, ns, sleep, with_timeout


async def _finishes_at(delay, value):
    await sleep(delay)
    return value


def _make_branch(kind, sim):
    """One branch of each kind, made at t=0 and awaited at t=1 ns; returns
    (trigger, when it fires in ns or None if never, probe).  Distinct kinds fire
    at distinct times; ``probe()`` counts the waiters its trigger still remembers.
    """
    if kind == "timer3":
        return Timer(ns(2)), 3, lambda: 0
    if kind == "event_set_before":
        ev = Event("pre")
        ev.set()
        return ev.wait(), 1, lambda: len(ev._waiters.items)
    if kind == "event_set_at4":
        ev = Event("at4")
        sim.call_at(ns(4), ev.set)
        return ev.wait(), 4, lambda: len(ev._waiters.items)
    if kind == "event_never":
        ev = Event("never")
        return ev.wait(), None, lambda: len(ev._waiters.items)
    if kind == "signal_rise_at2":
        sig = Signal(0)
        sim.call_at(ns(2), lambda: sig.set(1))
        return sig.rising(), 2, lambda: sum(len(w.items) for w in sig._edges.values())
    if kind == "task_done":
        task = sim.spawn(_finishes_at(0, "done"), name="done")
        return task, 1, lambda: len(task._joiners or ())
    if kind == "task_at5":
        task = sim.spawn(_finishes_at(ns(5), "late"), name="late")
        return task, 5, lambda: len(task._joiners or ())
    raise AssertionError(kind)


KINDS = ["timer3", "event_set_before", "event_set_at4", "event_never", "signal_rise_at2", "task_done", "task_at5"]


def _expected_winner(times):
    """Index of the branch First returns: the earliest; at a tie (two branches of one kind,
    or two already fired) the first listed, since branches are primed in order."""
    live = [(t, i) for i, t in enumerate(times) if t is not None]
    return min(live)[1] if live else None


@pytest.mark.parametrize(("a", "b"), list(itertools.product(KINDS, repeat=2)))
def test_first_returns_the_earliest_branch_and_every_loser_forgets_its_waiter(a, b):
    """All 49 ordered pairs, including already-fired branches on either side."""
    sim = Simulator()
    out = {}

    branches = [_make_branch(a, sim), _make_branch(b, sim)]
    times = [t for _, t, _ in branches]

    async def main():
        await sleep(ns(1))  # the 'done' task finishes meanwhile: an already-fired branch
        winner = _expected_winner(times)
        if winner is None:
            out["skip"] = True
            return
        fired = await First(*(trig for trig, _, _ in branches))
        out["fired"] = fired
        out["expected"] = branches[winner][0]
        out["at"] = sim.now
        out["expected_at"] = ns(times[winner])
        out["probes"] = [probe() for _, _, probe in branches]

    sim.spawn(main(), name="main")
    sim.run_sync(until=ns(20))
    if out.get("skip"):
        return
    assert out["fired"] is out["expected"]
    assert out["at"] == out["expected_at"]
    assert out["probes"] == [0, 0]


def test_first_over_a_finished_task_and_a_pending_task_returns_the_finished_one():
    """The reported crash: the pending Task is never waited on, so nothing is left to unprime."""
    sim = Simulator()
    got = []

    async def main():
        done = sim.spawn(_finishes_at(0, "a"), name="a")
        pending = sim.spawn(_finishes_at(ns(10), "b"), name="b")
        await sleep(ns(1))
        fired = await First(done, pending)
        got.append((fired is done, sim.now, pending._joiners))
        await pending
        got.append((pending.result(), sim.now))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [(True, ns(1), None), ("b", ns(10))]


def test_first_over_a_set_event_and_a_task_returns_the_event_wait():
    sim = Simulator()
    got = []

    async def main():
        ev = Event()
        ev.set("x")
        task = sim.spawn(_finishes_at(ns(10), None), name="t")
        wait = ev.wait()
        fired = await First(wait, task)
        got.append((fired is wait, sim.now, task._joiners))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [(True, 0, None)]


def test_combine_with_branches_already_fired_fires_when_the_last_one_does():
    sim = Simulator()
    got = []

    async def main():
        done = sim.spawn(_finishes_at(0, None), name="done")
        await sleep(ns(1))
        ev = Event()
        ev.set()
        comb = Combine(done, ev.wait())
        assert await comb is comb
        got.append(sim.now)
        await Combine(done, ev.wait(), Timer(ns(5)))
        got.append(sim.now)

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [ns(1), ns(6)]


def test_a_combine_that_loses_inside_first_unprimes_all_its_branches():
    sim = Simulator()
    e1, e2 = Event("e1"), Event("e2")
    got = []

    async def main():
        timer = Timer(ns(10))
        comb = Combine(e1.wait(), e2.wait())
        sim.call_at(ns(3), e1.set)
        fired = await First(comb, timer)
        got.append((fired is timer, sim.now, len(e1._waiters.items), len(e2._waiters.items), comb._states))
        e2.set()  # must not wake anything any more
        await sleep(ns(1))
        got.append(sim.now)

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [(True, ns(10), 0, 0, []), ns(11)]


def test_a_nested_first_that_loses_unprimes_its_own_branches():
    sim = Simulator()
    ev = Event("inner")
    sig = Signal(0)
    got = []

    async def main():
        outer_timer = Timer(ns(4))
        inner = First(ev.wait(), sig.changed(), Timer(ns(20)))
        fired = await First(inner, outer_timer)
        got.append((fired is outer_timer, sim.now, len(ev._waiters.items), len(sig._edges["changed"].items), inner._arms))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [(True, ns(4), 0, 0, [])]


def test_two_tasks_awaiting_one_first_object_wait_independently():
    sim = Simulator()
    ev = Event()
    shared = First(ev.wait(), Timer(ns(7)))
    got = []

    async def waiter(name, delay):
        await sleep(delay)
        fired = await shared
        got.append((name, sim.now, type(fired).__name__))

    sim.spawn(waiter("a", 0), name="a")
    sim.spawn(waiter("b", ns(2)), name="b")
    sim.call_at(ns(5), ev.set)
    sim.run_sync()
    assert got == [("a", ns(5), "_EventWait"), ("b", ns(5), "_EventWait")]
    assert shared._arms == []


def test_the_same_task_twice_in_first_fires_once():
    sim = Simulator()
    got = []

    async def main():
        task = sim.spawn(_finishes_at(ns(3), 1), name="t")
        fired = await First(task, task)
        got.append((fired is task, sim.now, task._joiners))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == [(True, ns(3), None)]


def test_with_timeout_over_a_finished_task_returns_its_result():
    sim = Simulator()
    got = []

    async def main():
        task = sim.spawn(_finishes_at(0, "r"), name="t")
        await sleep(ns(1))
        got.append(await with_timeout(task, ns(5)))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert got == ["r"]


@pytest.mark.parametrize("bad", [1.5, "3", None, True])
def test_sleep_and_timer_refuse_a_non_int_delay_with_the_same_message(bad):
    with pytest.raises(TypeError) as timer_err:
        Timer(bad)
    sim = Simulator()
    caught = []

    async def main():
        try:
            await sleep(bad)
        except TypeError as exc:
            caught.append(str(exc))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert caught == [str(timer_err.value)]
    assert "int number of ps" in caught[0] and "sim.ns()" in caught[0]


def test_sleep_and_timer_refuse_a_negative_delay_with_the_same_message():
    with pytest.raises(ValueError) as timer_err:
        Timer(-1)
    sim = Simulator()
    caught = []

    async def main():
        try:
            await sleep(-1)
        except ValueError as exc:
            caught.append(str(exc))

    sim.spawn(main(), name="main")
    sim.run_sync()
    assert caught == [str(timer_err.value)] == ["negative delay -1 ps: simulated time only moves forward"]
