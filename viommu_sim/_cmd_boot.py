"""``viommu-sim boot``: boot the guest on the machine and print its kernel log (dmesg).

With ``--trace -`` the trace is standard output and the dmesg goes to standard error (``_tracing``).
"""

from __future__ import annotations

import argparse
import sys

import trio

from models import build_machine
from models.guest import boot
from sim import Simulator

from ._options import add_machine_flags, config_from_args
from ._tracing import TraceOutput, add_trace_flags


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("boot", help="boot the guest and print its dmesg")
    add_machine_flags(p, "machine", "device", "guest", "simulation")
    add_trace_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    trace = TraceOutput(args)
    sim = Simulator(seed=config.seed, sinks=trace.sinks)
    machine = build_machine(config, sim)
    task = sim.spawn(boot(machine), name="boot")
    with trace:
        trio.run(sim.run, task)
        kernel = task.result()
        sys.stdout.write(kernel.printk.dmesg())  # standard error while the trace is standard output
    return 0
