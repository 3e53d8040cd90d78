"""The virtio-iommu device, as QEMU's hw/virtio/virtio-iommu.c (virtio spec "IOMMU Device").

This module is the virtio side of the device: what the virtio-pci transport calls
(``VirtioBackend``: features, config space via ``virtio_iommu_get_config`` /
``virtio_iommu_set_config``, ``virtio_iommu_set_status``, the device and system
resets), the request queue's kick handler ``virtio_iommu_handle_command`` (pop every
chain, answer it, push the used entry, decide the interrupt; in the order and batches
the request-ordering policy plans, models/_viommu_ordering.py) and the event queue
that ``virtio_iommu_report_fault`` fills.  The decisions live in the two rooms it
builds on: the state and translation (models/_viommu_state.py) and the request
handlers in QEMU's check order, two flavours (models/_viommu_requests.py).

QEMU's big lock (BQL) is the machine's (models/_machine.py); the device holds it
while it handles a kick, and the transport makes a register write that arrives
meanwhile wait for it.  A device built without a machine gets a lock of its own.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Iterable, Mapping as MappingOf, Protocol, Sequence

from sim import Lock, Simulator, Timer

from ._config import MachineConfig
from ._iommu_notify import HostIommuDevice
from ._viommu_requests import RequestFramingError, RequestOutcome, ViommuRequests, request_size
from ._viommu_state import X86_RESERVED_REGIONS, ReservedRegion
from ._viommu_wire import EVENTQ, F_BYPASS_CONFIG, HEAD_SIZE, REQUESTQ, VIRTIO_ID_IOMMU, FaultEvent, IommuConfig
from ._viommu_ordering import PendingRequest, RequestOrderingPolicy, check_plan, make_ordering
from ._virtqueue import Chain, DeviceQueue, VirtqueueError

__all__ = ["EVENTQ", "QUEUE_SIZE", "REQUESTQ", "RequestFramingError", "RequestOutcome", "VirtioIommu"]

QUEUE_SIZE = 256
CONFIG_BYPASS_OFFSET = 36


class _Transport(Protocol):
    """What the device uses of VirtioPciTransport (models/_virtio_pci.py)."""

    broken: bool

    def queue(self, index: int) -> DeviceQueue | None: ...
    def has_feature(self, bit: int) -> bool: ...
    def notify_used(self, index: int) -> None: ...
    def needs_reset(self, reason: str) -> None: ...


class VirtioIommu(ViommuRequests):
    """The virtio-iommu device (a VirtioBackend).

    ``endpoints`` are the BDFs of the functions on the device's primary bus (each gets
    an IOMMU memory region); ``vfio_endpoints`` maps the assigned ones to their host
    IOMMU device (the machine makes those, ``models._machine.realize_vfio``); ``bql``
    is the machine's big lock.
    """

    device_id = VIRTIO_ID_IOMMU
    queue_max_sizes: tuple[int, ...] = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(
        self,
        sim: Simulator,
        config: MachineConfig,
        *,
        endpoints: Iterable[int],
        vfio_endpoints: MappingOf[int, HostIommuDevice] | None = None,
        reserved_regions: Sequence[ReservedRegion] = X86_RESERVED_REGIONS,
        boot_bypass: bool = True,
        name: str = "virtio-iommu",
        bql: Lock | None = None,
    ) -> None:
        self.transport: _Transport | None = None
        #: QEMU's big lock: kicks from several vCPUs are handled one after the other
        self.bql = bql if bql is not None else Lock(f"{name}.bql")
        self._handler_busy_ps = 0
        #: the order and batching in which a kick's requests are handled and completed (QEMU: fifo)
        self.ordering: RequestOrderingPolicy = make_ordering(config.request_order)
        self._ordering_name = config.request_order
        super().__init__(sim, config, endpoints=endpoints, vfio_endpoints=vfio_endpoints,
                         reserved_regions=reserved_regions, boot_bypass=boot_bypass, name=name)

    # -- VirtioBackend ---------------------------------------------------------------
    def device_features(self) -> int:
        """The flavour's feature bits (QEMU: ``QEMU_FEATURES``; models/_viommu_flavours.py)."""
        return self.features_offered

    def attached(self, transport: _Transport) -> None:
        self.transport = transport

    def config(self) -> IommuConfig:
        """virtio_iommu_get_config: the 40-byte structure, regenerated from state."""
        return IommuConfig(
            self.page_size_mask, self.input_range[0], self.input_range[1],
            self.domain_range[0], self.domain_range[1], self.probe_size, self.bypass,
        )

    def config_read(self, offset: int, size: int) -> int:
        if offset < 0 or size <= 0 or offset + size > IommuConfig.SIZE:
            return (1 << (8 * max(size, 0))) - 1
        cfg = self.config()
        self._trace(
            "virtio_iommu_get_config", page_size_mask=cfg.page_size_mask, start=cfg.input_range_start,
            end=cfg.input_range_end, domain_start=cfg.domain_range_start, domain_end=cfg.domain_range_end,
            probe_size=cfg.probe_size, bypass=cfg.bypass,
        )
        return int.from_bytes(cfg.pack()[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        """Store the bytes, then virtio_iommu_set_config: only ``bypass`` has an effect."""
        if offset < 0 or size <= 0 or offset + size > IommuConfig.SIZE:
            return
        buf = bytearray(self.config().pack())
        buf[offset : offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        new = buf[CONFIG_BYPASS_OFFSET]
        if self.flavour.bypass_write != "qemu":
            self._peer_config_write(offset, size, new)
            return
        if new != self.bypass:
            if self.transport is None or not self.transport.has_feature(F_BYPASS_CONFIG):
                self._virtio_error("cannot set config.bypass")
                return
            if new not in (0, 1):
                self._virtio_error(f"invalid config.bypass value '{new}'")
                return
            self.bypass = new
            for dev in self.devices.values():
                self._switch_address_space(dev)
        self._trace("virtio_iommu_set_config", bypass=new)

    def _peer_config_write(self, offset: int, size: int, new: int) -> None:
        """cloud-hypervisor ``Iommu::write_config``: a one-byte write of ``bypass`` keeps bit 0, and
        ``update_bypass`` applies it only once BYPASS_CONFIG is acked; any other write is ignored (logged).
        crosvm implements no ``write_config``: every write is ignored."""
        if self.flavour.bypass_write == "ignored" or offset != CONFIG_BYPASS_OFFSET or size != 1:
            self._trace("virtio_iommu_config_write_ignored", offset=offset, size=size)
            return
        self.bypass = new & 1
        if self.transport is not None and self.transport.has_feature(F_BYPASS_CONFIG):
            self.own_bypass = bool(self.bypass)
            for dev in self.devices.values():
                self._switch_address_space(dev)
        self._trace("virtio_iommu_set_config", bypass=self.bypass)

    def queue_notify(self, index: int) -> Coroutine[object, object, None] | None:
        """Queue 0 runs virtio_iommu_handle_command in the kicking vCPU's exit; queue 1 has no handler."""
        if index == REQUESTQ and self.transport is not None:
            return self._handle_command()
        return None

    def set_status(self, status: int) -> None:
        """virtio_iommu_set_status: only traced."""
        self._trace("virtio_iommu_device_status", status=status)

    def reset(self) -> None:
        """Guest virtio reset (QEMU <= 9.2 ``virtio_iommu_device_reset``): drop every domain and endpoint.

        ``config.bypass`` is sticky across device reset.  Host work caused here is not
        charged (the reset runs inside the status write).
        """
        self._trace("virtio_iommu_device_reset")
        for domain_id in sorted(self.domains):
            self._put_domain(self.domains[domain_id])
        for ep_id in sorted(self.endpoints):
            self._put_endpoint(self.endpoints[ep_id])
        self._host_ps = 0

    def system_reset(self) -> None:
        """virtio_iommu_system_reset then the device reset: ``bypass`` back to boot-bypass."""
        self._trace("virtio_iommu_system_reset")
        self._boot_bypass()
        for dev in self.devices.values():
            self._switch_address_space(dev)
        self.reset()

    # -- the request queue (glue) ------------------------------------------------------
    async def _handle_command(self) -> None:
        """virtio_iommu_handle_command: pop every available chain and answer each.

        QEMU answers in ring order, one used entry and one interrupt decision per request
        (virtqueue_push then virtio_notify); ``MachineConfig.request_order`` may choose another
        order and batching (models/_viommu_ordering.py).  Each request reads its head, then its
        type's size (``request_size``), and writes only its reply into the writable part.  A
        malformed ring or chain breaks the device (virtio_error) and stops the loop.
        """
        async with self.bql:
            start = self.sim.now
            await Timer(self.cost.viommu_notify_ps)
            await self._drain_requests()
            self._handler_busy_ps += self.sim.now - start

    def handler_busy_ps(self) -> int:
        """Simulated time spent in ``virtio_iommu_handle_command`` with the BQL held (the notification,
        every request and the VFIO ioctls of its IOMMU notifiers), in ps, since the device was built."""
        return self._handler_busy_ps

    async def _drain_requests(self) -> None:
        """Pop up to the ordering policy's ``lookahead`` chains (bounded by the queue's size), run its
        plan over them, and again until no chain is available or the device is broken."""
        t = self.transport
        assert t is not None
        if self.sim.tracing:
            self._trace("virtio_iommu_handle_command", vq=REQUESTQ)
        queue = t.queue(REQUESTQ)
        lookahead = self.ordering.lookahead
        while queue is not None and not t.broken:
            limit = queue.size if lookahead is None else min(lookahead, queue.size)
            popped: list[tuple[Chain, bytes]] = []
            while len(popped) < limit:
                try:
                    chain = queue.pop()
                except VirtqueueError as e:  # a malformed ring breaks the device when it is met
                    t.needs_reset(e.reason)
                    return
                if chain is None:
                    break
                # the head, then only the request's own size (virtio_iommu_iov_to_req), never the whole
                # readable part: a chain costs what its request needs, whatever its descriptors claim
                popped.append((chain, chain.read(request_size(chain.read(HEAD_SIZE)))))
            if not popped or not await self._run_plan(queue, popped):
                return

    async def _run_plan(self, queue: DeviceQueue, popped: list[tuple[Chain, bytes]]) -> bool:
        """Handle and complete ``popped`` (chain, request bytes) as the ordering policy's plan says;
        False if the device broke (nothing more is handled or published then)."""
        t = self.transport
        assert t is not None
        pending = [PendingRequest(i, request[0] if len(request) >= HEAD_SIZE else None, chain.head)
                   for i, (chain, request) in enumerate(popped)]
        plan = self.ordering.plan(pending)
        check_plan(plan, len(pending), f"--request-order {self._ordering_name}")
        used_len: dict[int, int] = {}
        for batch in plan:
            for i in batch.process:
                if t.broken:
                    return False
                chain, request = popped[i]
                try:
                    outcome = self.process_request(request, chain.writable_len, chain.readable_len)
                except RequestFramingError as e:  # whatever the order: virtio_error, the chain dropped
                    queue.detach(chain)
                    self._virtio_error(e.reason)
                    return False
                await Timer(self.cost.viommu_request_ps + outcome.host_ps)
                chain.write(outcome.reply)
                used_len[i] = outcome.used_len
            for i in batch.complete:
                queue.push(popped[i][0], used_len[i])
            if batch.notify:
                t.notify_used(REQUESTQ)
        return True

    def _virtio_error(self, reason: str) -> None:
        """virtio_error(): the device needs a reset (the transport traces it)."""
        if self.transport is not None:
            self.transport.needs_reset(reason)
        else:
            self._trace("virtio_error", reason=reason)

    def _report_fault(self, fault: FaultEvent) -> None:
        """virtio_iommu_report_fault: one eventq buffer per fault, dropped if none is available."""
        t = self.transport
        queue = t.queue(EVENTQ) if t is not None and not t.broken else None
        try:
            chain = queue.pop() if queue is not None else None
        except VirtqueueError as e:
            assert t is not None
            t.needs_reset(e.reason)
            return
        if chain is None:
            self.faults_dropped += 1
            self._trace("virtio_iommu_fault_dropped", reason=fault.reason, flags=fault.flags,
                        endpoint=fault.endpoint, addr=fault.address)
            return
        assert t is not None and queue is not None
        if chain.writable_len < FaultEvent.SIZE:
            queue.detach(chain)
            self._virtio_error("error buffer of wrong size")
            return
        chain.write(fault.pack())
        self._trace("virtio_iommu_report_fault", reason=fault.reason, flags=fault.flags,
                    endpoint=fault.endpoint, addr=fault.address)
        self.faults_reported += 1
        queue.push(chain, FaultEvent.SIZE)
        t.notify_used(EVENTQ)
