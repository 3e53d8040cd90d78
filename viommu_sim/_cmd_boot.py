"""``viommu-sim boot``: boot the guest on the machine and print its kernel log (dmesg)."""

from __future__ import annotations

import argparse
import sys

import trio

from models._machine import build_machine
from models.guest._boot import boot
from sim import Simulator

from ._tracing import TraceOutput, add_trace_flags
from .cli import add_machine_flags, machine_config


def add_guest_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("guest")
    g.add_argument("--iommu-policy", default="lazy", metavar="lazy|strict",
                   help="DMA domain TLB invalidation policy (kernel command line iommu.strict; default lazy)")
    g.add_argument("--guest-kernel", default="6.7", metavar="6.7|6.12",
                   help="guest kernel behaviour: 6.7 (the seed) or 6.12 (the reference boot; any kernel from 6.8)")
    g.add_argument("--initcall-blacklist", default="", metavar="NAME[,NAME]",
                   help="kernel command line initcall_blacklist=, e.g. agp_intel_init")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("boot", help="boot the guest and print its dmesg")
    add_machine_flags(p)
    add_guest_flags(p)
    add_trace_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    blacklist = tuple(n for n in args.initcall_blacklist.split(",") if n)
    config = machine_config(args, initcall_blacklist=blacklist)
    trace = TraceOutput(args)
    sim = Simulator(seed=config.seed, sinks=trace.sinks)
    machine = build_machine(config, sim)
    task = sim.spawn(boot(machine), name="boot")
    with trace:
        trio.run(sim.run, task)
    kernel = task.result()
    sys.stdout.write(kernel.printk.dmesg())
    return 0
