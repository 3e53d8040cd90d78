"""``viommu-sim``: parse flags into a MachineConfig, run a subcommand, render.

Each subcommand lives in its own ``_cmd_<name>.py`` module exposing
``register(subparsers)``; this module only assembles them (what they share is
in ``_options``).  Bad input never produces a traceback: argparse errors and
``ConfigError`` print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from models import ConfigError

from . import __version__, _cmd_boot, _cmd_demo, _cmd_lspci, _cmd_replay, _cmd_run, _cmd_sweep
from ._options import Parser, UsageError

_COMMANDS = (_cmd_demo, _cmd_lspci, _cmd_replay, _cmd_boot, _cmd_run, _cmd_sweep)


def build_parser() -> Parser:
    parser = Parser(prog="viommu-sim", description=__doc__.splitlines()[0] if __doc__ else None)
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
