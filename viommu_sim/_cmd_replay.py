"""``viommu-sim replay FILE``: send a request log through the whole stack and print each status.

Each request is written into guest memory by a raw guest driver, added to the
request queue as a two-descriptor chain (device-readable request,
device-writable tail), kicked through the notify register of the
virtio-iommu-pci BAR, and completed by the device model; the status byte the
driver reads back is what is printed.  Input: JSON Lines requests or a QEMU
``-trace 'virtio_iommu_*'`` log (auto-detected, see ``_replay_input``).

The input is streamed twice: a first pass checks every line (a bad line, or an input with no
request, is one error line before anything runs), the second parses, submits and prints one
request at a time, so memory stays flat in the number of requests.  Standard input is copied
to a temporary file during the first pass.  Only a regular file (or ``-``) is read: a FIFO or
a device is refused before it is opened for reading, as it could block or never end.  The
simulation task's outcome is checked: a failure inside it (a failed write of the output or of
the trace included) is an error, never a silent exit 0.

Each request's line echoes its fields as the input wrote them: a field given in hexadecimal
(``"virt_start": "0x1000"`` in JSON Lines, ``virt_start=0x1000`` in a QEMU log) prints as that
string, ``"0x1000"``; a decimal one (or an absent one, 0) prints as a JSON number, as before.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import stat
import sys
import tempfile
from typing import IO, Any, cast

import trio

from models import build_machine
from models.guest import encode_request, raw_viommu_platform, writable_size
from sim import Simulator

from ._options import UsageError, add_machine_flags, config_from_args, write_output
from ._replay_input import ReplayInputError, requests
from ._tracing import TraceOutput, add_trace_flags


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay a virtio-iommu request log through the simulated stack")
    p.add_argument("file", metavar="FILE", help="JSON Lines requests or a QEMU virtio_iommu_* trace log ('-' = stdin)")
    add_machine_flags(p, "machine", "device", "simulation")
    p.add_argument("--dump-state", action="store_true", help="print the device's final domains and mappings last")
    add_trace_flags(p)
    p.set_defaults(handler=run)


def _open_input(name: str) -> IO[bytes]:
    """The input file, opened for binary reading; anything but a regular file is refused."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or device is not read)"
        raise UsageError(f"{name}: {kind}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _checked_input(name: str) -> IO[bytes]:
    """The input, every line checked (first pass), rewound for the second; stdin is spooled."""
    source = sys.stdin.buffer if name == "-" else _open_input(name)
    copy: IO[bytes] | None = tempfile.TemporaryFile() if name == "-" else None
    try:
        try:
            count = sum(1 for _ in requests(source, copy))
        except ReplayInputError as exc:
            raise UsageError(f"{name}:{exc.line}: {exc.problem}") from None
        except OSError as exc:
            raise UsageError(f"{name}: {exc.strerror}") from None
        if count == 0:
            raise UsageError(f"{name}: no requests (JSON Lines objects, or virtio_iommu_attach/detach/map/unmap "
                             "lines of a QEMU trace log)")
    except BaseException:
        (copy or source).close()
        raise
    if copy is None:
        source.seek(0)
        return source
    copy.seek(0)
    return copy


#: the request fields each output line echoes, in order
ECHOED = ("domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags")
_HEX = re.compile(r"^0[xX][0-9a-fA-F_]+$")
_TRACE_ARG = re.compile(r"(\w+)=(\S*)")
_BOM = b"\xef\xbb\xbf"


class _LineTap:
    """The input as ``requests`` reads it (line by line), keeping the last line read: the line of
    the request it has just yielded."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.line = b""
        self.lineno = 0

    def readline(self, size: int = -1) -> bytes:
        self.line = self._f.readline(size)
        if self.line:
            self.lineno += 1
        return self.line


def hex_fields(raw: bytes) -> dict[str, str]:
    """The request fields a (checked) input line gives in hexadecimal, as it spells them."""
    text = raw.removeprefix(_BOM).decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            given = json.loads(text)
        except (ValueError, RecursionError):
            return {}
        if not isinstance(given, dict):
            return {}
        values = {k: v.strip() for k, v in given.items() if isinstance(v, str)}
    else:
        values = dict(_TRACE_ARG.findall(text.partition(" ")[2]))
    return {name: values[name] for name in ECHOED if name in values and _HEX.match(values[name])}


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    source = _checked_input(args.file)
    with source:
        if config.viommu == "none":
            raise UsageError("--viommu none: this machine has no virtio-iommu to replay requests into")
        trace = TraceOutput(args)
        with trace:
            sim = Simulator(seed=config.seed, sinks=trace.sinks)
            machine = build_machine(config, sim)

            async def replay() -> None:
                driver = await raw_viommu_platform(machine)
                probe_size = await driver.config(32, 4)
                tap = _LineTap(source)
                for req in requests(cast(IO[bytes], tap)):
                    if trace.failed:
                        return  # the trace cannot be written: stop, ``trace.close`` reports it
                    done = await driver.submit(encode_request(req), writable_size(req, probe_size))
                    as_read = hex_fields(tap.line) if tap.lineno == req.line else {}
                    write_output(json.dumps({
                        "op": req.op, **{name: as_read.get(name, getattr(req, name)) for name in ECHOED},
                        "status": done.status_name, "status_code": done.status,
                    }) + "\n")

            task = sim.spawn(replay(), name="replay")
            try:
                trio.run(sim.run, task)
                task.result()  # the task's own failure (an input line that changed, a failed write)
            except ReplayInputError as exc:
                raise UsageError(f"{args.file}:{exc.line}: {exc.problem} (the file changed while it was read)"
                                 ) from None
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise
                raise UsageError(f"{args.file}: {exc.strerror}") from None
            if args.dump_state:  # inside ``trace``: standard error while the trace is standard output
                write_output(json.dumps({"domains": dump_state(machine.viommu)}) + "\n")
    return 0


def dump_state(viommu: Any) -> dict[str, Any]:
    """The device's domains: attached endpoints and mappings ``[virt_start, virt_end, phys_start, flags]``."""
    state: dict[str, Any] = {}
    for dom_id in sorted(viommu.domains):
        eps = sorted(ep for ep, rec in viommu.endpoints.items() if rec.domain is not None and rec.domain.id == dom_id)
        maps = [[m.virt_start, m.virt_end, m.phys_start, m.flags] for m in viommu.mappings(dom_id)]
        state[str(dom_id)] = {"endpoints": eps, "mappings": maps}
    return state
