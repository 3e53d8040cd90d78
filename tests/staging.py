"""Staged guests: the guest's boot stopped after a chosen step, for tests that start part-way.

``staged_guest(stage, **machine_options)`` builds the machine ``MachineConfig(**machine_options)``
describes on a fresh ``Simulator`` (seed 0, one ``ListSink``) and takes it through the steps of
``models.guest._boot`` up to ``stage``, each step run to completion before the next starts:

==========  ==================================================================================
stage       what has happened (in this order)
==========  ==================================================================================
machine     the q35 machine is built; nothing has run
kernel      firmware BAR assignment and Linux's root-bus scan; a ``GuestKernel`` with one
            ``GuestDevice`` per function (no IOMMU core yet: direct DMA only)
iommu       ``IommuCore`` installed and ``iommu_subsys_init`` run (its two printk lines); no
            IOMMU driver registered
viommu      the virtio-iommu driver probed on CPU 0 (DRIVER_OK, ``iommu_device_register``);
            skipped, leaving ``viommu_driver`` None, on a machine without a virtio-iommu
nvme-dma    the NVMe function's ``dma_configure`` (driver "nvme", IOMMU probe: group, domain,
            ATTACH) on the async-probe CPU, and its 64-bit DMA masks, as ``nvme_probe`` sets first
nvme        ``nvme_probe`` on the async-probe CPU, successful
==========  ==================================================================================

The real boot scans the bus after ``iommu_subsys_init``; here the scan belongs to the kernel stage
(neither step reads what the other writes), so a guest can stop with its devices and no IOMMU core.
A step that fails raises ``StageError``.  ``advance(stage)`` goes on from a guest's stage.

``run_task(sim, coro)`` spawns one coroutine, runs the simulation until that task is done and
returns its result (or re-raises its exception).

Beside the Linux boot: ``raw_machine(sim, ...)`` is a machine whose virtio-iommu the raw driver
(``RawViommuDriver``, no guest kernel) has probed, and ``raw_send`` sends it one request, for tests
that drive the device request by request (from a ``testbench.test``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import attrs

from models import GuestMemory, Machine, MachineConfig, VirtioIommu, VirtioPciTransport, build_machine
from models.guest import (
    DriverQueue,
    GuestDevice,
    GuestKernel,
    IommuCore,
    NvmeDriver,
    ReplayRequest,
    ViommuDriver,
    encode_request,
    enumerate_bus,
    raw_viommu_platform,
    writable_size,
)

# not among models.guest's public names (yet)
from models.guest._raw_viommu import LINUX_FEATURES, RawCompletion, RawViommuDriver
from models._virtq_wire import CommonCfg, DeviceStatus
from models.guest._viommu_driver import viommu_pci_info
from sim import ListSink, Simulator

T = TypeVar("T")

#: the stages in boot order
STAGES = ("machine", "kernel", "iommu", "viommu", "nvme-dma", "nvme")
#: PCI class code of an NVM Express controller
NVME_CLASS = 0x010802


class StageError(RuntimeError):
    """A boot step did not succeed, so the guest cannot be put at the stage asked for."""


def run_task(sim: Simulator, coro: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """Spawn ``coro`` (named ``name``, by default its qualified name), run ``sim`` until the task is
    done, and return its result; an exception the task ended with is re-raised as it is."""
    task = sim.spawn(coro, name=name)
    sim.run_sync(until=task)
    return task.result()


@attrs.frozen(eq=False)
class StagedGuest:
    """A guest whose boot stopped after ``stage``; what a later stage creates is None before it."""

    stage: str
    sim: Simulator
    #: every trace record of the run, from the machine's construction on
    sink: ListSink
    machine: Machine
    kernel: GuestKernel | None = None
    core: IommuCore | None = None
    #: the probed virtio-iommu driver (None before "viommu", or without a virtio-iommu)
    viommu_driver: ViommuDriver | None = None
    nvme_driver: NvmeDriver | None = None

    @property
    def nvme(self) -> GuestDevice:
        """The NVMe function's ``GuestDevice`` (from the kernel stage on)."""
        dev = next((d for d in self._kernel().devices.values() if d.info.class_code == NVME_CLASS), None)
        if dev is None:
            raise StageError("this machine has no NVMe function")
        return dev

    @property
    def probe_cpu(self) -> int:
        """The CPU async probes run on (the boot's async worker: CPU 1, or 0 on one vCPU)."""
        return 1 % self.machine.config.smp

    def run(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> T:
        """``run_task`` on this guest's simulator."""
        return run_task(self.sim, coro, name)

    def page(self) -> int:
        """One free guest page (``alloc_pages(0)``)."""
        return self._kernel().mm.alloc_pages(0)

    def dma_configure(self, bdf: int, driver: str, cpu: int = 0) -> int:
        """``really_probe``'s ``dma_configure`` of function ``bdf`` for ``driver`` on ``cpu``: the
        IOMMU probe (0, or a negative errno such as -EPROBE_DEFER)."""
        kernel = self._kernel()
        dev = kernel.devices[bdf]
        dev.driver = driver
        return self.run(kernel.iommu.probe_device(dev, cpu))

    def _kernel(self) -> GuestKernel:
        if self.kernel is None:
            raise StageError("a guest at the machine stage has no guest kernel yet; stage it at 'kernel' or later")
        return self.kernel

    def advance(self, stage: str) -> StagedGuest:
        """This guest taken on from its stage to the later ``stage``: the same simulator, machine and
        kernel, so ``self`` describes an earlier stage than they are at and is best not used again."""
        have, want = _index(self.stage), _index(stage)
        if want <= have:
            raise ValueError(f"cannot advance a guest at stage {self.stage!r} to {stage!r}: "
                             f"stages only go forward ({' -> '.join(STAGES)})")
        guest = self
        for step in STAGES[have + 1:want + 1]:
            guest = _STEPS[step](guest)
        return guest


def staged_guest(stage: str, **machine_options: Any) -> StagedGuest:
    """A fresh machine built from ``MachineConfig(**machine_options)``, its guest booted up to and
    including ``stage`` (one of ``STAGES``)."""
    _index(stage)
    sink = ListSink()
    sim = Simulator(sinks=[sink])
    guest = StagedGuest("machine", sim, sink, build_machine(MachineConfig(**machine_options), sim))
    return guest if stage == "machine" else guest.advance(stage)


def _index(stage: str) -> int:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    return STAGES.index(stage)


async def raw_machine(sim: Simulator, features: int = LINUX_FEATURES,
                      **machine_options: Any) -> tuple[Machine, RawViommuDriver]:
    """The machine ``machine_options`` describe on ``sim`` (seeded from it), its virtio-iommu probed
    by the raw driver offering ``features``."""
    machine = build_machine(MachineConfig(seed=sim.seed % (1 << 64), **machine_options), sim)
    return machine, await raw_viommu_platform(machine, features=features)


async def raw_send(driver: RawViommuDriver, op: str, **fields: int) -> RawCompletion:
    """One request ``op`` ("attach", "map", ...) with ``fields``, through the raw driver."""
    req = ReplayRequest(op, **fields)
    return await driver.submit(encode_request(req), writable_size(req))


# -- the steps, each from the stage before ----------------------------------------------------------------------


def _to_kernel(g: StagedGuest) -> StagedGuest:
    infos = enumerate_bus(g.machine.bus, g.machine.memory)
    kernel = GuestKernel(g.machine)
    kernel.devices = {info.bdf: GuestDevice(info) for info in infos}
    return attrs.evolve(g, stage="kernel", kernel=kernel)


def _to_iommu(g: StagedGuest) -> StagedGuest:
    core = IommuCore(g._kernel())
    core.subsys_init()
    return attrs.evolve(g, stage="iommu", core=core)


def _to_viommu(g: StagedGuest) -> StagedGuest:
    kernel = g._kernel()
    info = viommu_pci_info(kernel.devices.values())
    if info is None:
        return attrs.evolve(g, stage="viommu")
    driver = ViommuDriver(kernel, info)
    g.run(driver.probe(0))
    return attrs.evolve(g, stage="viommu", viommu_driver=driver)


def _to_nvme_dma(g: StagedGuest) -> StagedGuest:
    ret = g.dma_configure(g.nvme.bdf, "nvme", g.probe_cpu)
    if ret:
        raise StageError(f"dma_configure of the NVMe function returned {ret}")
    g.nvme.set_dma_mask(64)
    return attrs.evolve(g, stage="nvme-dma")


def _to_nvme(g: StagedGuest) -> StagedGuest:
    driver = NvmeDriver(g._kernel(), g.nvme)
    ret = g.run(driver.probe(g.probe_cpu))
    if ret:
        raise StageError(f"nvme_probe returned {ret}")
    return attrs.evolve(g, stage="nvme", nvme_driver=driver)


_STEPS = {"kernel": _to_kernel, "iommu": _to_iommu, "viommu": _to_viommu, "nvme-dma": _to_nvme_dma, "nvme": _to_nvme}


# -- a raw driver side on the virtio-pci transport ----------------------------------------------------------

#: the eight q35 functions' requester ids, the virtio-iommu's endpoints in the transport-level tests
Q35_BDFS = (0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB)
#: guest-physical bases of the two rings (request, event) and of the request buffers
RING = {0: 0x100000, 1: 0x200000}
BUF = 0x300000


class TransportGuest:
    """A minimal driver side on a bare VirtioIommu + VirtioPciTransport (no machine, no Linux driver):
    negotiates ``features_mask`` of the offered features, enables both queues (8 entries, EVENT_IDX in
    the driver's ring as ``event_idx`` says), posts chains and kicks through the notify register."""

    def __init__(self, features_mask: int = ~0, *, event_idx: bool = True,
                 vfio_endpoints: dict[int, Any] | None = None, **config: Any) -> None:
        cfg = MachineConfig(**{"memory": "512M", **config})
        self.sink = ListSink()
        self.sim = Simulator(sinks=[self.sink])
        self.mem = GuestMemory(cfg.memory)
        self.dev = VirtioIommu(self.sim, cfg, endpoints=Q35_BDFS, vfio_endpoints=vfio_endpoints or {})
        self.t = VirtioPciTransport(self.sim, self.mem, self.dev, "virtio-iommu-pci")
        self.irqs: list[bool] = []
        self.t.on_irq = self.irqs.append
        features = self.t.offered_features() & features_mask
        for sel in (0, 1):
            self.t.common_write(CommonCfg.DRIVER_FEATURE_SELECT, 4, sel)
            self.t.common_write(CommonCfg.DRIVER_FEATURE, 4, features >> (32 * sel) & 0xFFFFFFFF)
        status = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
        self.t.common_write(CommonCfg.DEVICE_STATUS, 1, status)
        self.q: dict[int, DriverQueue] = {}
        for index, base in RING.items():
            self.q[index] = DriverQueue(self.mem, 8, base, base + 0x1000, base + 0x2000, event_idx=event_idx)
            self.t.common_write(CommonCfg.QUEUE_SELECT, 2, index)
            self.t.common_write(CommonCfg.QUEUE_SIZE, 2, 8)
            for reg, addr in ((CommonCfg.QUEUE_DESC_LO, base), (CommonCfg.QUEUE_DRIVER_LO, base + 0x1000),
                              (CommonCfg.QUEUE_DEVICE_LO, base + 0x2000)):
                self.t.common_write(reg, 4, addr)
            self.t.common_write(CommonCfg.QUEUE_ENABLE, 2, 1)
        self.t.common_write(CommonCfg.DEVICE_STATUS, 1, status | DeviceStatus.DRIVER_OK)
        self.next = BUF

    def post(self, request: bytes, writable: int) -> tuple[int, int]:
        """Put one request chain on the request queue; returns (head, address of its writable part)."""
        out, self.next = self.next, self.next + 0x1000
        self.mem.write(out, request)
        segs_out = [(out, len(request))] if request else []
        segs_in = [(out + 0x800, writable)] if writable else []
        head = self.q[0].add(segs_out, segs_in)
        self.q[0].publish()
        return head, out + 0x800

    def kick(self) -> None:
        work = self.t.notify_write(0, 2, 0)
        if work is not None:
            run_task(self.sim, work, name="vcpu-exit")
