"""``viommu-sim lspci``: boot the guest on the machine, then print what its pciutils ``lspci`` prints.

The listing is read through config space after SeaBIOS and Linux have
enumerated the bus and the guest's drivers have bound (``models.guest.lspci_listing``):
the default listing, ``-n``/``-nn`` (numeric ids / both), ``-k`` (driver in use
and the kernel build's modules), ``-t`` (tree) and ``-v``/``-vv``/``-vvv``,
combinable as pciutils 3.9's ``lspci`` allows (``-vvv -nn``, ``-nn -k``, ``-tv``).
"""

from __future__ import annotations

import argparse

import trio

from models import MachineConfig, build_machine
from models.guest import GuestKernel, LspciOptions, boot, lspci_listing
from sim import Simulator

from ._options import add_machine_flags, config_from_args, write_output


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lspci", help="list the machine's PCI functions as the booted guest's lspci prints them")
    g = p.add_argument_group("lspci (pciutils' switches)")
    g.add_argument("-n", dest="numeric", action="count", default=0,
                   help="show numeric ids (-nn: both names and numbers)")
    g.add_argument("-v", dest="verbose", action="count", default=0, help="be verbose (-vv, -vvv: more)")
    g.add_argument("-k", dest="kernel", action="store_true", help="show the kernel driver and modules of each device")
    g.add_argument("-t", dest="tree", action="store_true", help="show the bus tree")
    add_machine_flags(p, "machine", "device", "guest")
    p.set_defaults(handler=run)


def booted_guest(config: MachineConfig) -> GuestKernel:
    """Build the machine ``config`` describes and boot the guest on it (no trace)."""
    sim = Simulator(seed=config.seed)
    machine = build_machine(config, sim)
    task = sim.spawn(boot(machine), name="boot")
    trio.run(sim.run, task)
    return task.result()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    options = LspciOptions(numeric=args.numeric, verbose=args.verbose, kernel=args.kernel, tree=args.tree)
    write_output(lspci_listing(booted_guest(config), options))
    return 0
