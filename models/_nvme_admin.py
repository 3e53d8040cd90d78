"""The NVMe admin command set: Identify, logs, features, queue management, AER, Abort.

Models NVMe 1.4 section 5 as far as Linux 6.7's nvme_probe / nvme_reset_work and the
driver's error handling issue it: Identify (5.15: controller, namespace, active and
present lists, descriptors, command-set structures), Get Log Page (5.14.1: error,
SMART, firmware slot, command effects), Get / Set Features (5.21: number of queues,
temperature threshold, interrupt vector configuration, timestamp, host behavior,
...), Create / Delete I/O Submission and Completion Queue (5.3-5.6), Doorbell
Buffer Config (NVMe 1.3 5.7), Asynchronous Event Request (5.2), Abort (5.1) and
Security Send / Receive protocol 00h.  Behaviour follows QEMU hw/nvme/ctrl.c
(nvme_admin_cmd, nvme_identify, nvme_get_log, nvme_get_feature / nvme_set_feature,
nvme_create_cq / nvme_create_sq, nvme_del_cq / nvme_del_sq, nvme_dbbuf_config,
nvme_aer, nvme_abort) for the emulated identity and the spec where the physical
device answers differently.  Opcodes outside the identity's set: Invalid Command Opcode.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Awaitable, Callable

import attrs

from sim import PS_PER_MS, PS_PER_S

from ._nvme_data import (
    CMD_EFFECTS_CSUPP, CMD_EFFECTS_LBCC, ERROR_LOG_ENTRY_SIZE, SmartLog, command_effects_log,
    firmware_slot_log, ns_descriptor_list,
)
from ._nvme_wire import (
    ABORT_REQUESTED, ABORT_SQ_DELETED, ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_CREATE_CQ,
    ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG, ADMIN_DELETE_CQ, ADMIN_DELETE_SQ, ADMIN_GET_FEATURES,
    ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SECURITY_RECV, ADMIN_SECURITY_SEND, ADMIN_SET_FEATURES,
    AER_TYPE_ERROR, AER_TYPE_SMART, ASYNC_EVENT_LIMIT_EXCEEDED, CC_IOCQES_SHIFT, CC_IOSQES_SHIFT,
    CMD_SEQ_ERROR, CNS_CS_CTRL, CNS_CS_NS, CNS_CS_NS_ACTIVE_LIST, CNS_CTRL, CNS_IO_COMMAND_SET, CNS_NS,
    CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_NS_PRESENT_LIST, COMPLETION_QUEUE_INVALID, CQES_LOG2, DNR,
    FEATURE_NOT_CHANGEABLE, FEATURE_NOT_NS_SPECIFIC, FEATURE_NOT_SAVEABLE, FEAT_CAP_CHANGEABLE, FEAT_CAP_NS,
    FEAT_CMD_SET_PROFILE, FEAT_HOST_BEHAVIOR, FEAT_IRQ_CONFIG, FEAT_NUM_QUEUES, FEAT_TEMP_THRESHOLD,
    FEAT_TIMESTAMP, FEAT_VOLATILE_WC, IDENTIFY_SIZE, INVALID_FIELD, INVALID_INTERRUPT_VECTOR,
    INVALID_LOG_PAGE, INVALID_NSID, INVALID_OPCODE, INVALID_PRP_OFFSET, INVALID_QUEUE_DELETION,
    INVALID_QUEUE_ID, INVALID_QUEUE_SIZE, IO_DSM, IO_FLUSH, IO_WRITE, IO_WRITE_ZEROES, LOG_CMD_EFFECTS,
    LOG_ERROR, LOG_FW_SLOT, LOG_SMART, NSID_BROADCAST, PSDT_PRP, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED,
    SQES_LOG2, SUCCESS,
)
from ._nvme_core import DEFAULT_FEATURES, CompletionQueue, ControllerCore, Held, InflightCommand, SubmissionQueue
from ._nvme_dma import CommandError


class AdminCommandSet(ControllerCore):
    """The admin commands, dispatched from ``_admin`` by opcode (``_ADMIN``)."""

    # -- admin commands (NVMe 1.4 section 5; QEMU nvme_admin_cmd) -----------------------------
    async def _admin(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        handler = self._ADMIN.get(sqe.opcode) if sqe.opcode in self.identity.admin_opcodes else None
        if handler is None:
            raise CommandError(INVALID_OPCODE | DNR)
        if sqe.psdt != PSDT_PRP:  # SGLs shall not be used for admin commands over PCIe
            raise CommandError(INVALID_FIELD | DNR)
        if sqe.fuse:
            raise CommandError(INVALID_FIELD)
        return await handler(self, cmd)

    async def _identify(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        data = self.identify_data(sqe.cdw10 & 0xFF, sqe.nsid, sqe.cdw11 >> 24)
        await self._c2h(cmd, data)
        return SUCCESS, 0

    def identify_data(self, cns: int, nsid: int, csi: int) -> bytes:
        """The 4096-byte answer to Identify (QEMU nvme_identify), or raises CommandError."""
        if cns not in self.identity.identify_cns:
            raise CommandError(INVALID_FIELD | DNR)
        if cns == CNS_CTRL:
            return self._id_ctrl_bytes
        if cns == CNS_CS_CTRL:
            if csi != 0 or self.identity.id_ctrl_nvm is None:
                raise CommandError(INVALID_FIELD | DNR)
            return self.identity.id_ctrl_nvm
        if cns in (CNS_NS_ACTIVE_LIST, CNS_NS_PRESENT_LIST, CNS_CS_NS_ACTIVE_LIST):
            if nsid >= NSID_BROADCAST - 1:
                raise CommandError(INVALID_NSID | DNR)
            if cns == CNS_CS_NS_ACTIVE_LIST and csi != 0:
                raise CommandError(INVALID_FIELD | DNR)
            ids = [n for n in sorted(self.namespaces) if n > nsid][:1024]
            return struct.pack(f"<{len(ids)}I", *ids).ljust(IDENTIFY_SIZE, b"\0")
        if cns == CNS_IO_COMMAND_SET:  # one vector: NVM (bit 0) and Zoned (bit 2), as QEMU reports
            return struct.pack("<Q", 0x5).ljust(IDENTIFY_SIZE, b"\0")
        # namespace-specific structures
        if nsid == NSID_BROADCAST and cns == CNS_NS and not self._qemu:
            ns0 = self.identity.namespaces[0].id_ns  # capabilities common to all namespaces
            return attrs.evolve(ns0, nsze=0, ncap=0, nuse=0, nguid=bytes(16), eui64=0, nvmcap=0).pack()
        if not self._nsid_valid(nsid):
            raise CommandError(INVALID_NSID | DNR)
        ns = self.namespaces.get(nsid)
        if cns == CNS_NS_DESCR_LIST:
            if ns is None:
                raise CommandError(INVALID_FIELD | DNR)
            return ns_descriptor_list(list(ns.spec.descriptors))
        if ns is None:
            return bytes(IDENTIFY_SIZE)  # inactive namespace: a zero-filled structure
        if cns == CNS_CS_NS:
            if csi != 0:
                raise CommandError(INVALID_FIELD | DNR)
            return bytes(IDENTIFY_SIZE)  # NVM-specific namespace data: no PI, no extended LBA formats
        return ns.spec.id_ns.pack()

    async def _get_log_page(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        lid = sqe.cdw10 & 0xFF
        rae = (sqe.cdw10 >> 15) & 1
        numd = ((sqe.cdw11 & 0xFFFF) << 16 | sqe.cdw10 >> 16) + 1
        length = numd * 4
        offset = sqe.cdw13 << 32 | sqe.cdw12
        if offset & 3:
            raise CommandError(INVALID_FIELD | DNR)
        self._check_mdts(length)
        log = self.log_page(lid, sqe.nsid)
        if offset >= len(log):
            raise CommandError(INVALID_FIELD | DNR)
        if not rae:
            self._clear_events({LOG_ERROR: AER_TYPE_ERROR, LOG_SMART: AER_TYPE_SMART}.get(lid))
        await self._c2h(cmd, log[offset:offset + length])
        return SUCCESS, 0

    def log_page(self, lid: int, nsid: int) -> bytes:
        """The whole log page ``lid`` (QEMU nvme_get_log), or raises CommandError."""
        ctrl = self._id_ctrl
        if lid == LOG_ERROR:
            return bytes(ERROR_LOG_ENTRY_SIZE * (ctrl.elpe + 1))  # no error entries are recorded
        if lid == LOG_SMART:
            if nsid != NSID_BROADCAST:
                if self._qemu:
                    if nsid not in self.namespaces:
                        raise CommandError(INVALID_NSID | DNR)
                elif nsid != 0 and not ctrl.lpa & 1:
                    raise CommandError(INVALID_FIELD | DNR)
            n = self._n
            return SmartLog(
                temperature=self.identity.temperature_k,
                data_units_read=-(-(n["to_host"] >> 9) // 1000),  # units of 1000 x 512 B, rounded up
                data_units_written=-(-(n["from_host"] >> 9) // 1000),
                host_read_commands=n["reads"], host_write_commands=n["writes"],
                power_on_hours=self.sim.now // (3600 * PS_PER_S),
            ).pack()
        if lid == LOG_FW_SLOT:
            return firmware_slot_log(1, (ctrl.fr,))
        if lid == LOG_CMD_EFFECTS and ctrl.lpa & 2:
            lbcc = {IO_WRITE, IO_WRITE_ZEROES, IO_DSM, IO_FLUSH}
            return command_effects_log(
                dict.fromkeys(sorted(self.identity.admin_opcodes), CMD_EFFECTS_CSUPP),
                {op: CMD_EFFECTS_CSUPP | (CMD_EFFECTS_LBCC if op in lbcc else 0)
                 for op in sorted(self.identity.io_opcodes)},
            )
        # QEMU answers unknown log pages Invalid Field; the spec (and a real device) Invalid Log Page
        raise CommandError((INVALID_FIELD if self._qemu else INVALID_LOG_PAGE) | DNR)

    # features ------------------------------------------------------------------------------------
    def _feature_nsid_check(self, fid: int, nsid: int, set_: bool) -> None:
        caps = self.identity.features[fid]
        if caps & FEAT_CAP_NS:
            if nsid == NSID_BROADCAST and set_:
                return
            if not self._nsid_valid(nsid):
                raise CommandError(INVALID_NSID | DNR)
            if nsid not in self.namespaces:
                raise CommandError(INVALID_FIELD | DNR)
        elif set_ and nsid and nsid != NSID_BROADCAST:
            raise CommandError((FEATURE_NOT_NS_SPECIFIC if self._nsid_valid(nsid) else INVALID_NSID) | DNR)

    def _nq_result(self) -> int:
        n = self.identity.max_ioqpairs - 1
        return n | n << 16

    async def _get_features(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        fid, sel, dw11 = sqe.cdw10 & 0xFF, (sqe.cdw10 >> 8) & 0x7, sqe.cdw11
        if fid not in self.identity.features or sel > SEL_SUPPORTED:
            raise CommandError(INVALID_FIELD | DNR)
        self._feature_nsid_check(fid, sqe.nsid, set_=False)
        if sel == SEL_SUPPORTED:
            return SUCCESS, self.identity.features[fid]
        current = sel not in (SEL_DEFAULT, SEL_SAVED)  # nothing is saveable: saved = default
        if fid == FEAT_TIMESTAMP:
            await self._c2h(cmd, struct.pack("<Q", self._timestamp() if current else 0))
            return SUCCESS, 0
        if fid == FEAT_HOST_BEHAVIOR:
            await self._c2h(cmd, self._host_behavior if current else bytes(512))
            return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        if fid == FEAT_NUM_QUEUES:
            return SUCCESS, self._nq_result()
        if fid == FEAT_TEMP_THRESHOLD:
            if (dw11 >> 16) & 0xF:  # only the composite temperature sensor exists
                return SUCCESS, 0
            thsel = (dw11 >> 20) & 0x3
            if thsel > 1:
                raise CommandError(INVALID_FIELD | DNR)
            if not current:
                return SUCCESS, self._id_ctrl.wctemp if thsel == 0 else 0
            return SUCCESS, self._temp_over if thsel == 0 else self._temp_under
        if fid == FEAT_IRQ_CONFIG:
            iv = dw11 & 0xFFFF
            if iv > self.identity.max_ioqpairs:
                raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, iv | (1 << 16 if iv == 0 else 0)  # the admin vector is never coalesced
        if not current:
            return SUCCESS, DEFAULT_FEATURES.get(fid, 0)
        return SUCCESS, self._features.get(fid, 0)

    async def _set_features(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        fid, save, dw11 = sqe.cdw10 & 0xFF, sqe.cdw10 >> 31, sqe.cdw11
        caps = self.identity.features.get(fid)
        if save and not (caps or 0) & 1:  # no feature is saveable (QEMU checks this first)
            raise CommandError(FEATURE_NOT_SAVEABLE | DNR)
        if caps is None:
            raise CommandError(INVALID_FIELD | DNR)
        self._feature_nsid_check(fid, sqe.nsid, set_=True)
        if not caps & FEAT_CAP_CHANGEABLE:
            raise CommandError(FEATURE_NOT_CHANGEABLE | DNR)
        if fid == FEAT_TIMESTAMP:
            data = await self._h2c(cmd, 8)
            self._host_timestamp = struct.unpack("<Q", data)[0] & ((1 << 48) - 1)
            self._timestamp_set_ps = self.sim.now
            return SUCCESS, 0
        if fid == FEAT_HOST_BEHAVIOR:
            self._host_behavior = await self._h2c(cmd, 512)
            return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        if fid == FEAT_NUM_QUEUES:
            if self._qs_created:  # "shall only be issued ... prior to creation of any I/O queues"
                raise CommandError(CMD_SEQ_ERROR | DNR)
            if dw11 & 0xFFFF == 0xFFFF or dw11 >> 16 == 0xFFFF:
                raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, self._nq_result()  # allocated: the controller's maximum (as QEMU)
        if fid == FEAT_TEMP_THRESHOLD:
            if not (dw11 >> 16) & 0xF:
                thsel = (dw11 >> 20) & 0x3
                if thsel == 0:
                    self._temp_over = dw11 & 0xFFFF
                elif thsel == 1:
                    self._temp_under = dw11 & 0xFFFF
                else:
                    raise CommandError(INVALID_FIELD | DNR)
            return SUCCESS, 0
        if fid == FEAT_IRQ_CONFIG and (dw11 & 0xFFFF) > self.identity.max_ioqpairs:
            raise CommandError(INVALID_FIELD | DNR)
        if fid == FEAT_CMD_SET_PROFILE and dw11 & 0x1FF:
            raise CommandError(INVALID_FIELD | DNR)
        self._features[fid] = dw11 & 1 if fid == FEAT_VOLATILE_WC else dw11
        return SUCCESS, 0

    def _timestamp(self) -> int:
        """Get Features Timestamp (NVMe 1.4 Figure 305): 48-bit ms, origin 1 once the host set it."""
        elapsed_ms = (self.sim.now - self._timestamp_set_ps) // PS_PER_MS
        value = (self._host_timestamp + elapsed_ms) & ((1 << 48) - 1)
        return value | ((1 << 49) if self._host_timestamp else 0)

    # queues ----------------------------------------------------------------------------------------
    def _check_queue_common(self, qid: int, qsize: int, prp1: int) -> None:
        cc = self._cc
        if (cc >> CC_IOSQES_SHIFT) & 0xF != SQES_LOG2 or (cc >> CC_IOCQES_SHIFT) & 0xF != CQES_LOG2:
            raise CommandError(INVALID_QUEUE_SIZE | DNR)  # QEMU: entry sizes other than 64/16 B
        if not 1 <= qid <= self.identity.max_ioqpairs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        if not qsize or qsize > (self.identity.cap & 0xFFFF):
            raise CommandError(INVALID_QUEUE_SIZE | DNR)
        if prp1 & (self._page_size - 1):
            raise CommandError(INVALID_PRP_OFFSET | DNR)

    async def _create_cq(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        qid, qsize = sqe.cdw10 & 0xFFFF, sqe.cdw10 >> 16
        flags, vector = sqe.cdw11 & 0xFFFF, sqe.cdw11 >> 16
        if qid in self._cqs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        self._check_queue_common(qid, qsize, sqe.prp1)
        if vector >= self.identity.msix_vectors:
            raise CommandError(INVALID_INTERRUPT_VECTOR | DNR)
        if not flags & 1:  # CAP.CQR: queues must be physically contiguous
            raise CommandError(INVALID_FIELD | DNR)
        cq = CompletionQueue(qid, sqe.prp1, qsize + 1, vector=vector, ien=bool(flags & 2))
        if self._dbbuf is not None:
            cq.shadow = (self._dbbuf[0] + qid * 8 + 4, self._dbbuf[1] + qid * 8 + 4)
        self._cqs[qid] = cq
        self._qs_created = True
        if self.sim.tracing:
            self._trace("create_cq", qid=qid, size=qsize + 1, base=sqe.prp1, vector=vector, ien=cq.ien)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _create_sq(self, cmd: InflightCommand) -> tuple[int, int]:
        sqe = cmd.sqe
        qid, qsize = sqe.cdw10 & 0xFFFF, sqe.cdw10 >> 16
        flags, cqid = sqe.cdw11 & 0xFFFF, sqe.cdw11 >> 16
        if not cqid or cqid not in self._cqs:
            raise CommandError(COMPLETION_QUEUE_INVALID | DNR)
        if qid in self._sqs:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        self._check_queue_common(qid, qsize, sqe.prp1)
        if not flags & 1:
            raise CommandError(INVALID_FIELD | DNR)
        sq = SubmissionQueue(qid, sqe.prp1, qsize + 1, cqid)
        if self._dbbuf is not None:
            sq.shadow = (self._dbbuf[0] + qid * 8, self._dbbuf[1] + qid * 8)
        self._sqs[qid] = sq
        self._cqs[cqid].sqids.append(qid)
        if self.sim.tracing:
            self._trace("create_sq", qid=qid, size=qsize + 1, base=sqe.prp1, cqid=cqid, qprio=(flags >> 1) & 3)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _delete_sq(self, cmd: InflightCommand) -> tuple[int, int]:
        qid = cmd.sqe.cdw10 & 0xFFFF
        sq = self._sqs.get(qid)
        if not qid or sq is None:
            raise CommandError(INVALID_QUEUE_ID | DNR)
        cq = self._cqs[sq.cqid]
        for victim in list(sq.inflight):  # QEMU nvme_sq_cancel_inflight
            self._complete(victim, ABORT_SQ_DELETED)
            victim.aborted = True
        self._post_cqes(cq)
        cq.pending = collections.deque(p for p in cq.pending if p[0].sq is not sq)  # unpostable: dropped
        del self._sqs[qid]
        cq.sqids.remove(qid)
        if self.sim.tracing:
            self._trace("delete_sq", qid=qid)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _delete_cq(self, cmd: InflightCommand) -> tuple[int, int]:
        qid = cmd.sqe.cdw10 & 0xFFFF
        cq = self._cqs.get(qid)
        if not qid or cq is None:
            # QEMU answers Completion Queue Invalid; the spec says Invalid Queue Identifier
            raise CommandError((COMPLETION_QUEUE_INVALID if self._qemu else INVALID_QUEUE_ID) | DNR)
        if cq.sqids:
            raise CommandError(INVALID_QUEUE_DELETION)
        del self._cqs[qid]
        if self.sim.tracing:
            self._trace("delete_cq", qid=qid)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    async def _dbbuf_config(self, cmd: InflightCommand) -> tuple[int, int]:
        """Doorbell Buffer Config (NVMe 1.3 section 5.7; QEMU nvme_dbbuf_config): shadow doorbells."""
        dbs, eis = cmd.sqe.prp1, cmd.sqe.prp2
        if dbs & (self._page_size - 1) or eis & (self._page_size - 1):
            raise CommandError(INVALID_FIELD | DNR)
        self._dbbuf = (dbs, eis)
        for qid in sorted(self._sqs):
            sq = self._sqs[qid]
            sq.shadow = (dbs + qid * 8, eis + qid * 8)
            self._write_shadow(sq.shadow[0], sq.tail)
        for qid in sorted(self._cqs):
            cq = self._cqs[qid]
            cq.shadow = (dbs + qid * 8 + 4, eis + qid * 8 + 4)
            self._write_shadow(cq.shadow[0], cq.head)
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 0

    # asynchronous events and abort -------------------------------------------------------------------
    async def _async_event_request(self, cmd: InflightCommand) -> tuple[int, int]:
        if len(self._aer_reqs) > self._id_ctrl.aerl:  # AERL is 0's based
            raise CommandError(ASYNC_EVENT_LIMIT_EXCEEDED)
        self._aer_reqs.append(cmd)
        self._process_aers()
        raise Held

    def _clear_events(self, etype: int | None) -> None:
        if etype is None:
            return
        self._aer_mask &= ~(1 << etype)
        self._aer_events = collections.deque(e for e in self._aer_events if e[0] != etype)

    async def _abort(self, cmd: InflightCommand) -> tuple[int, int]:
        sqid, cid = cmd.sqe.cdw10 & 0xFFFF, cmd.sqe.cdw10 >> 16
        sq = self._sqs.get(sqid)
        if sq is None:
            raise CommandError(INVALID_FIELD | DNR, result=1)
        for victim in sq.inflight:
            if victim.sqe.cid == cid and victim is not cmd:
                if victim in self._aer_reqs:
                    self._aer_reqs.remove(victim)
                self._complete(victim, ABORT_REQUESTED)
                victim.aborted = True
                await self._delay(cmd, self.cost.nvme_cmd_service_ps)
                return SUCCESS, 0
        await self._delay(cmd, self.cost.nvme_cmd_service_ps)
        return SUCCESS, 1  # DW0 bit 0 = 1: command not aborted

    async def _security_send(self, cmd: InflightCommand) -> tuple[int, int]:
        raise CommandError(INVALID_FIELD | DNR)  # no security protocol is implemented

    async def _security_receive(self, cmd: InflightCommand) -> tuple[int, int]:
        """Security Receive: only protocol 00h / SPSP 0 (supported protocol list, SPC-5 7.7.1)."""
        secp, spsp, alloc = cmd.sqe.cdw10 >> 24, (cmd.sqe.cdw10 >> 8) & 0xFFFF, cmd.sqe.cdw11
        if secp != 0 or spsp != 0 or alloc < 10:
            raise CommandError(INVALID_FIELD | DNR)
        await self._c2h(cmd, bytes(6) + struct.pack(">H", 1) + b"\0\0")
        return SUCCESS, 0

    _ADMIN: dict[int, Callable[[AdminCommandSet, InflightCommand], Awaitable[tuple[int, int]]]] = {
        ADMIN_IDENTIFY: _identify, ADMIN_GET_LOG_PAGE: _get_log_page, ADMIN_GET_FEATURES: _get_features,
        ADMIN_SET_FEATURES: _set_features, ADMIN_CREATE_CQ: _create_cq, ADMIN_CREATE_SQ: _create_sq,
        ADMIN_DELETE_SQ: _delete_sq, ADMIN_DELETE_CQ: _delete_cq, ADMIN_DBBUF_CONFIG: _dbbuf_config,
        ADMIN_ASYNC_EVENT_REQUEST: _async_event_request, ADMIN_ABORT: _abort,
        ADMIN_SECURITY_SEND: _security_send, ADMIN_SECURITY_RECV: _security_receive,
    }

