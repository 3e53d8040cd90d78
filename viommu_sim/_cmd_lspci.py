"""``viommu-sim lspci``: build the machine, let firmware and the guest enumerate it, print lspci.

The listing is what the guest's pciutils ``lspci`` prints (default format),
read through config space after SeaBIOS and Linux have enumerated the bus.
"""

from __future__ import annotations

import argparse

from models import build_machine
from models.guest import enumerate_bus, lspci
from sim import Simulator

from ._options import add_machine_flags, config_from_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lspci", help="list the machine's PCI functions as the guest's lspci prints them")
    add_machine_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    machine = build_machine(config, Simulator(seed=config.seed))
    devices = enumerate_bus(machine.bus, machine.memory)
    print(lspci(machine.bus, (d.bdf for d in devices)), end="")
    return 0
