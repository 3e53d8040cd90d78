"""``viommu-sim``: parse flags into a MachineConfig, run a subcommand, render.

Each subcommand lives in its own ``_cmd_<name>.py`` module exposing
``register(subparsers)``; this module only assembles them (what they share is
in ``_options``).  Bad input never produces a traceback: argparse errors and
``ConfigError`` print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence

from models import ConfigError
from models.guest import OutOfMemory

from . import (
    __version__, _cmd_boot, _cmd_check_policy, _cmd_demo, _cmd_lspci, _cmd_replay, _cmd_run, _cmd_sweep, _cmd_sysfs,
)
from ._options import Parser, UsageError

_COMMANDS = (_cmd_demo, _cmd_lspci, _cmd_sysfs, _cmd_replay, _cmd_boot, _cmd_run, _cmd_sweep, _cmd_check_policy)
#: what ``viommu-sim --help`` says the program is (user text, not this module's docstring)
DESCRIPTION = ("A deterministic simulator of a VM's virtio-iommu path (QEMU q35, Linux guest, VFIO-assigned NVMe): "
               "boot the guest, run fio-like workloads, replay request logs, sweep policies.")


def build_parser() -> Parser:
    parser = Parser(prog="viommu-sim", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"viommu-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        status = int(args.handler(args) or 0)
        sys.stdout.flush()  # a buffered write fails here (a full disk): report it, not at exit
        return status
    except (ConfigError, UsageError) as exc:
        return _error(args.command, str(exc))
    except OutOfMemory as exc:
        return _error(args.command, f"the guest ran out of memory: {exc} (give it more --memory)")
    except KeyboardInterrupt:
        print(f"viommu-sim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            return 0
        if exc.filename is None and exc.strerror:  # the flush above: standard output
            _silence_stdout()
            return _error(args.command, f"cannot write standard output: {exc.strerror}")
        raise


def _error(command: str, message: str) -> int:
    """One line on stderr naming the command, exit status 2."""
    print(f"viommu-sim {command}: error: {message}", file=sys.stderr)
    return 2


def _silence_stdout() -> None:
    """Point standard output at /dev/null so the interpreter's own flush at exit cannot fail
    again (Python's documented remedy for a closed pipe)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
