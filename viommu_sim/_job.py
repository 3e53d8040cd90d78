"""The fio-like job's options: one table (``JOB_OPTIONS``) and their check (``job_options``).

The table is the one spelling of each option: its TOML ``[job]`` key, its ``viommu-sim run``
flag, metavar, help text and default; the run command builds its job flags from it and the
scenario loaders their key set.  ``job_options(job)`` fills in the defaults and checks every
value, raising ``ConfigError`` naming the flag (``--bs``, ``--ramp-time``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from models import ConfigError

SECTOR = 512
#: the bytes the job addresses when ``size`` is not given (fio's ``size=``): bounds the namespace store
DEFAULT_SIZE = 16 << 20
DEFAULT_IOS = 1000
RW_MODES = ("read", "write", "randread", "randwrite", "randrw")
#: mean physically contiguous run of a job's user buffer, in pages: fitted by benchmarks/calibration.py
#: (the published measurement does not report its buffers' layout; see ARCHITECTURE.md, "Calibration")
DEFAULT_CONTIG_PAGES = 16
#: a run lies in one allocator block of at most MAX_ORDER's 1024 pages, with room to spare
MAX_RUN_PAGES = 1023
#: the longest simulated duration a job option takes, in seconds
MAX_SECONDS = 3600

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_bytes(value: object, option: str) -> int:
    """fio's size syntax: a byte count with optional k/m/g/t suffix (powers of 1024): 4096, 4k, 64K, 1M."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise ConfigError(option, f"invalid size {value!r} (e.g. 4096, 4k, 64k, 1M)")
        n = int(m.group(1)) << _SHIFT[m.group(2).lower()]
    if n <= 0:
        raise ConfigError(option, f"size must be positive, not {value!r}")
    return n


@attrs.frozen(kw_only=True)
class JobOption:
    """One job option: TOML key ``name``, flag ``--name`` (None: in scenario files only), help."""

    name: str
    metavar: str
    help: str
    #: the default as the help shows it ("" when there is none to show)
    default_text: str
    #: the command-line value's type: int, float, or str (a size, parsed by ``job_options``)
    kind: type[int] | type[float] | type[str]
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def full_help(self) -> str:
        return f"{self.help} (default {self.default_text})" if self.default_text else self.help


def _kib(n: int) -> str:
    return f"{n >> 20}M" if n % (1 << 20) == 0 else f"{n >> 10}k"


#: every job option, in the order of scenario keys (``ios``/``runtime``: one or the other on the CLI)
JOB_OPTIONS: tuple[JobOption, ...] = (
    JobOption(name="rw", metavar="MODE", help="|".join(RW_MODES), default_text="randread", kind=str),
    JobOption(name="bs", metavar="SIZE", help="block size: 4096, 4k, 64k, 1M", default_text="4k", kind=str),
    JobOption(name="iodepth", metavar="N", help="I/Os in flight per job", default_text="1", kind=int),
    JobOption(name="numjobs", metavar="N", help="jobs, job j on CPU j % smp", default_text="1", kind=int),
    JobOption(name="rwmixread", metavar="PCT", help="randrw: percent reads", default_text="50", kind=int),
    JobOption(name="ios", metavar="N", help="total I/Os", default_text=str(DEFAULT_IOS), kind=int),
    JobOption(name="runtime", metavar="SECONDS", help="simulated seconds to run instead", default_text="",
              kind=float),
    JobOption(name="size", metavar="SIZE", help="bytes of the namespace the job addresses",
              default_text=_kib(DEFAULT_SIZE), kind=str),
    JobOption(name="contig_pages", metavar="N",
              help="mean physically contiguous run of the jobs' buffers in 4 KiB pages, 1 scatters every page",
              default_text=str(DEFAULT_CONTIG_PAGES), kind=int),
    JobOption(name="ramp_time", metavar="SECONDS", help="simulated seconds to run before measuring",
              default_text="0", kind=float),
)
JOB_KEYS = tuple(o.name for o in JOB_OPTIONS)


@attrs.frozen(kw_only=True)
class JobOptions:
    """A checked job, every option filled in (field order: the order ``run`` echoes them)."""

    rw: str
    bs: int
    iodepth: int
    numjobs: int
    rwmixread: int
    #: total I/Os, or None for a ``runtime`` job
    ios: int | None
    #: simulated seconds, or None for an ``ios`` job
    runtime: float | None
    size: int
    ramp_time: float
    contig_pages: int


def _int(job: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = job.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("--" + key.replace("_", "-"), f"invalid value {value!r} (an integer from {lo} to {hi})")
    return value


def _seconds(job: Mapping[str, object], key: str, *, zero_ok: bool) -> float | None:
    """A simulated duration in seconds: a number up to 3600, above 0 (or at least 0 with ``zero_ok``)."""
    value = job.get(key, 0 if zero_ok else None)
    if value is None:
        return None
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (0 <= value if zero_ok else 0 < value) and value <= MAX_SECONDS):
        return value  # an int or a float: echoed as given
    rel = "<=" if zero_ok else "<"
    raise ConfigError("--" + key.replace("_", "-"),
                      f"invalid value {value!r} (simulated seconds, 0 {rel} {key} <= {MAX_SECONDS})")


def job_options(job: Mapping[str, object]) -> JobOptions:
    """The job's options with defaults filled in and checked (ConfigError names the bad one)."""
    unknown = [k for k in job if k not in JOB_KEYS]
    if unknown:
        raise ConfigError(f"job.{unknown[0]}", f"unknown job option (known: {', '.join(JOB_KEYS)})")
    rw = job.get("rw", "randread")
    if rw not in RW_MODES:
        raise ConfigError("--rw", f"invalid value {rw!r} (choose from {', '.join(RW_MODES)})")
    bs = parse_bytes(job.get("bs", 4096), "--bs")
    if bs % SECTOR:
        raise ConfigError("--bs", f"{bs} bytes is not a multiple of {SECTOR}")
    size = parse_bytes(job.get("size", DEFAULT_SIZE), "--size")
    if size < bs:
        raise ConfigError("--size", f"{size} bytes is smaller than one block of {bs}")
    runtime = _seconds(job, "runtime", zero_ok=False)
    ios = None if runtime is not None and "ios" not in job else _int(job, "ios", DEFAULT_IOS, 1, 10**9)
    ramp = _seconds(job, "ramp_time", zero_ok=True)
    assert ramp is not None
    return JobOptions(
        rw=str(rw),
        bs=bs,
        iodepth=_int(job, "iodepth", 1, 1, 1024),
        numjobs=_int(job, "numjobs", 1, 1, 256),
        rwmixread=_int(job, "rwmixread", 50, 0, 100),
        ios=ios,
        runtime=runtime,
        size=size,
        ramp_time=ramp,
        contig_pages=_int(job, "contig_pages", DEFAULT_CONTIG_PAGES, 1, MAX_RUN_PAGES),
    )
