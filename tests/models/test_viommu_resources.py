"""The device's memory is bounded by the request, not by the descriptor lengths the guest claims (issue #17).

Before the fix ``virtio_iommu_handle_command`` copied the whole device-readable part of
a chain: a 1 GiB descriptor cost 2 GiB of host memory and a 4 GiB one raised MemoryError.
QEMU reads the head, then ``virtio_iommu_iov_to_req`` of the request's own struct; so does
the model (``request_size``, ``Chain.read(size)``).  Each test measures the Python heap's
peak (tracemalloc) across one request and pins the status QEMU gives.
"""

from __future__ import annotations

import tracemalloc

import testbench
from models._viommu_requests import request_size
from models._viommu_wire import HEAD_SIZE, AttachReq, MapReq, ProbeReq, UnmapReq
from sim import ListSink
from testbench import ms
from staging import raw_machine

HIGH_RAM = 1 << 32  # the q35 high RAM starts at 4 GiB
HUGE = (1 << 32) - 8  # 4 GiB less 8 bytes: with a tail of up to 8 the chain stays under the 2^32-byte limit
BOUND = 1 << 20  # a request is at most 516 bytes; 1 MiB leaves room for the simulator's own records


async def _one_huge_request(sim, first_bytes: bytes, writable: int):
    machine, driver = await raw_machine(sim, nvme="emulated")
    sink = ListSink()
    sim.add_sink(sink)
    machine.memory.write(HIGH_RAM, first_bytes)
    tail = driver.mm.kmalloc(max(writable, 1))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        done = await driver.submit_chain([(HIGH_RAM, HUGE)], [(tail, writable)] if writable else [],
                                         reply_addr=tail, reply_len=writable)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return machine, done, peak, [r.fields["reason"] for r in sink.records if r.event == "virtio_error"]


@testbench.test(timeout=ms(50))
async def test_regression_4gib_readable_map_costs_the_request_not_the_descriptor(sim):
    """A MAP in the first 36 of ~2^32 readable bytes: read and checked as QEMU does (36 bytes), < 1 MiB of heap."""
    machine, done, peak, errors = await _one_huge_request(sim, MapReq(1, 0, 0xFFF, 0x100000, 3).pack(), 4)
    assert done.status_name == "NOENT"  # domain 1 does not exist: the body was read and checked
    assert peak < BOUND, peak
    assert (machine.transport.broken, errors) == (False, [])


@testbench.test(timeout=ms(50))
async def test_regression_4gib_readable_of_zeros_is_unsupp_within_the_bound(sim):
    """Type 0 at the head of a 4 GiB descriptor: QEMU's UNSUPP tail (used length 4), reading only the head."""
    _, done, peak, _ = await _one_huge_request(sim, b"", 4)
    assert (done.status_name, done.used_len) == ("UNSUPP", 4)
    assert peak < BOUND, peak


@testbench.test(timeout=ms(50))
async def test_regression_4gib_readable_with_a_short_tail_breaks_the_device_with_the_same_reason(sim):
    """A 2-byte writable part: the framing reason QEMU gives any short tail, NEEDS_RESET, no big read."""
    machine, done, peak, errors = await _one_huge_request(sim, AttachReq(1, 0x20).pack(), 2)
    assert done.status_name == "NO_COMPLETION"
    assert machine.transport.broken and errors == ["virtio-iommu bad head/tail size"]
    assert peak < BOUND, peak


def test_request_size_is_the_types_readable_struct_or_the_head():
    """ATTACH 20, DETACH 20, MAP 36, UNMAP 28, PROBE 72, unknown 4, a short head what there is."""
    sizes = [request_size(bytes([t, 0, 0, 0])) for t in (1, 2, 3, 4, 5, 0, 6, 0x7F)]
    assert sizes == [20, 20, 36, 28, 72, HEAD_SIZE, HEAD_SIZE, HEAD_SIZE]
    assert (AttachReq.SIZE, MapReq.SIZE, UnmapReq.SIZE, ProbeReq.SIZE) == (20, 36, 28, 72)
    assert request_size(b"\x03\x00") == 2 and request_size(b"") == 0
