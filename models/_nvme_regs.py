"""The NVMe controller's BAR0 register file and its enable / disable / shutdown handshakes.

Models NVMe 1.4 section 3.1 (CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ; doorbells
from 0x1000 with the CAP.DSTRD stride) and section 7.6 (CC.EN 0->1 bring-up to
CSTS.RDY, CC.EN 1->0 controller reset, CC.SHN normal shutdown to CSTS.SHST
complete), after QEMU hw/nvme/ctrl.c nvme_write_bar / nvme_mmio_read,
nvme_start_ctrl (its checks of ASQ/ACQ alignment, CC.CSS, CC.MPS, AQA) and
nvme_ctrl_reset.  Register writes act at once; each CC transition is applied by the
controller's control task after its CostModel latency (nvme_enable_ps,
nvme_disable_ps, nvme_shutdown_ps), in the order written, and generation counters
make a transition overtaken by a later write harmless.  Doorbell writes go to the
queue engine (models/_nvme_core.py).
"""

from __future__ import annotations

import struct

from sim import sleep

from ._nvme_wire import (
    CC_CSS_MASK, CC_CSS_SHIFT, CC_EN, CC_MPS_MASK, CC_MPS_SHIFT, CC_SHN_MASK, CC_SHN_SHIFT, CSTS_CFS,
    CSTS_RDY, CSTS_SHST_MASK, CSTS_SHST_SHIFT, DOORBELL_BASE, REGISTER_NAMES, REG_ACQ, REG_AQA, REG_ASQ,
    REG_CC, REG_INTMC, REG_INTMS, SHST_COMPLETE, SHST_OCCURRING, cc_field,
)
from ._nvme_core import CompletionQueue, ControllerCore, SubmissionQueue


