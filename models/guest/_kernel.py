"""The guest kernel: CPUs, printk, memory, devices, and the pieces drivers reach for.

A deliberately small object that the driver models share (the Linux globals
they use): the machine they run on (for MMIO, config space and interrupts),
``printk``, the page allocator, the enumerated devices, the IOMMU core, and
per-CPU execution.  Code that runs "on a CPU" is a sim task that carries its
CPU number explicitly (``cpu`` arguments), because dma-iommu's per-CPU IOVA
caches and flush queues depend on it.

The boot sequence (initcall order, async and deferred probe) lives in
``_boot.py``.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from sim import Cancelled, Event, Simulator, current_sim

from .._memory import GIB
from .._seams import MachineView
from ._device import GuestDevice
from ._mm import PageAllocator
from ._printk import Printk

if TYPE_CHECKING:
    from ._iommu_core import IommuCore

if TYPE_CHECKING:
    from ._boot import Boot

#: memory the early boot has already used before drivers allocate (kernel image, memmap, ...):
#: an estimate, it only shifts the physical addresses of DMA buffers
EARLY_BOOT_RESERVED = 256 * (1 << 20)


class Cpu:
    """One vCPU as a resource: one code path at a time, interrupt handlers first.

    ``async with cpu.task():`` around process-context work (the block layer's submission path),
    ``async with cpu.irq():`` around a completion handler.  When the CPU frees up, a waiting
    handler runs before any waiting task: an interrupt preempts process context as soon as that
    context re-enables interrupts (the model switches only between code paths, so a task's path
    finishes first -- it holds ``request_lock`` with interrupts off for most of it anyway).
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.busy = False
        #: simulated time this vCPU ran a code path (submission, completion, spinning included), in ps,
        #: up to its last release (``busy_ps``)
        self._busy_total_ps = 0
        self._busy_since = 0
        self._irq_waiters: collections.deque[Event] = collections.deque()
        self._task_waiters: collections.deque[Event] = collections.deque()

    def task(self) -> _CpuHold:
        return _CpuHold(self, self._task_waiters)

    def irq(self) -> _CpuHold:
        return _CpuHold(self, self._irq_waiters)

    async def _acquire(self, waiters: collections.deque[Event]) -> None:
        if not self.busy:
            self.busy = True
            self._busy_since = current_sim().now
            return
        turn = Event(f"cpu{self.index}.turn")
        waiters.append(turn)
        try:
            await turn.wait()
        except Cancelled:
            if turn.is_set():  # the CPU was handed to us just before the cancel
                self._release()
            else:
                waiters.remove(turn)
            raise

    def _release(self) -> None:
        waiters = self._irq_waiters or self._task_waiters
        if waiters:
            waiters.popleft().set()  # handed over: stays busy
        else:
            self.busy = False
            self._busy_total_ps += current_sim().now - self._busy_since

    def busy_ps(self) -> int:
        """Simulated time this vCPU has been busy, in ps (a code path still running counts up to now)."""
        return self._busy_total_ps + (current_sim().now - self._busy_since if self.busy else 0)


class _CpuHold:
    __slots__ = ("cpu", "waiters")

    def __init__(self, cpu: Cpu, waiters: collections.deque[Event]) -> None:
        self.cpu = cpu
        self.waiters = waiters

    async def __aenter__(self) -> Cpu:
        await self.cpu._acquire(self.waiters)
        return self.cpu

    async def __aexit__(self, *exc: object) -> None:
        self.cpu._release()


class GuestKernel:
    """Shared state of one booted (or booting) guest."""

    #: the boot that brings the guest up, with its drivers (``boot.viommu``, ``boot.nvme``); set by ``boot()``
    boot: Boot

    def __init__(self, machine: MachineView) -> None:
        self.machine = machine
        self.sim: Simulator = machine.sim
        self.config = machine.config
        self.cost = machine.cost
        self.ncpus: int = machine.config.smp
        self.printk = Printk()
        mem = machine.memory
        self.mm = PageAllocator.for_ram(mem.below_4g, mem.above_4g_end, EARLY_BOOT_RESERVED)
        self.devices: dict[int, GuestDevice] = {}
        self._iommu: IommuCore | None = None
        #: the vCPUs as resources (see ``Cpu``)
        self.cpus = [Cpu(i) for i in range(self.ncpus)]
        #: PCI host bridge memory windows as inclusive (start, end) bus addresses (from enumeration)
        self.host_bridge_windows: list[tuple[int, int]] = []

    @property
    def iommu(self) -> IommuCore:
        """The IOMMU core (``drivers/iommu/iommu.c``), set when the iommu subsystem initialises."""
        if self._iommu is None:
            raise RuntimeError("the guest's IOMMU core has not initialised (iommu_subsys_init has not run)")
        return self._iommu

    @iommu.setter
    def iommu(self, core: IommuCore) -> None:
        self._iommu = core

    def on_cpu(self, cpu: int, *, irq: bool = False) -> _CpuHold:
        """``async with kernel.on_cpu(cpu):`` around a code path that keeps vCPU ``cpu`` busy (the
        block layer's submission down to the doorbell; with ``irq=True`` a completion handler).
        Waiting for a tag or for the device must not hold it.  So the fio jobs that share a vCPU
        submit one after another, and at most ``smp`` code paths spin on a guest spinlock at once,
        as on the real machine; a waiter spinning on ``request_lock`` keeps its CPU."""
        cpu_ = self.cpus[cpu]
        return cpu_.irq() if irq else cpu_.task()

    def log(self, text: str) -> None:
        self.printk.log(self.sim.now, text)

    def dev_info(self, dev: GuestDevice | tuple[str, str], text: str) -> None:
        if isinstance(dev, GuestDevice):
            self.printk.dev_info(self.sim.now, dev.prefix_driver, dev.name, text)
        else:
            self.printk.dev_info(self.sim.now, dev[0], dev[1], text)

    def device(self, bdf: int) -> GuestDevice:
        return self.devices[bdf]


__all__ = ["GIB", "GuestDevice", "GuestKernel"]
