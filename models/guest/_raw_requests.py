"""The requests the raw virtio-iommu driver sends: one flat record per request and its wire bytes.

``ReplayRequest`` is a virtio-iommu request as its fields (op, domain, endpoint,
range, physical start, flags); ``encode_request`` packs its device-readable part
(head + body, virtio spec "IOMMU Device / Device operations", the structures of
models/_viommu_wire.py) and ``writable_size`` is the device-writable part a
driver supplies for it: the 4-byte tail, or for PROBE the property buffer plus
the tail (Linux drivers/iommu/virtio-iommu.c ``viommu_probe_endpoint`` sizes it
from ``probe_size``).  ``viommu-sim replay`` builds these records from its input
(viommu_sim/_replay_input.py) and hands the bytes to ``RawViommuDriver.submit``.
"""

from __future__ import annotations

import attrs

from .._viommu_wire import (
    TAIL_SIZE,
    AttachReq,
    DetachReq,
    MapReq,
    ProbeReq,
    UnmapReq,
)

OPS = ("attach", "detach", "map", "unmap", "probe")
#: the PROBE property buffer a driver supplies by default (the device's ``probe_size``)
DEFAULT_PROBE_SIZE = 512


@attrs.frozen
class ReplayRequest:
    """One virtio-iommu request as flat fields; ``line`` is the input line it came from (1-based, 0 if none)."""

    op: str
    domain: int = 0
    endpoint: int = 0
    virt_start: int = 0
    virt_end: int = 0
    phys_start: int = 0
    flags: int = 0
    line: int = 0


def encode_request(req: ReplayRequest) -> bytes:
    """The device-readable part (head + body) of ``req`` on the wire."""
    if req.op == "attach":
        return AttachReq(req.domain, req.endpoint, req.flags).pack()
    if req.op == "detach":
        return DetachReq(req.domain, req.endpoint).pack()
    if req.op == "map":
        return MapReq(req.domain, req.virt_start, req.virt_end, req.phys_start, req.flags).pack()
    if req.op == "unmap":
        return UnmapReq(req.domain, req.virt_start, req.virt_end).pack()
    if req.op == "probe":
        return ProbeReq(req.endpoint).pack()
    raise ValueError(f"unknown op {req.op!r}")


def writable_size(req: ReplayRequest, probe_size: int = DEFAULT_PROBE_SIZE) -> int:
    """Size of the device-writable part a driver supplies for ``req`` (tail, or properties + tail)."""
    return probe_size + TAIL_SIZE if req.op == "probe" else TAIL_SIZE
