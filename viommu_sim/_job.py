"""The fio-like job's options: one table (``JOB_OPTIONS``), their value syntax and their check.

The table is the one spelling of each option: its TOML ``[job]`` / fio job-file key, its
``viommu-sim run`` flags (``--ramp-time`` and fio's ``--ramp_time``, aliases such as fio's
``--readwrite``), metavar, help text and default; the run command builds its job flags from it,
the scenario and job-file loaders their key set.  ``job_options(job)`` fills in the defaults and
checks every value, raising ``ConfigError`` naming the flag (``--bs``, ``--ramp-time``, ...).

Values follow fio's parse.c with its default ``kb_base=1024``: sizes take ``k``/``kb``, ``m``,
``g``, ``t``, ``p`` in any case as powers of 1024, while the IEC spellings ``kib``, ``mib``, ...
are powers of 1000 (fio's compatibility mode: "power-of-10 values with IEC prefixes"); ``size``
also takes a percentage of the namespace (``10%``).  Times take ``us``/``usec``, ``ms``/``msec``,
``s``, ``m``, ``h``, ``d``, and a bare number is seconds (fio's ``runtime`` and ``ramp_time``).
Unlike fio, an unknown suffix is an error, never a silent multiplier of 1.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import attrs

from models import ConfigError

SECTOR = 512
#: the bytes the job addresses when ``size`` is not given (fio's ``size=``): bounds the namespace store
DEFAULT_SIZE = 16 << 20
DEFAULT_IOS = 1000
#: the modes an error lists; fio's ``rw`` (alias ``readwrite``) is mixed sequential, randrw's sibling
RW_MODES = ("read", "write", "randread", "randwrite", "randrw", "rw")
#: fio's other spellings of a mode
RW_ALIASES = {"readwrite": "rw"}
#: mean physically contiguous run of a job's user buffer, in pages: fitted by benchmarks/calibration.py
#: (the published measurement does not report its buffers' layout; see ARCHITECTURE.md, "Calibration")
DEFAULT_CONTIG_PAGES = 16
#: a run lies in one allocator block of at most MAX_ORDER's 1024 pages, with room to spare
MAX_RUN_PAGES = 1023
#: the longest simulated duration a job option takes, in seconds
MAX_SECONDS = 3600
#: the job's name when none is given (fio's ``name``; a job file's section names it)
DEFAULT_NAME = "job"

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z%]*)\s*$", re.IGNORECASE)
_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
#: fio's time suffixes (parse.c get_mult_time), in microseconds
_TIME_US = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 10**6, "m": 60 * 10**6, "h": 3600 * 10**6,
            "d": 86400 * 10**6}


def _size_multiplier(suffix: str) -> int | None:
    """fio's multiplier of a size suffix (kb_base=1024), or None when it is not one."""
    s = suffix.lower()
    if s.endswith("ib") and s[:-2] in _POW and s[:-2]:
        return int(1000 ** _POW[s[:-2]])
    if s.endswith("b") and s[:-1] in _POW and s[:-1]:
        return 1 << 10 * _POW[s[:-1]]
    return 1 << 10 * _POW[s] if s in _POW else None


def parse_size(value: object, option: str, *, percent_ok: bool = False) -> int | Fraction:
    """fio's size syntax: 4096, 4k, 64K, 1M, 1g, 4kb (1024s), 4KiB (1000s); with ``percent_ok`` a
    percentage (``10%``), returned as a Fraction of the whole."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        mult = _size_multiplier(m.group(2)) if m and m.group(2) != "%" else None
        if m and m.group(2) == "%" and percent_ok:
            pct = int(m.group(1))
            if not 0 < pct <= 100:
                raise ConfigError(option, f"invalid percentage {value!r} (1% to 100% of the namespace)")
            return Fraction(pct, 100)
        if not m or mult is None:
            example = "4096, 4k, 64K, 1M, 10%" if percent_ok else "4096, 4k, 64k, 1M"
            raise ConfigError(option, f"invalid size {value!r} (e.g. {example})")
        n = int(m.group(1)) * mult
    if n <= 0:
        raise ConfigError(option, f"size must be positive, not {value!r}")
    return n


def parse_bytes(value: object, option: str) -> int:
    """A byte count in fio's size syntax (no percentage)."""
    n = parse_size(value, option)
    assert isinstance(n, int)
    return n


