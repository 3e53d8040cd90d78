"""``viommu-sim``: parse flags into a MachineConfig, run a subcommand, render.

Each subcommand lives in its own ``_cmd_<name>.py`` module exposing
``register(subparsers)`` and is listed in ``_COMMANDS``.
Bad input never produces a traceback: argparse errors and ``ConfigError``
print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NoReturn, Sequence

from models._config import ConfigError, MachineConfig

from . import __version__

_COMMANDS = ("demo", "lspci", "replay", "boot", "run", "sweep")


class UsageError(Exception):
    """A bad command-line value or input file: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_machine_flags(parser: argparse.ArgumentParser) -> None:
    """The machine flags shared by every subcommand that builds a machine."""
    g = parser.add_argument_group("machine")
    g.add_argument("--smp", type=int, default=4, metavar="N", help="number of vCPUs (default 4)")
    g.add_argument("--memory", "-m", default="64G", metavar="SIZE", help="guest RAM, QEMU -m syntax (default 64G)")
    g.add_argument("--nvme", default="vfio", metavar="vfio|emulated|none",
                   help="00:04.0: passed-through PM173X (vfio), QEMU's emulated NVMe, or none (default vfio)")
    g.add_argument("--aw-bits", type=int, default=64, metavar="N", help="virtio-iommu input address width (default 64)")
    g.add_argument("--viommu", default="on", metavar="on|none", help="00:03.0 virtio-iommu-pci present (default on)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="simulation seed (default 0)")


def machine_config(args: argparse.Namespace, **extra: Any) -> MachineConfig:
    """Build the MachineConfig from parsed machine flags (and any extra options)."""
    fields: dict[str, Any] = {
        "smp": args.smp,
        "memory": args.memory,
        "nvme": args.nvme,
        "aw_bits": args.aw_bits,
        "seed": args.seed,
        "viommu": args.viommu,
    }
    for name in ("flavor", "iommu_policy", "guest_kernel"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    fields.update(extra)
    return MachineConfig(**fields)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="viommu-sim", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"viommu-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        try:
            mod = importlib.import_module(f"viommu_sim._cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"viommu_sim._cmd_{name}":
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"viommu-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"viommu-sim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