class ControllerRegisters(ControllerCore):
    """BAR0 and the CC handshakes on top of the queue engine (also a PCI function reset)."""

    # -- BAR0 --------------------------------------------------------------------------------
    def _register_image(self) -> bytes:
        ident = self.identity
        return struct.pack("<QIIIIIIIIQQ", ident.cap, ident.vs, self._intms, self._intms, self._cc, 0,
                           self._csts, 0, self._aqa, self._asq, self._acq)

    def mmio_read(self, offset: int, size: int) -> int:
        """A guest read of BAR0 (NVMe 1.4 section 3.1); doorbells and unimplemented registers read 0."""
        if size not in (1, 2, 4, 8) or offset < 0 or offset + size > self.identity.bar0_size:
            if self.sim.tracing:
                self._trace("mmio_read_invalid", offset=offset, size=size)
            return 0
        image = self._register_image()
        if offset + size > len(image):
            return 0
        return int.from_bytes(image[offset:offset + size], "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """A guest write of BAR0: registers act at once, doorbells are posted (wake the engine)."""
        if not self._tasks_started:
            self._tasks_started = True
            self.sim.spawn(self._engine(), name=f"{self.name}.engine")
            self.sim.spawn(self._control(), name=f"{self.name}.control")
        if size not in (1, 2, 4, 8) or offset < 0 or offset + size > self.identity.bar0_size:
            if self.sim.tracing:
                self._trace("mmio_write_invalid", offset=offset, size=size, value=value)
            return
        if offset >= DOORBELL_BASE:
            self._doorbell(offset, size, value)
            return
        if offset & 3 or (size == 8 and offset & 7):
            if self.sim.tracing:
                self._trace("mmio_write_misaligned", offset=offset, size=size, value=value)
            return
        if size == 8:
            self._write_reg(offset, value & 0xFFFF_FFFF)
            self._write_reg(offset + 4, value >> 32 & 0xFFFF_FFFF)
        elif size == 4:
            self._write_reg(offset, value & 0xFFFF_FFFF)
        else:  # sub-dword write: merge into the dword (read-modify-write)
            base = offset & ~3
            cur = int.from_bytes(self._register_image()[base:base + 4], "little") if base < 0x40 else 0
            shift = (offset - base) * 8
            mask = ((1 << (8 * size)) - 1) << shift
            self._write_reg(base, (cur & ~mask) | ((value << shift) & mask))

    def _write_reg(self, offset: int, value: int) -> None:
        if self.sim.tracing:
            self._trace("mmio_write", reg=REGISTER_NAMES.get(offset, f"0x{offset:x}"), offset=offset, value=value)
        if offset == REG_CC:
            self._write_cc(value)
        elif offset == REG_INTMS:
            self._intms |= value
        elif offset == REG_INTMC:
            self._intms &= ~value
        elif offset == REG_AQA:
            self._aqa = value & 0x0FFF_0FFF
        elif offset == REG_ASQ:
            self._asq = (self._asq & ~0xFFFF_FFFF) | value
        elif offset == REG_ASQ + 4:
            self._asq = (self._asq & 0xFFFF_FFFF) | value << 32
        elif offset == REG_ACQ:
            self._acq = (self._acq & ~0xFFFF_FFFF) | value
        elif offset == REG_ACQ + 4:
            self._acq = (self._acq & 0xFFFF_FFFF) | value << 32
        # CAP, VS, CSTS (NSSRO is not implemented: CAP.NSSRS = 0), NSSR, CMB*: read-only / ignored

    # -- CC handshakes (NVMe 1.4 section 7.6.1 initialization, 7.6.2 shutdown) ----------------
    def _write_cc(self, value: int) -> None:
        old, self._cc = self._cc, value
        shn_old = cc_field(old, CC_SHN_SHIFT, CC_SHN_MASK)
        shn_new = cc_field(value, CC_SHN_SHIFT, CC_SHN_MASK)
        if shn_new and not shn_old:
            self._shn_gen += 1
            self._set_shst(SHST_OCCURRING)
            self._transitions.put_nowait(("shutdown", self._shn_gen, (0, 0, 0, 0)))
        elif shn_old and not shn_new:
            self._shn_gen += 1
            self._set_shst(0)
        if value & CC_EN and not old & CC_EN:
            self._en_gen += 1
            # QEMU nvme_start_ctrl reads AQA/ASQ/ACQ at the moment EN is written
            self._transitions.put_nowait(("enable", self._en_gen, (value, self._aqa, self._asq, self._acq)))
        elif old & CC_EN and not value & CC_EN:
            self._en_gen += 1
            self._controller_reset()
            if self._qemu:
                self._cc = 0  # QEMU nvme_ctrl_reset zeroes CC
            self._transitions.put_nowait(("disable", self._en_gen, (0, 0, 0, 0)))

    def _set_shst(self, shst: int) -> None:
        self._csts = (self._csts & ~(CSTS_SHST_MASK << CSTS_SHST_SHIFT)) | shst << CSTS_SHST_SHIFT

    async def _control(self) -> None:
        """Apply CC transitions in the order they were written, each after its latency."""
        cost = self.cost
        while True:
            kind, gen, snap = await self._transitions.get()
            if kind == "enable":
                await sleep(cost.nvme_enable_ps)
                if gen == self._en_gen and self._cc & CC_EN:
                    self._start(*snap)
            elif kind == "disable":
                await sleep(cost.nvme_disable_ps)
                self._csts = 0  # RDY, CFS and SHST clear once the reset has completed
                if self.sim.tracing:
                    self._trace("disabled", csts=self._csts)
            else:
                await sleep(cost.nvme_shutdown_ps)
                if gen == self._shn_gen and cc_field(self._cc, CC_SHN_SHIFT, CC_SHN_MASK):
                    self._set_shst(SHST_COMPLETE)
                    if self.sim.tracing:
                        self._trace("shutdown_complete", csts=self._csts)

    def start_failure(self, cc: int, aqa: int, asq: int, acq: int) -> str | None:
        """Why CC.EN=1 with these registers fails (QEMU nvme_start_ctrl), or None if it succeeds."""
        cap = self.identity.cap
        mps = cc_field(cc, CC_MPS_SHIFT, CC_MPS_MASK)
        page = 1 << (12 + mps)
        css = cc_field(cc, CC_CSS_SHIFT, CC_CSS_MASK)
        if asq & (page - 1):
            return f"ASQ 0x{asq:x} is not aligned to the {page} B memory page"
        if acq & (page - 1):
            return f"ACQ 0x{acq:x} is not aligned to the {page} B memory page"
        if not (cap >> 37) & (1 << css):
            return f"CC.CSS {css} is not supported by CAP.CSS"
        if mps < (cap >> 48) & 0xF:
            return f"CC.MPS {mps} is below CAP.MPSMIN"
        if mps > (cap >> 52) & 0xF:
            return f"CC.MPS {mps} is above CAP.MPSMAX"
        if not aqa & 0xFFF:
            return "AQA.ASQS is 0"
        if not (aqa >> 16) & 0xFFF:
            return "AQA.ACQS is 0"
        return None

    def _start(self, cc: int, aqa: int, asq: int, acq: int) -> None:
        failure = self.start_failure(cc, aqa, asq, acq)
        if failure is not None:
            self._csts = CSTS_CFS  # QEMU: CSTS = NVME_CSTS_FAILED
            if self.sim.tracing:
                self._trace("start_failed", reason=failure, csts=self._csts)
            return
        self._page_size = 1 << (12 + cc_field(cc, CC_MPS_SHIFT, CC_MPS_MASK))
        acq_size, asq_size = ((aqa >> 16) & 0xFFF) + 1, (aqa & 0xFFF) + 1
        self._cqs[0] = CompletionQueue(0, acq, acq_size, vector=0, ien=True)
        self._sqs[0] = SubmissionQueue(0, asq, asq_size, cqid=0)
        self._cqs[0].sqids.append(0)
        self._host_timestamp, self._timestamp_set_ps = 0, self.sim.now  # QEMU nvme_set_timestamp(n, 0)
        self._ready = True
        self._csts |= CSTS_RDY
        if self.sim.tracing:
            self._trace("ready", csts=self._csts, asq=asq, acq=acq, asq_size=asq_size, acq_size=acq_size,
                        page_size=self._page_size)
        self._wake.set()

    def _controller_reset(self) -> None:
        """CC.EN 1->0 (QEMU nvme_ctrl_reset): delete all queues, drop outstanding commands and AERs."""
        self._epoch += 1
        self._ready = False
        self._halted = False
        self._sqs.clear()
        self._cqs.clear()
        self._qs_created = False
        self._aer_reqs.clear()
        self._aer_events.clear()
        self._aer_mask = 0
        self._dbbuf = None
        if self.sim.tracing:
            self._trace("reset", epoch=self._epoch)

    def reset(self) -> None:
        """PCI function reset (FLR / system reset): registers to their power-on values at once."""
        self._en_gen += 1
        self._shn_gen += 1
        self._controller_reset()
        self._cc = self._csts = self._aqa = self._asq = self._acq = self._intms = 0

    def bus_master_changed(self) -> None:
        """The PCI command register changed: re-examine pending work."""
        self._wake.set()

