"""Kernel speed against SimPy on the same workload, in one run.

Workload (as in the design study): 100 processes, 200,000 timer wake-ups in
total (2,000 each), durations drawn uniformly from 1..100 by
random.Random(12345) and precomputed; each wake-up appends the process id to a
list.  Best of 3 wall times per engine.  Both engines must produce the same
wake-up order (same (time, seq) rule), which is checked.

Memory: tracemalloc peak for 10,000 processes each parked on one timer,
divided by 10,000 (bytes per parked process, pending event included).

Last line: ``kernel/simpy throughput ratio: X.XX`` (target >= 1.5).
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

import simpy

from sim import Simulator, Timer, sleep

PROCS = 100
WAKEUPS = 200_000
PER = WAKEUPS // PROCS
PARKED = 10_000


def durations() -> list[list[int]]:
    rng = random.Random(12345)
    return [[rng.randint(1, 100) for _ in range(PER)] for _ in range(PROCS)]


def run_kernel(durs: list[list[int]]) -> list[int]:
    """The kernel's plain wait, ``await sleep(d)`` (SimPy's ``yield env.timeout(d)``)."""
    sim = Simulator()
    out: list[int] = []

    async def proc(i: int, ds: list[int]) -> None:
        append = out.append
        for d in ds:
            await sleep(d)
            append(i)

    for i, ds in enumerate(durs):
        sim.spawn(proc(i, ds))
    sim.run_sync()
    return out


def run_kernel_timer(durs: list[list[int]]) -> list[int]:
    """The same with a composable trigger object, ``await Timer(d)``."""
    sim = Simulator()
    out: list[int] = []

    async def proc(i: int, ds: list[int]) -> None:
        append = out.append
        for d in ds:
            await Timer(d)
            append(i)

    for i, ds in enumerate(durs):
        sim.spawn(proc(i, ds))
    sim.run_sync()
    return out


def run_simpy(durs: list[list[int]]) -> list[int]:
    env = simpy.Environment()
    out: list[int] = []

    def proc(i: int, ds: list[int]):  # type: ignore[no-untyped-def]
        append = out.append
        timeout = env.timeout
        for d in ds:
            yield timeout(d)
            append(i)

    for i, ds in enumerate(durs):
        env.process(proc(i, ds))
    env.run()
    return out


def best_of(fn, durs, n=3):  # type: ignore[no-untyped-def]
    best = float("inf")
    result: list[int] = []
    for _ in range(n):
        gc.collect()
        t0 = time.perf_counter()
        result = fn(durs)
        best = min(best, time.perf_counter() - t0)
    return best, result


def parked_kernel() -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sim = Simulator()

    async def proc() -> None:
        await sleep(1_000)

    for _ in range(PARKED):
        sim.spawn(proc())
    sim.run_sync(until=1)  # every process is now parked on its timer
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / PARKED


def parked_simpy() -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    env = simpy.Environment()

    def proc():  # type: ignore[no-untyped-def]
        yield env.timeout(1_000)

    for _ in range(PARKED):
        env.process(proc())
    env.run(until=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / PARKED


def simpy_wakeup_cpu() -> float:
    """CPU seconds of one SimPy timer wake-up, median of 3: the unit the other benchmarks report
    their costs in (measured in their own process, alongside them)."""
    durs = durations()
    runs = []
    for _ in range(3):
        c0 = time.process_time()
        run_simpy(durs)
        runs.append(time.process_time() - c0)
    return sorted(runs)[1] / WAKEUPS


def main() -> None:
    durs = durations()
    t_sim, order_sim = best_of(run_simpy, durs)
    t_ker, order_ker = best_of(run_kernel, durs)
    t_tmr, order_tmr = best_of(run_kernel_timer, durs)
    same = order_sim == order_ker == order_tmr
    mem_ker = parked_kernel()
    mem_sim = parked_simpy()
    print(f"workload: {PROCS} processes, {WAKEUPS} timer wake-ups, best of 3")
    print(f"simpy {simpy.__version__}: {t_sim:.3f} s, {WAKEUPS / t_sim:,.0f} wake-ups/s")
    print(f"kernel, await Timer(d): {t_tmr:.3f} s, {WAKEUPS / t_tmr:,.0f} wake-ups/s (ratio {t_sim / t_tmr:.2f})")
    print(f"kernel, await sleep(d): {t_ker:.3f} s, {WAKEUPS / t_ker:,.0f} wake-ups/s")
    print(f"same wake-up order as simpy: {'yes' if same else 'NO'}")
    print(f"bytes per parked process: kernel {mem_ker:.0f}, simpy {mem_sim:.0f}")
    print(f"kernel/simpy throughput ratio: {t_sim / t_ker:.2f}")


if __name__ == "__main__":
    main()
