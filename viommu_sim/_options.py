"""What the subcommands share: the usage error, the parser class, and the flags built from tables.

The machine flags come from ``MachineConfig``'s option table (``models._config.machine_options``),
the job flags of ``run`` from ``_job.JOB_OPTIONS``: neither is written out here.  Every machine
flag defaults to "not given" (``argparse.SUPPRESS``), so only the flags on the command line reach
the configuration and everything else keeps MachineConfig's (or a scenario file's) value.
``cli`` assembles the subcommands; the ``_cmd_*`` modules import only this module, never ``cli``.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import tomllib
from typing import Any, NoReturn

from models import GROUPS, PRESETS, MachineConfig, OptionSpec, machine_config, machine_options, preset_options

from ._job import JOB_OPTIONS, JobOption, flag_arguments
from ._nesting import MAX_NESTING, deeper_than


class UsageError(Exception):
    """A bad command-line value or input file: one line, exit 2."""


#: the largest scenario or matrix file read (a TOML file of a few tables is a few KiB)
MAX_TOML_BYTES = 1 << 20


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.  A FIFO, a device or a
    directory is refused before it is read (a FIFO would block, /dev/zero never ends): ``OSError``
    with ``strerror`` saying what is wrong, as ``open`` reports a missing file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(0, "is a directory")
        if not stat.S_ISREG(mode):
            raise OSError(0, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(0, f"larger than {limit >> 10} KiB")
    return data


def load_toml(path: str, what: str = "") -> dict[str, Any]:
    """A TOML file as a dict; every way it can be unreadable is a ``UsageError`` of one line that
    starts ``what`` (e.g. ``"--matrix: "``) and names ``path``: not there, not a regular file, over
    ``MAX_TOML_BYTES``, not UTF-8, not TOML, or nested deeper than the parser recurses."""
    try:
        data = read_bounded(path, MAX_TOML_BYTES)
    except OSError as exc:
        raise UsageError(f"{what}cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
        if deeper_than(text, toml=True):  # a bound of its own: the parser's depends on the recursion limit
            raise UsageError(f"{what}{path}: invalid TOML: nested too deeply (more than {MAX_NESTING} levels)")
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what}{path}: not a UTF-8 text file (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what}{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise UsageError(f"{what}{path}: invalid TOML: nested too deeply (more than {MAX_NESTING} levels)") from None
    except ValueError:  # tomllib's int() of more digits than Python converts (sys.get_int_max_str_digits)
        raise UsageError(f"{what}{path}: invalid TOML: an integer with too many digits") from None


def write_output(text: str) -> None:
    """Write ``text`` to standard output; a failed write (a full disk, /dev/full) is a UsageError
    naming the cause (a closed pipe stays a BrokenPipeError: the reader has gone, as for ``head``)."""
    try:
        sys.stdout.write(text)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise
        raise UsageError(f"cannot write standard output: {exc.strerror}") from None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str) -> int:
    """An integer in any of Python's literal bases (0x40201000, 0o17, 42)."""
    return int(text, 0)


_integer.__name__ = "int"  # argparse's message: "invalid int value: ..."


def _arg_type(spec: OptionSpec) -> Any:
    if spec.kind is str:
        return str
    return _integer if spec.base == 0 else int


def add_machine_flags(parser: argparse.ArgumentParser, *groups: str, defaults: dict[str, str] | None = None) -> None:
    """The machine flags of ``groups`` (``models._config.GROUPS``; default: "machine"), one
    argument group each, help texts and metavars from the option table.  ``defaults``: options
    whose default this command changes (``run`` and ``sweep`` simulate at ``detail`` fast), shown
    so in the help; the command applies them to what it runs."""
    for group in GROUPS:
        if group not in (groups or ("machine",)):
            continue
        g = parser.add_argument_group(group)
        if group == "machine":
            g.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                           help="a machine in one word: refboot = the reference captures' machine "
                           "(--nvme emulated --smp 4 --memory 2G --guest-kernel 6.12 --modules <its modules>; "
                           "TCG and the default CD-ROM are not modelled), seed = the default machine; "
                           "explicit flags override it")
        for spec in machine_options(group):
            text = spec.help
            if defaults and spec.name in defaults:
                text = text.replace(f"(default {spec.default_text}", f"(default {defaults[spec.name]}")
            g.add_argument(spec.flag, *spec.aliases, dest=spec.name, type=_arg_type(spec), metavar=spec.metavar,
                           default=argparse.SUPPRESS, help=text.replace("%", "%%"))


#: the machine options whose default ``run`` and ``sweep`` change: they simulate at the transaction
#: level, whose results are those of the byte level (ARCHITECTURE.md "Levels of detail")
RUN_DEFAULTS = {"detail": "fast"}


def config_from_args(args: argparse.Namespace, **extra: Any) -> MachineConfig:
    """The MachineConfig of the machine flags given on the command line (and any ``extra`` options)."""
    return machine_config({**given_machine_options(args), **extra}, label="--")


def given_machine_options(args: argparse.Namespace, *, with_preset: bool = True) -> dict[str, Any]:
    """The machine options the command line gave, by MachineConfig field name: the ``--preset``'s
    (unless ``with_preset`` is False) with the explicit flags on top."""
    given = {s.name: getattr(args, s.name) for s in machine_options() if hasattr(args, s.name)}
    return {**preset_of(args), **given} if with_preset else given


def preset_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the command line's ``--preset`` (none without one)."""
    name = getattr(args, "preset", None)
    return preset_options(name) if name is not None else {}


def _job_flag(group: Any, option: JobOption) -> None:
    group.add_argument(*option.flags, **flag_arguments(option))


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """``run``'s fio-like job flags (``--ios`` and ``--runtime`` exclusive), from ``JOB_OPTIONS``."""
    j = parser.add_argument_group("job (fio-like)")
    length = j.add_mutually_exclusive_group()
    for option in JOB_OPTIONS:
        if option.cli:
            _job_flag(length if option.name in ("ios", "runtime") else j, option)
