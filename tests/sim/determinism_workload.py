"""A randomised kernel workload used by the determinism test (run as a script).

1,000+ processes draw from their own seeded streams and interact through
queues, locks, events, signals, First and with_timeout; every step is traced.
Usage: python determinism_workload.py OUT.jsonl [SEED]
"""

from __future__ import annotations

import sys

import trio

from sim import (
    Cancelled,
    Event,
    First,
    JsonlSink,
    Lock,
    Queue,
    Signal,
    Simulator,
    SimTimeoutError,
    Timer,
    ns,
    with_timeout,
)

N_PROCS = 1200
STEPS = 12


async def proc(sim: Simulator, i: int, queues: list[Queue[int]], locks: list[Lock], events: list[Event], line: Signal) -> int:
    rng = sim.rng(f"proc{i}")
    total = 0
    for step in range(STEPS):
        action = rng.randrange(7)
        await Timer(ns(rng.randrange(0, 50)))
        if action == 0:
            q = queues[rng.randrange(len(queues))]
            if not q.full():
                q.put_nowait(i * 100 + step)
                sim.trace(f"p{i}", "put", q=queues.index(q), v=i * 100 + step)
        elif action == 1:
            q = queues[rng.randrange(len(queues))]
            try:
                v = await with_timeout(q.get(), ns(rng.randrange(1, 30)))
                total += v
                sim.trace(f"p{i}", "got", v=v)
            except SimTimeoutError:
                sim.trace(f"p{i}", "get_timeout")
        elif action == 2:
            lock = locks[rng.randrange(len(locks))]
            async with lock:
                sim.trace(f"p{i}", "locked", lock=locks.index(lock))
                await Timer(ns(rng.randrange(1, 5)))
        elif action == 3:
            ev = events[rng.randrange(len(events))]
            fired = await First(ev.wait(), Timer(ns(rng.randrange(1, 40))))
            sim.trace(f"p{i}", "event_or_timer", which=type(fired).__name__)
        elif action == 4:
            ev = events[rng.randrange(len(events))]
            ev.set(i)
            ev.clear()
            sim.trace(f"p{i}", "pulse")
        elif action == 5:
            line.set(rng.randrange(3))
            sim.trace(f"p{i}", "line", v=line.value)
        else:
            child = sim.spawn(_child(sim, rng.randrange(1, 20)), name=f"child{i}")
            if rng.random() < 0.3:
                await Timer(ns(1))
                child.cancel()
            try:
                total += await child
            except Cancelled:
                sim.trace(f"p{i}", "child_cancelled")
    sim.trace(f"p{i}", "done", total=total)
    return total


async def _child(sim: Simulator, d: int) -> int:
    await Timer(ns(d))
    return d


async def watcher(sim: Simulator, line: Signal) -> None:
    while True:
        await line.rising()
        sim.trace("watcher", "rising", v=line.value)


def main(path: str, seed: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        sink = JsonlSink(f)
        sim = Simulator(seed=seed, sinks=[sink])
        queues: list[Queue[int]] = [Queue(maxsize=5, name=f"q{k}") for k in range(8)]
        locks = [Lock(name=f"l{k}") for k in range(4)]
        events = [Event(name=f"e{k}") for k in range(6)]
        line = Signal(0, name="line")
        sim.spawn(watcher(sim, line), name="watcher")
        for i in range(N_PROCS):
            sim.spawn(proc(sim, i, queues, locks, events, line), name=f"p{i}")
        trio.run(sim.run, ns(10_000))
        sim.trace("sim", "end", now=sim.now, steps=sim.steps)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
