"""``viommu-sim demo``: a small kernel demonstration (processes, queue, lock, trace)."""

from __future__ import annotations

import argparse
import hashlib
import io

import trio

from sim import JsonlSink, Lock, Queue, Simulator, format_time, ns, sleep, us

from ._options import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a small deterministic kernel demo and print its trace digest")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="simulation seed (default 0)")
    p.add_argument("--requests", type=int, default=1000, metavar="N", help="requests to push through (default 1000)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.requests < 1:
        raise UsageError(f"--requests: must be at least 1, not {args.requests}")
    buf = io.StringIO()
    sim = Simulator(seed=args.seed, sinks=[JsonlSink(buf)])
    queue: Queue[int] = Queue(maxsize=8, name="requestq")
    lock = Lock(name="request_lock")
    done: list[int] = []

    async def vcpu(i: int) -> None:
        rng = sim.rng(f"vcpu{i}")
        for n in range(i, args.requests, 4):
            await sleep(ns(rng.randrange(100, 2000)))
            async with lock:  # like viommu's request lock: one submitter at a time
                await queue.put(n)
                sim.trace(f"vcpu{i}", "kick", req=n)

    async def device() -> None:
        rng = sim.rng("device")
        while len(done) < args.requests:
            req = await queue.get()
            await sleep(ns(rng.randrange(200, 800)))
            done.append(req)
            sim.trace("device", "complete", req=req)

    for i in range(4):
        sim.spawn(vcpu(i), name=f"vcpu{i}")
    dev = sim.spawn(device(), name="device")
    trio.run(sim.run, dev)
    digest = hashlib.sha256(buf.getvalue().encode()).hexdigest()[:16]
    print(f"{args.requests} requests from 4 vCPUs through one queue in {format_time(sim.now)} simulated "
          f"({sim.now / us(1):.1f} us), {sim.steps} kernel steps")
    print(f"trace: {len(buf.getvalue().splitlines())} records, sha256 {digest} (same seed -> same digest)")
    return 0
