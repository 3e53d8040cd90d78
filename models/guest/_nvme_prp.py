"""The NVMe driver's data mapping: Linux 6.7 drivers/nvme/host/pci.c ``nvme_map_data`` and its helpers.

A request's data, given as (guest-physical address, length) segments, goes through the DMA API
and comes back as the SQE's data pointer:

* one physically contiguous segment within two pages: ``dma_map_bvec`` + ``nvme_setup_prp_simple``;
* one larger segment on an I/O queue of a controller with SGLs (and ``sgl_threshold`` != 0):
  ``nvme_setup_sgl_simple``, one SGL data block descriptor;
* anything else (several segments -- the order-0 pages of direct I/O, whose average segment is
  below ``sgl_threshold``, so Linux picks PRPs -- or one large segment without SGLs):
  ``dma_map_sgtable`` then ``nvme_pci_setup_prps`` with PRP list pages from the "prp list 256" or
  "prp list page" ``dma_pool``.

``unmap_data`` is ``nvme_unmap_data``: the mapping undone and the pool blocks returned.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .._nvme_wire import SglDescriptor
from ._kmem_consts import PAGE_SIZE
from ._nvme_queue import DmaPool, Mapping, NvmeDma

if TYPE_CHECKING:
    from .._memory import GuestMemory

#: sgl_threshold module parameter: non-zero lets I/O queues use SGLs
SGL_THRESHOLD = 32 * 1024
#: dma_pool "prp list page" / "prp list 256"
PRP_POOL_PAGE, PRP_POOL_SMALL = 4096, 256
PSDT_SGL = 0x40  # NVME_CMD_SGL_METABUF in CDW0 flags


def prp_pools() -> dict[int, DmaPool]:
    """``nvme_setup_prp_pools``: the two pools by block size."""
    return {PRP_POOL_PAGE: DmaPool("prp list page", PRP_POOL_PAGE),
            PRP_POOL_SMALL: DmaPool("prp list 256", PRP_POOL_SMALL)}


def prp_list_chunks(entries: list[int], per_page: int = PAGE_SIZE // 8) -> list[list[int]]:
    """``nvme_pci_setup_prps``' list pages: each full page keeps its last slot for the link to the next."""
    chunks: list[list[int]] = []
    rest = list(entries)
    while len(rest) > per_page:
        chunks.append(rest[:per_page - 1])
        rest = rest[per_page - 1:]
    chunks.append(rest)
    return chunks


async def map_data(dma: NvmeDma, mem: GuestMemory, pools: dict[int, DmaPool], cpu: int,
                   segments: list[tuple[int, int]], direction: int, sqe: dict[str, int], *,
                   io_queue: bool, ctrl_sgls: bool) -> Mapping:
    """``nvme_map_data`` of (paddr, length) segments, filling ``sqe``'s prp1/prp2 (and flags).  One
    physically contiguous segment (the virt boundary makes the segment size unlimited): PRP simple,
    SGL simple on I/O queues of a controller with SGLs, else a PRP list.  Several: ``dma_map_sg``
    of all, then ``nvme_pci_setup_prps``."""
    if len(segments) > 1:
        dmas = await dma.map_sg(cpu, segments, direction)
        length = sum(n for _, n in segments)
        mapping = Mapping("sg", dmas[0], segments[0][0], length, direction, sg_dmas=dmas,
                          sg_segments=list(segments))
        await _setup_prps(dma, mem, pools, cpu, mapping, sqe)
        return mapping
    (paddr, length), = segments
    offset = paddr & (PAGE_SIZE - 1)
    if offset + length <= 2 * PAGE_SIZE or (io_queue and SGL_THRESHOLD and ctrl_sgls):
        addr = await dma.map_page(cpu, paddr, length, direction)
        mapping = Mapping("page", addr, paddr, length, direction)
        if offset + length <= 2 * PAGE_SIZE:  # nvme_setup_prp_simple
            first = PAGE_SIZE - offset
            sqe["prp1"], sqe["prp2"] = addr, addr + first if length > first else 0
        else:  # nvme_setup_sgl_simple
            desc = SglDescriptor(address=addr, length=length).pack()
            sqe["prp1"], sqe["prp2"] = struct.unpack("<QQ", desc)
            sqe["flags"] = PSDT_SGL
        return mapping
    (addr,) = await dma.map_sg(cpu, [(paddr, length)], direction)
    mapping = Mapping("sg", addr, paddr, length, direction)
    await _setup_prps(dma, mem, pools, cpu, mapping, sqe)
    return mapping


async def _setup_prps(dma: NvmeDma, mem: GuestMemory, pools: dict[int, DmaPool], cpu: int, mapping: Mapping,
                      sqe: dict[str, int]) -> None:
    """``nvme_pci_setup_prps`` over a DMA-contiguous mapping (dma-iommu gives a scatterlist one
    IOVA block, which ``__finalise_sg`` merges into one DMA segment)."""
    addr, length = mapping.dma, mapping.size
    first = PAGE_SIZE - (addr & (PAGE_SIZE - 1))
    entries = list(range(addr + first, addr + length, PAGE_SIZE))
    sqe["prp1"] = addr
    if len(entries) <= 1:
        sqe["prp2"] = entries[0] if entries else 0
        return
    pool = pools[PRP_POOL_SMALL if len(entries) <= PRP_POOL_SMALL // 8 else PRP_POOL_PAGE]
    chunks = prp_list_chunks(entries)
    blocks = [await pool.alloc(cpu, dma) for _ in chunks]
    mapping.pool_blocks = [(pool, d, p) for d, p in blocks]
    for i, chunk in enumerate(chunks):
        link = [blocks[i + 1][0]] if i + 1 < len(chunks) else []
        mem.write(blocks[i][1], struct.pack(f"<{len(chunk) + len(link)}Q", *chunk, *link))
    sqe["prp2"] = blocks[0][0]


async def unmap_data(dma: NvmeDma, cpu: int, m: Mapping) -> None:
    """``nvme_unmap_data``: the page or scatterlist unmapped, the PRP list blocks back to their pool."""
    if m.kind == "page":
        await dma.unmap_page(cpu, m.dma, m.size, m.direction)
    elif m.sg_segments:
        await dma.unmap_sg(cpu, m.sg_dmas, m.sg_segments, m.direction)
    else:
        await dma.unmap_sg(cpu, [m.dma], [(m.paddr, m.size)], m.direction)
    for pool, dma_addr, paddr in m.pool_blocks:
        pool.free(dma_addr, paddr)