def parse_seconds(value: object, option: str) -> float:
    """A duration in seconds: a number (seconds), or fio's time syntax (``20ms``, ``2s``, ``1m``, ``500us``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    m = _TIME_RE.match(text)
    if m and m.group(2):
        mult = _TIME_US.get(m.group(2).lower())
        if mult is not None:
            return float(Fraction(m.group(1)) * mult / 10**6)
    elif m:
        return float(m.group(1))
    try:
        return float(text)  # Python's own float syntax (1e-3), as the flag took before
    except ValueError:
        raise ConfigError(option, f"invalid time {text!r} (seconds, or with a suffix us, ms, s, m, h, d: "
                          "20ms, 2s)") from None


@attrs.frozen(kw_only=True)
class JobOption:
    """One job option: key ``name``, flag ``--name`` (None: in scenario files only), help."""

    name: str
    metavar: str
    help: str
    #: the default as the help shows it ("" when there is none to show)
    default_text: str
    #: the command-line value's kind: int, float (seconds, fio's time syntax), str, or bool (a flag)
    kind: type[int] | type[float] | type[str] | type[bool]
    cli: bool = True
    #: fio's other names of the option (``readwrite`` for ``rw``)
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every spelling on the command line: dashes, fio's underscores, fio's aliases."""
        out = [self.flag]
        for name in (self.name, *self.aliases):
            for flag in ("--" + name, "--" + name.replace("_", "-")):
                if flag not in out:
                    out.append(flag)
        return tuple(out)

    @property
    def full_help(self) -> str:
        return f"{self.help} (default {self.default_text})" if self.default_text else self.help


def _kib(n: int) -> str:
    return f"{n >> 20}M" if n % (1 << 20) == 0 else f"{n >> 10}k"


#: every job option, in the order of scenario keys (``ios``/``runtime``: one or the other on the CLI)
JOB_OPTIONS: tuple[JobOption, ...] = (
    JobOption(name="rw", metavar="MODE", help="read|write|randread|randwrite|randrw|rw (rw, readwrite: mixed "
              "sequential)", default_text="randread", kind=str, aliases=("readwrite",)),
    JobOption(name="bs", metavar="SIZE", help="block size: 4096, 4k, 64K, 1M", default_text="4k", kind=str),
    JobOption(name="iodepth", metavar="N", help="I/Os in flight per job", default_text="1", kind=int),
    JobOption(name="numjobs", metavar="N", help="jobs, job j on CPU j % smp", default_text="1", kind=int),
    JobOption(name="rwmixread", metavar="PCT", help="randrw, rw: percent reads", default_text="50", kind=int),
    JobOption(name="ios", metavar="N", help="total I/Os of all the jobs (fio's number_ios is per job)",
              default_text=str(DEFAULT_IOS), kind=int),
    JobOption(name="runtime", metavar="TIME", help="simulated time to run instead: seconds, or 20ms, 2s, 1m",
              default_text="", kind=float),
    JobOption(name="size", metavar="SIZE", help="bytes of the namespace the job addresses, or a percentage of it",
              default_text=_kib(DEFAULT_SIZE), kind=str),
    JobOption(name="contig_pages", metavar="N",
              help="mean physically contiguous run of the jobs' buffers in 4 KiB pages, 1 scatters every page",
              default_text=str(DEFAULT_CONTIG_PAGES), kind=int),
    JobOption(name="ramp_time", metavar="TIME", help="simulated time to run before measuring: seconds, or 20ms",
              default_text="0", kind=float),
    JobOption(name="name", metavar="NAME", help="the job's name in reports (fio's name)", default_text=DEFAULT_NAME,
              kind=str),
    JobOption(name="number_ios", metavar="N", help="I/Os per job (fio's number_ios), with --runtime whichever "
              "ends first", default_text="", kind=int),
    JobOption(name="time_based", metavar="", help="run for --runtime (fio's time_based; sequential offsets wrap "
              "at size)", default_text="", kind=bool),
)
JOB_KEYS = tuple(o.name for o in JOB_OPTIONS)
#: the options that set a job's length: the command line's replace a file's
LENGTH_KEYS = ("ios", "runtime", "number_ios")
#: the fields ``run --json`` echoes as ``job`` (its keys before fio's options came)
ECHOED_FIELDS = ("rw", "bs", "iodepth", "numjobs", "rwmixread", "ios", "runtime", "size", "ramp_time",
                 "contig_pages")


def _to_cli(option: JobOption, text: str) -> Any:
    """A command-line value as the job takes it (bs in bytes, times in seconds, the rest checked later)."""
    if option.kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(option.flag, f"invalid int value: {text!r}") from None
    if option.kind is float:
        return parse_seconds(text, option.flag)
    if option.name == "bs":
        return parse_bytes(text, option.flag)
    if option.name == "size":
        parse_size(text, option.flag, percent_ok=True)
    return text


class JobFlag(argparse.Action):
    """A job flag: converts its value as ``_to_cli`` does (a bad one: argparse's one-line error) and
    keeps the text as given in ``namespace.fio_given`` (fio's JSON echoes options as given)."""

    def __init__(self, option_strings: list[str], dest: str, *, job_option: JobOption, **kwargs: Any) -> None:
        self.job_option = job_option
        nargs = 0 if job_option.kind is bool else None
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        option = self.job_option
        text = "1" if option.kind is bool else str(values)
        try:
            value: Any = True if option.kind is bool else _to_cli(option, text)
        except ConfigError as exc:
            raise argparse.ArgumentError(self, str(exc).removeprefix(f"{option.flag}: ")) from None
        setattr(namespace, self.dest, value)
        given = dict(getattr(namespace, "fio_given", {}))
        given[option.name] = text
        namespace.fio_given = given


