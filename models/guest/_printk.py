"""The guest kernel log (printk ring buffer) and its ``dmesg`` rendering.

Models what a Linux 6.x guest's ``dmesg`` prints: every record carries the
``local_clock()`` timestamp taken when it was logged, rendered as
``[%5lu.%06lu] `` -- seconds, then microseconds truncated from nanoseconds
(kernel/printk/printk.c ``print_time()``; util-linux dmesg uses the same
format).  Simulated time is picoseconds, so a record's stamp is
``time_ps // 1000`` ns, truncated again to microseconds.

Prefixes follow the kernel helpers:

* ``pr_info()`` -- the text already contains the file's ``pr_fmt`` prefix
  ("iommu: ...");
* ``dev_info()`` and friends -- ``"<dev_driver_string> <dev_name>: "``: the bound
  driver's name for a device with a driver ("nvme 0000:00:04.0: ",
  "virtio_iommu virtio0: "), the class name for class devices
  ("nvme nvme0: ").

``Printk.grep()`` is ``dmesg | egrep PATTERN``: a regular-expression search over
whole rendered lines, timestamps included.
"""

from __future__ import annotations

import re

import attrs

#: console log levels (include/linux/kern_levels.h); dmesg shows all of them
LOGLEVEL_ERR = 3
LOGLEVEL_WARNING = 4
LOGLEVEL_NOTICE = 5
LOGLEVEL_INFO = 6
LOGLEVEL_DEBUG = 7

_PS_PER_NS = 1_000
_NS_PER_US = 1_000
_NS_PER_S = 1_000_000_000


def format_timestamp(time_ps: int) -> str:
    """The dmesg stamp of a record logged at ``time_ps``: ``[    0.546116] ``."""
    if not isinstance(time_ps, int) or isinstance(time_ps, bool) or time_ps < 0:
        raise ValueError(f"printk time must be a non-negative int of picoseconds, not {time_ps!r}")
    nsec = time_ps // _PS_PER_NS  # local_clock() is in ns
    return f"[{nsec // _NS_PER_S:5d}.{(nsec % _NS_PER_S) // _NS_PER_US:06d}] "


def pci_name(bdf: int, segment: int = 0) -> str:
    """``pci_name()`` / ``dev_name()`` of a PCI function: ``0000:00:1f.2``."""
    if not 0 <= bdf <= 0xFFFF or not 0 <= segment <= 0xFFFF:
        raise ValueError(f"not a PCI address: segment {segment!r} bdf {bdf!r}")
    return f"{segment:04x}:{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"


def dev_prefix(driver: str, name: str) -> str:
    """The ``dev_printk`` prefix: ``"<driver or class> <device name>: "``."""
    if not driver or not name:
        raise ValueError(f"dev_printk needs a driver/class name and a device name, got {driver!r} {name!r}")
    return f"{driver} {name}: "


@attrs.frozen
class LogRecord:
    """One printk record: when it was logged, its level, and its text (prefix included)."""

    time_ps: int
    text: str
    level: int = LOGLEVEL_INFO

    def render(self) -> str:
        """The line as ``dmesg`` prints it (no trailing newline)."""
        return format_timestamp(self.time_ps) + self.text


class Printk:
    """The guest's log buffer: records in the order they were logged."""

    def __init__(self) -> None:
        self._records: list[LogRecord] = []

    def log(self, time_ps: int, text: str, level: int = LOGLEVEL_INFO) -> LogRecord:
        """``printk(level text)``: one line; a single trailing newline is dropped as the kernel does."""
        if not isinstance(text, str):
            raise TypeError(f"printk text must be str, not {type(text).__name__}")
        line = text[:-1] if text.endswith("\n") else text
        if "\n" in line:
            raise ValueError(f"one printk record is one line; split {text!r} into several calls")
        if not isinstance(level, int) or not 0 <= level <= LOGLEVEL_DEBUG:
            raise ValueError(f"printk level must be 0..7, not {level!r}")
        format_timestamp(time_ps)  # validates the time
        record = LogRecord(time_ps, line, level)
        self._records.append(record)
        return record

    def dev_printk(self, time_ps: int, driver: str, name: str, text: str, level: int = LOGLEVEL_INFO) -> LogRecord:
        """``dev_printk()``: ``text`` prefixed with the device's driver (or class) and name."""
        return self.log(time_ps, dev_prefix(driver, name) + text, level)

    def dev_info(self, time_ps: int, driver: str, name: str, text: str) -> LogRecord:
        return self.dev_printk(time_ps, driver, name, text, LOGLEVEL_INFO)

    def dev_notice(self, time_ps: int, driver: str, name: str, text: str) -> LogRecord:
        return self.dev_printk(time_ps, driver, name, text, LOGLEVEL_NOTICE)

    def dev_warn(self, time_ps: int, driver: str, name: str, text: str) -> LogRecord:
        return self.dev_printk(time_ps, driver, name, text, LOGLEVEL_WARNING)

    def dev_err(self, time_ps: int, driver: str, name: str, text: str) -> LogRecord:
        return self.dev_printk(time_ps, driver, name, text, LOGLEVEL_ERR)

    @property
    def records(self) -> tuple[LogRecord, ...]:
        return tuple(self._records)

    def lines(self) -> list[str]:
        """Every record rendered, in log order."""
        return [r.render() for r in self._records]

    def grep(self, pattern: str) -> list[str]:
        """``dmesg | egrep pattern``: rendered lines containing a match of the regular expression."""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad dmesg filter {pattern!r}: {exc}") from None
        return [line for line in self.lines() if regex.search(line)]

    def dmesg(self, pattern: str | None = None) -> str:
        """The whole log (or the lines matching ``pattern``) as text, one newline-terminated line each."""
        lines = self.lines() if pattern is None else self.grep(pattern)
        return "".join(line + "\n" for line in lines)
