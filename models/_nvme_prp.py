"""NVMe data pointers: walking a command's PRP entries or SGL into (IOVA, length) segments.

Follows NVMe 1.4 section 4.3 (Physical Region Page entry and list: PRP1 may start at
an offset inside a memory page, every further entry is page aligned, the last slot
of a full PRP list page chains to the next list page) and section 4.4 (Scatter
Gather List: Data Block, Segment and Last Segment descriptors), with QEMU's checks
(hw/nvme/ctrl.c nvme_map_prp, nvme_map_sgl, nvme_map_sgl_data): PRP Offset Invalid
for a misaligned entry, Invalid SGL Segment Descriptor for a segment that maps
nothing, Data SGL Length Invalid when the SGL and the transfer length disagree.

The walkers read PRP list pages and SGL segments through the controller's DMA engine
(``NvmeDma``), so each list read is a device access the IOMMU checks; a fault there
ends the command with Data Transfer Error.  Each returns the segments and the number
of list / segment reads made (the controller charges one PCIe round trip per read).
"""

from __future__ import annotations

import struct

from ._dma import DmaFault
from ._nvme_dma import DMA_SPLIT, CommandError, NvmeDma
from ._nvme_wire import (
    DATA_SGL_LEN_INVALID, DATA_TRANSFER_ERROR, DNR, INTERNAL_ERROR, INVALID_NUM_SGL_DESCRS,
    INVALID_PRP_OFFSET, INVALID_SGL_SEG_DESCR, SGL_DESCR_TYPE_INVALID, SGL_TYPE_DATA_BLOCK,
    SGL_TYPE_LAST_SEGMENT, SGL_TYPE_SEGMENT, SglDescriptor,
)

#: most SGL descriptors one command may use (QEMU caps mappings at IOV_MAX = 1024); beyond: Internal Error
SGL_MAX_DESCRIPTORS = 4096


def walk_prp(dma: NvmeDma, page: int, prp1: int, prp2: int, length: int) -> tuple[list[tuple[int, int]], int]:
    """Walk a PRP pair / PRP list (NVMe 1.4 section 4.3; QEMU nvme_map_prp).

    Returns the data segments (iova, length) and the number of PRP-list reads made.
    Raises CommandError: PRP Offset Invalid for an entry other than PRP1 / a list pointer with an
    in-page offset, Data Transfer Error when a list read faults.
    """
    first = min(length, page - (prp1 % page))
    segs = [(prp1, first)]
    left = length - first
    if not left:
        return segs, 0
    if left <= page:
        if prp2 & (page - 1):
            raise CommandError(INVALID_PRP_OFFSET | DNR)
        segs.append((prp2, left))
        return segs, 0
    reads = 0
    list_addr = prp2
    while left:  # bounded: every list page maps data pages or chains to a page-aligned list that does
        if list_addr & 7:  # a PRP list pointer is qword aligned (NVMe 1.4 Figure 108)
            raise CommandError(INVALID_PRP_OFFSET | DNR)
        nents = (page - (list_addr & (page - 1))) >> 3
        pages_left = -(-left // page)
        want = min(nents, pages_left)
        entries = _read_prp_list(dma, list_addr, want)
        reads += 1
        for i, entry in enumerate(entries):
            if i == nents - 1 and left > page:  # the last slot of a list page chains to the next
                if entry & (page - 1):
                    raise CommandError(INVALID_PRP_OFFSET | DNR)
                list_addr = entry
                break
            if entry & (page - 1):
                raise CommandError(INVALID_PRP_OFFSET | DNR)
            n = min(left, page)
            segs.append((entry, n))
            left -= n
    return segs, reads


def _read_prp_list(dma: NvmeDma, addr: int, count: int) -> tuple[int, ...]:
    try:
        raw = dma.read(addr, count * 8)
    except DmaFault as fault:
        dma.fault(fault, "prp_list")
        raise CommandError(DATA_TRANSFER_ERROR) from None
    return struct.unpack(f"<{count}Q", raw)


def walk_sgl(dma: NvmeDma, dptr: bytes, length: int, *, excess_ok: bool) -> tuple[list[tuple[int, int]], int]:
    """Walk an SGL (NVMe 1.4 section 4.4; QEMU nvme_map_sgl): data blocks, segments, last segments.

    Returns the data segments and the number of segment reads.  Bounded: every segment must
    map at least one byte, and mapping stops at ``length``.  ``excess_ok``: SGLS bit 18, data
    blocks may describe more than ``length`` bytes.
    """
    desc = SglDescriptor.unpack(dptr)
    if desc.type == SGL_TYPE_DATA_BLOCK:
        blocks, left = _sgl_data([desc], length, excess_ok)
        if left:
            raise CommandError(DATA_SGL_LEN_INVALID | DNR)
        return blocks, 0
    segs: list[tuple[int, int]] = []
    reads = 0
    seen = 0
    left = length
    while True:
        if desc.type not in (SGL_TYPE_SEGMENT, SGL_TYPE_LAST_SEGMENT):
            raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
        if not desc.length or desc.length & 0xF:
            raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
        count = desc.length // 16
        seen += count
        if seen > SGL_MAX_DESCRIPTORS:  # model limit, like QEMU's IOV_MAX cap on mappings
            raise CommandError(INTERNAL_ERROR | DNR)
        raw = b""
        for off in range(0, desc.length, DMA_SPLIT):  # one read per 4 KiB chunk of descriptors
            try:
                raw += dma.read(desc.address + off, min(DMA_SPLIT, desc.length - off))
            except DmaFault as fault:
                dma.fault(fault, "sgl_segment")
                raise CommandError(DATA_TRANSFER_ERROR) from None
            reads += 1
        descs = [SglDescriptor.unpack(raw[16 * i:16 * i + 16]) for i in range(count)]
        last = descs[-1]
        if last.type == SGL_TYPE_DATA_BLOCK:
            more, left = _sgl_data(descs, left, excess_ok)
            segs += more
            break
        if desc.type == SGL_TYPE_LAST_SEGMENT:
            raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
        before = left
        more, left = _sgl_data(descs[:-1], left, excess_ok)
        segs += more
        if left == before:  # no forward progress (QEMU rejects this to stop loops)
            raise CommandError(INVALID_SGL_SEG_DESCR | DNR)
        desc = last
    if left:
        raise CommandError(DATA_SGL_LEN_INVALID | DNR)
    return segs, reads


def _sgl_data(descs: list[SglDescriptor], left: int, excess_ok: bool) -> tuple[list[tuple[int, int]], int]:
    segs: list[tuple[int, int]] = []
    for d in descs:
        if d.type in (SGL_TYPE_SEGMENT, SGL_TYPE_LAST_SEGMENT):
            raise CommandError(INVALID_NUM_SGL_DESCRS | DNR)
        if d.type != SGL_TYPE_DATA_BLOCK:
            raise CommandError(SGL_DESCR_TYPE_INVALID | DNR)
        if not d.length:
            continue
        if not left:
            if excess_ok:  # SGLS bit 18: an SGL length larger than the data is allowed
                break
            raise CommandError(DATA_SGL_LEN_INVALID | DNR)
        n = min(left, d.length)
        segs.append((d.address, n))
        left -= n
    return segs, left

