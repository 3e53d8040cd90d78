"""``viommu-sim sysfs iommu_groups``: boot the guest, then list ``/sys/kernel/iommu_groups`` as it shows them.

Per group (``models.guest.iommu_groups``): its number, member devices, ``type``
(DMA, DMA-FQ or identity: the default domain the guest gave the group) and the
``reserved_regions`` lines as the kernel formats them (``0x%016llx 0x%016llx %s``),
in the layout of the reference captures' sysfs dump (``group N: devices=... type=T``,
then ``    resv: LINE``).  Takes the same machine options as ``lspci``.
"""

from __future__ import annotations

import argparse

from models.guest import iommu_groups, render_iommu_groups

from ._cmd_lspci import booted_guest
from ._options import add_machine_flags, config_from_args, write_output

#: the sysfs trees this command lists
TREES = ("iommu_groups",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sysfs", help="boot the guest and list a sysfs tree (iommu_groups) as it shows it")
    p.add_argument("tree", choices=TREES, metavar="TREE", help="the tree to list: iommu_groups")
    add_machine_flags(p, "machine", "device", "guest")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    kernel = booted_guest(config_from_args(args))
    write_output(render_iommu_groups(iommu_groups(kernel)))
    return 0
