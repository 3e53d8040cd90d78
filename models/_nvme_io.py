"""The NVM command set: Read, Write, Compare, Write Zeroes, Dataset Management, Flush.

Models NVMe 1.4 section 6 (NVM Command Set: 6.1 Compare, 6.8 Flush, 6.9 Read, 6.15
Write, 6.16 Write Zeroes, 6.7 Dataset Management with only the Deallocate attribute
acting) on the namespace backing store (models/_nvme_namespace.py), after QEMU
hw/nvme/ctrl.c nvme_io_cmd, nvme_read / nvme_write, nvme_compare, nvme_flush and
nvme_dsm: the order of the checks (namespace, fused, opcode, PSDT, MDTS, LBA range)
decides which status a bad command gets, and QEMU's answers differ from a physical
device's where the identity's ``emulated`` flag says so.  Data moves through the
queue engine's shared path (map, link, DMA).

Timing: every command first costs the controller's firmware time (``nvme_cmd_service_ps``);
Read and Compare then wait for the media's senses and channel transfers, Write for its insert
into the write cache (or, write-through, for the media), Flush for the drain of a volatile,
enabled cache (models/_nvme_media.py: dies, channels, write cache, the seeded service-time
distribution from ``sim.rng("<name>.media")``).  Write Zeroes and Dataset Management are FTL
operations here (no media time).  The namespace's LBAs are all treated as mapped, as on a
preconditioned drive (SNIA SSS PTS 2.0: fresh-out-of-box reads of unwritten LBAs are not
representative), so a read of a never-written block costs a flash read too.
"""

from __future__ import annotations

import struct

from ._nvme_wire import (
    COMPARE_FAILURE, DNR, FEAT_VOLATILE_WC, INVALID_FIELD, INVALID_NSID, INVALID_OPCODE, IO_COMPARE, IO_FLUSH,
    IO_READ, IO_WRITE, IO_WRITE_ZEROES, LBA_OUT_OF_RANGE, NSID_BROADCAST, PSDT_PRP, SUCCESS, SubmissionEntry,
)
from ._nvme_core import ControllerCore, InflightCommand
from ._nvme_dma import CommandError
from ._nvme_media import NvmeMedia, media_spec
from ._nvme_namespace import Namespace


