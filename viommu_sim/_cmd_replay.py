"""``viommu-sim replay FILE``: send a request log through the whole stack and print each status.

Each request is written into guest memory by a raw guest driver, added to the
request queue as a two-descriptor chain (device-readable request,
device-writable tail), kicked through the notify register of the
virtio-iommu-pci BAR, and completed by the device model; the status byte the
driver reads back is what is printed.  Input: JSON Lines requests or a QEMU
``-trace 'virtio_iommu_*'`` log (auto-detected).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from models import build_machine
from models.guest import encode_request, raw_viommu_platform, writable_size
from sim import Simulator

from ._replay_input import ReplayInputError, parse_replay
from ._tracing import TraceOutput, add_trace_flags
from ._options import UsageError, add_machine_flags, config_from_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay a virtio-iommu request log through the simulated stack")
    p.add_argument("file", metavar="FILE", help="JSON Lines requests or a QEMU virtio_iommu_* trace log ('-' = stdin)")
    add_machine_flags(p, "machine", "device")
    p.add_argument("--dump-state", action="store_true", help="print the device's final domains and mappings last")
    add_trace_flags(p)
    p.set_defaults(handler=run)


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a directory") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not a UTF-8 text file") from None
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    text = _read_input(args.file)
    try:
        requests = parse_replay(text)
    except ReplayInputError as exc:
        raise UsageError(f"{args.file}:{exc.line}: {exc.problem}") from None
    if config.viommu == "none":
        raise UsageError("--viommu none: this machine has no virtio-iommu to replay requests into")
    trace = TraceOutput(args)
    sim = Simulator(seed=config.seed, sinks=trace.sinks)
    machine = build_machine(config, sim)
    results: list[dict[str, Any]] = []

    async def replay() -> None:
        driver = await raw_viommu_platform(machine)
        probe_size = await driver.config(32, 4)
        for req in requests:
            done = await driver.submit(encode_request(req), writable_size(req, probe_size))
            results.append({
                "op": req.op, "domain": req.domain, "endpoint": req.endpoint, "virt_start": req.virt_start,
                "virt_end": req.virt_end, "phys_start": req.phys_start, "flags": req.flags,
                "status": done.status_name, "status_code": done.status,
            })

    task = sim.spawn(replay(), name="replay")
    with trace:
        trio.run(sim.run, task)
    out = sys.stdout
    for r in results:
        out.write(json.dumps(r) + "\n")
    if args.dump_state:
        out.write(json.dumps({"domains": dump_state(machine.viommu)}) + "\n")
    return 0


def dump_state(viommu: Any) -> dict[str, Any]:
    """The device's domains: attached endpoints and mappings ``[virt_start, virt_end, phys_start, flags]``."""
    state: dict[str, Any] = {}
    for dom_id in sorted(viommu.domains):
        eps = sorted(ep for ep, rec in viommu.endpoints.items() if rec.domain is not None and rec.domain.id == dom_id)
        maps = [[m.virt_start, m.virt_end, m.phys_start, m.flags] for m in viommu.mappings(dom_id)]
        state[str(dom_id)] = {"endpoints": eps, "mappings": maps}
    return state