def flag_arguments(option: JobOption) -> dict[str, Any]:
    """``add_argument``'s keywords of a job flag (after ``*option.flags``)."""
    out: dict[str, Any] = {"dest": option.name, "action": JobFlag, "job_option": option,
                           "help": option.full_help.replace("%", "%%")}
    if option.kind is not bool:
        out["metavar"] = option.metavar
    return out


@attrs.frozen(kw_only=True)
class JobOptions:
    """A checked job, every option filled in (``ECHOED_FIELDS`` first: the order ``run`` echoes them)."""

    rw: str
    bs: int
    iodepth: int
    numjobs: int
    rwmixread: int
    #: total I/Os of all the jobs, or None for a ``runtime`` or ``number_ios`` job
    ios: int | None
    #: simulated seconds, or None
    runtime: float | None
    #: bytes addressed (0 while a ``size_percent`` waits for the namespace's size)
    size: int
    ramp_time: float
    contig_pages: int
    name: str = DEFAULT_NAME
    #: I/Os per job (fio's number_ios), or None
    number_ios: int | None = None
    time_based: bool = False
    #: ``size`` as a fraction of the namespace (fio's ``size=10%``), or None
    size_fraction: Fraction | None = None

    def echo(self) -> dict[str, Any]:
        """``run --json``'s ``job``: the ``ECHOED_FIELDS``."""
        return {name: getattr(self, name) for name in ECHOED_FIELDS}


def _int(job: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = job.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):  # a job file's text
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("--" + key.replace("_", "-"), f"invalid value {value!r} (an integer from {lo} to {hi})")
    return value


def _seconds(job: Mapping[str, object], key: str, *, zero_ok: bool) -> float | None:
    """A simulated duration in seconds: up to 3600, above 0 (or at least 0 with ``zero_ok``)."""
    flag = "--" + key.replace("_", "-")
    raw = job.get(key, 0 if zero_ok else None)
    if raw is None:
        return None
    value = parse_seconds(raw, flag) if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else raw
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (0 <= value if zero_ok else 0 < value) and value <= MAX_SECONDS):
        return value  # an int or a float: echoed as given
    rel = "<=" if zero_ok else "<"
    raise ConfigError(flag, f"invalid value {raw!r} (simulated seconds, 0 {rel} {key} <= {MAX_SECONDS})")


def _bool(job: Mapping[str, object], key: str) -> bool:
    value = job.get(key, False)
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1", ""):  # fio's job file: "time_based" alone, or =0 / =1
        return value in (1, "1", "")
    raise ConfigError("--" + key.replace("_", "-"), f"invalid value {value!r} (0 or 1)")


def job_options(job: Mapping[str, object]) -> JobOptions:
    """The job's options with defaults filled in and checked (ConfigError names the bad one)."""
    unknown = [k for k in job if k not in JOB_KEYS]
    if unknown:
        raise ConfigError(f"job.{unknown[0]}", f"unknown job option (known: {', '.join(JOB_KEYS)})")
    rw = job.get("rw", "randread")
    rw = RW_ALIASES.get(rw, rw) if isinstance(rw, str) else rw
    if rw not in RW_MODES:
        raise ConfigError("--rw", f"invalid value {rw!r} (choose from {', '.join(RW_MODES)})")
    bs = parse_bytes(job.get("bs", 4096), "--bs")
    if bs % SECTOR:
        raise ConfigError("--bs", f"{bs} bytes is not a multiple of {SECTOR}")
    size = parse_size(job.get("size", DEFAULT_SIZE), "--size", percent_ok=True)
    if isinstance(size, int) and size < bs:
        raise ConfigError("--size", f"{size} bytes is smaller than one block of {bs}")
    runtime = _seconds(job, "runtime", zero_ok=False)
    number_ios = _int(job, "number_ios", 1, 1, 10**9) if "number_ios" in job else None
    time_based = _bool(job, "time_based")
    if time_based and runtime is None:
        raise ConfigError("--time-based", "needs --runtime (fio's time_based runs for the runtime)")
    counted = runtime is not None or number_ios is not None
    ios = None if counted and "ios" not in job else _int(job, "ios", DEFAULT_IOS, 1, 10**9)
    ramp = _seconds(job, "ramp_time", zero_ok=True)
    assert ramp is not None
    name = job.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
        raise ConfigError("--name", f"invalid value {name!r} (1 to 256 printable characters)")
    return JobOptions(
        rw=str(rw),
        bs=bs,
        iodepth=_int(job, "iodepth", 1, 1, 1024),
        numjobs=_int(job, "numjobs", 1, 1, 256),
        rwmixread=_int(job, "rwmixread", 50, 0, 100),
        ios=ios,
        runtime=runtime,
        size=size if isinstance(size, int) else 0,
        ramp_time=ramp,
        contig_pages=_int(job, "contig_pages", DEFAULT_CONTIG_PAGES, 1, MAX_RUN_PAGES),
        name=name,
        number_ios=number_ios,
        time_based=time_based,
        size_fraction=size if isinstance(size, Fraction) else None,
    )