class NvmCommandSet(ControllerCore):
    """The NVM I/O commands, dispatched from ``_io``."""

    #: the media behind every namespace (one set of dies and one cache), made at first use
    _media_model: NvmeMedia | None = None

    @property
    def media(self) -> NvmeMedia:
        """The dies, channels and write cache (models/_nvme_media.py); kept across controller resets."""
        media = self._media_model
        if media is None:
            spec = media_spec(self.cost, emulated=self._qemu, volatile=bool(self._id_ctrl.vwc & 1))
            media = self._media_model = NvmeMedia(spec, self.sim.rng(f"{self.name}.media"))
        return media

    def _cache_enabled(self) -> bool:
        return bool(self._features.get(FEAT_VOLATILE_WC, 0) & 1)

    async def _until(self, cmd: InflightCommand, when: int) -> None:
        await self._delay(cmd, max(0, when - self.sim.now))

    # -- I/O commands (NVM command set; QEMU nvme_io_cmd) ----------------------------------------
    async def _io(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        op = sqe.opcode
        supported = op in self.identity.io_opcodes
        if not self._qemu and not supported:
            raise CommandError(INVALID_OPCODE | DNR)
        if op == IO_FLUSH and supported:
            return await self._flush(cmd)
        nsid = sqe.nsid
        if not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        ns = self.namespaces.get(nsid)
        if ns is None:  # an inactive namespace: QEMU says Invalid Field, the spec Invalid Namespace
            raise CommandError((INVALID_FIELD if self._qemu else INVALID_NSID) | DNR)
        if sqe.fuse:
            raise CommandError(INVALID_FIELD)
        if not supported:
            raise CommandError(INVALID_OPCODE | DNR)
        if sqe.psdt != PSDT_PRP and (sqe.psdt == 3 or not self._id_ctrl.sgls & 3):
            raise CommandError(INVALID_FIELD | DNR)
        if op == IO_READ:
            return await self._read(cmd, ns)
        if op == IO_WRITE or op == IO_COMPARE:
            return await self._write(cmd, ns, compare=op == IO_COMPARE)
        if op == IO_WRITE_ZEROES:
            slba, nlb = self._lba_range(sqe, ns)
            await self._delay(cmd, self.cost.nvme_cmd_service_ps)
            ns.deallocate(slba, nlb)
            return SUCCESS, 0
        return await self._dsm(cmd, ns)

    def _lba_range(self, sqe: SubmissionEntry, ns: Namespace) -> tuple[int, int]:
        slba = sqe.cdw11 << 32 | sqe.cdw10
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        if not ns.in_range(slba, nlb):
            raise CommandError(LBA_OUT_OF_RANGE | DNR)
        return slba, nlb

    async def _read(self, cmd: InflightCommand, ns: Namespace) -> tuple[int, int]:
        sqe = cmd.sqe
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        self._check_mdts(nlb * ns.block_size)
        slba, nlb = self._lba_range(sqe, ns)
        segs = await self._map(cmd, nlb * ns.block_size)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        await self._until(cmd, self.media.read(self.sim.now, slba * ns.block_size, nlb * ns.block_size))
        self._n["reads"] += 1
        await self._to_host(cmd, segs, ns.read(slba, nlb))
        return SUCCESS, 0

    async def _write(self, cmd: InflightCommand, ns: Namespace, compare: bool) -> tuple[int, int]:
        sqe = cmd.sqe
        nlb = (sqe.cdw12 & 0xFFFF) + 1
        self._check_mdts(nlb * ns.block_size)
        slba, nlb = self._lba_range(sqe, ns)
        length = nlb * ns.block_size
        segs = await self._map(cmd, length)
        data = await self._from_host(cmd, segs, length)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        offset = slba * ns.block_size
        if compare:
            await self._until(cmd, self.media.read(self.sim.now, offset, length))
            return (SUCCESS if ns.read(slba, nlb) == data else COMPARE_FAILURE), 0
        await self._until(cmd, self.media.write(self.sim.now, offset, length, cache_enabled=self._cache_enabled()))
        self._n["writes"] += 1
        ns.write(slba, data)
        return SUCCESS, 0

    async def _flush(self, cmd: InflightCommand) -> tuple[int, int]:
        nsid = cmd.sqe.nsid
        if nsid == NSID_BROADCAST:
            if self._id_ctrl.vwc & 0x6 != 0x6:  # VWC bits 2:1 = 11b: broadcast flush supported
                raise CommandError(INVALID_NSID | DNR)
        elif not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        elif nsid not in self.namespaces:
            raise CommandError((INVALID_FIELD if self._qemu else INVALID_NSID) | DNR)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        await self._until(cmd, self.media.flush(self.sim.now, cache_enabled=self._cache_enabled()))
        return SUCCESS, 0

    async def _dsm(self, cmd: InflightCommand, ns: Namespace) -> tuple[int, int]:
        """Dataset Management: only the Deallocate attribute acts (NVM 1.4 section 6.7)."""
        sqe = cmd.sqe
        nr = (sqe.cdw10 & 0xFF) + 1
        if not sqe.cdw11 & (1 << 2):
            await self._delay(cmd, self.cost.nvme_cmd_service_ps)
            return SUCCESS, 0
        data = await self._h2c(cmd, nr * 16)
        for i in range(nr):
            _cattr, nlb, slba = struct.unpack_from("<IIQ", data, 16 * i)
            if nlb and ns.in_range(slba, nlb):  # out-of-range ranges are skipped (QEMU nvme_dsm)
                ns.deallocate(slba, nlb)
        return SUCCESS, 0
