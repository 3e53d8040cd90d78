"""NVMe controller with a DMA engine that reaches guest memory only through an IOMMU port.

This module puts the controller together; each room models one seam of the spec:

* models/_nvme_regs.py -- BAR0 registers and the CC.EN / CC.SHN handshakes (3.1, 7.6)
* models/_nvme_core.py -- queue state, doorbells, SQ fetch / CQ post, command tasks (4.1)
* models/_nvme_admin.py -- the admin command set (5); models/_nvme_io.py -- the NVM command set (6)
* models/_nvme_prp.py -- PRP / SGL walking (4.3, 4.4); models/_nvme_dma.py -- the DMA engine
* models/_nvme_namespace.py -- the namespace backing store; models/_nvme_ident.py -- identities
* models/_nvme_wire.py, models/_nvme_data.py -- the wire formats (queue entries; Identify, logs)

What it models: the BAR0 register file (CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ,
doorbells; NVMe 1.4 section 3.1), the enable / disable / shutdown handshakes (section 7.6),
the admin queue and I/O queue pairs in guest memory with phase tags (section 4), the admin
commands Linux 6.7's nvme_probe issues (section 5) and the NVM I/O commands Read, Write,
Flush, Compare, Write Zeroes and Dataset Management (NVM command set section 6) on a sparse
namespace backing store.  Behaviour follows QEMU's hw/nvme/ctrl.c where the emulated
identity is concerned (nvme_write_bar, nvme_start_ctrl, nvme_process_db, nvme_process_sq,
nvme_post_cqes, nvme_map_prp, nvme_map_sgl, nvme_identify, nvme_get/set_feature,
nvme_get_log, nvme_create_cq/sq, nvme_del_cq/sq, nvme_aer, nvme_abort) and the NVMe spec
otherwise; the facts come from the reference notes on PCI and NVMe (pci-nvme.md, sections 4-7).

Two identities (``IDENTITIES``): "vfio" is the seed's Samsung PM173X passed through with
VFIO (IDs and Identify data from the reference's PM1733 id-ctrl dump; every value that is a
guess is listed in ``NvmeIdentity.guesses``; models/_nvme_ident.py), "emulated" is QEMU's NVMe device 1b36:0010
(CAP/VS/Identify as nvme_init_ctrl builds them; QEMU 8.2-era feature set).

DMA engine.  Every device access -- SQ entry fetch, PRP list / SGL segment fetch, data,
CQ entry post, shadow doorbells -- goes through the ``DmaPort`` at the moment of access,
split at 4 KiB IOVA boundaries, reads needing READ and writes WRITE permission (the port
enforces).  A ``DmaFault`` (models._dma's, shared by all device ports) is handled as the identity's hardware does (reference 5.3):

* emulated (QEMU): a data or PRP/SGL access fault completes the command with Data Transfer
  Error (no DNR); an SQ-entry fetch or CQ-entry post fault sets CSTS to CFS only (QEMU stores
  NVME_CSTS_FAILED, clearing RDY) and QEMU keeps accepting doorbells, so this model does too.
* vfio (a physical device behind the host IOMMU): the host IOMMU (the port) records the
  fault; the guest sees no fault event.  Faulting *reads* fail the command with Data Transfer
  Error, an SQ fetch fault is fatal (CSTS.RDY|CFS, processing stops until reset); faulting
  *writes* are posted and silently dropped, so a Read completes with Success and its data is
  lost, and a dropped CQ entry still advances the tail and raises the interrupt.  The PM1733's
  exact reaction is unknown (firmware specific); this is the reference's "typical" behaviour.

Bus mastering.  With the PCI command register's Bus Master Enable clear the doorbell write is
still accepted (MMIO needs only Memory Space Enable), but no DMA happens: the vfio device
issues no requests, so the command waits until bus mastering is back and the controller is
woken (next doorbell or ``bus_master_changed()``); QEMU routes the SQ-entry fetch through the
disabled bus-master address space, the read fails and nvme_process_sq sets CFS (inferred from
hw/pci/pci.c bus_master_enable_region + nvme_process_sq).

Timing (all from ``CostModel``): the CC.EN/SHN handshakes take nvme_enable_ps /
nvme_disable_ps / nvme_shutdown_ps, applied by the controller's control task; each command
costs one pcie_latency_ps for its SQ-entry read, one per PRP-list/SGL-segment page read, one
for its data burst and one for the CQ-entry write, plus nvme_cmd_service_ps of media/firmware
time; data bursts share one link whose bandwidth is nvme_bandwidth_bytes_per_s (transfer time
``ceil(bytes * 10**12 / bandwidth)`` ps, integer math), reserved first come first served.

Arbitration: round robin across submission queues in qid order (admin SQ 0 first; CC.AMS is
stored, both identities report CAP.AMS = 0, so only round robin exists), one
command per SQ per round, until no SQ has a fetchable entry; every fetched command runs
concurrently in its own sim task and completions are posted in the order commands finish.
A CQ that is full ((tail + 1) % size == head) holds further completions until the host moves
its head (QEMU nvme_post_cqes).  Interrupt coalescing is not modeled: one MSI-X message per
batch of CQ entries posted to an interrupt-enabled CQ.

Bad doorbell writes (QEMU nvme_process_db and NVMe 1.4 section 3.1.24/25): a doorbell for a
queue that does not exist, an SQ tail or CQ head >= the queue size, are ignored; if an
Asynchronous Event Request is outstanding an Error event completes it ("Write to Invalid
Doorbell Register" 00h / "Invalid Doorbell Write Value" 01h, log page 01h).  Misaligned
doorbell writes are ignored.

Trace events (source = the controller's name): mmio_write, mmio_write_invalid, mmio_write_misaligned,
mmio_read_invalid, doorbell, doorbell_invalid, doorbell_ignored, ready, start_failed, disabled,
shutdown_complete, reset, bus_master_off, fetch, complete, post_cqe, msix, dma_fault, cfs, aer,
create_cq, create_sq, delete_sq, delete_cq.

Not modeled (answered Invalid Command Opcode): Namespace Management/Attachment, Format NVM,
Firmware Commit/Download, Device Self-test, Directives, NVMe-MI, Sanitize, reservations,
Write Uncorrectable, Verify, Copy, zoned commands.  Also absent: CMB/PMR, SR-IOV, metadata and
protection information, SGL Bit Bucket / keyed descriptors and the SGLS alignment rules, the
Error Information log's entries (the page reads as zeros), interrupt coalescing, INTx/MSI.
"""

from __future__ import annotations

from ._nvme_admin import AdminCommandSet
from ._nvme_core import InflightCommand
from ._nvme_io import NvmCommandSet
from ._nvme_regs import ControllerRegisters


class NvmeController(ControllerRegisters, AdminCommandSet, NvmCommandSet):
    """An NVMe controller: BAR0 handler, command engine and DMA engine.

    ``dma`` is the IOMMU-side port, ``msix(vector)`` delivers an MSI-X message through the PCI
    function, ``bus_master()`` reads the PCI command register's Bus Master Enable bit.
    Call ``bus_master_changed()`` when the guest sets it so pending work resumes.
    """

    async def _execute(self, cmd: InflightCommand) -> tuple[int, int]:
        """Admin SQ 0 goes to the admin command set (after the firmware time of a physical
        device), every other SQ to the NVM command set."""
        if cmd.sq.qid == 0:
            if not self._qemu:
                await self._delay(cmd, self.cost.nvme_admin_firmware_ps)
            return await self._admin(cmd)
        return await self._io(cmd)
