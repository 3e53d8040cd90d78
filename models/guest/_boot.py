"""The guest's boot: initcall order, driver binding, async and deferred probe, as Linux 6.7 does it.

Follows linux-guest.md §6 (and drivers/base/dd.c, drivers/Makefile):

1. early boot (decompression, memory and ACPI set-up, early initcalls) takes
   ``EARLY_BOOT_PS``; then ``iommu_subsys_init`` (subsys_initcall) prints the
   default domain type and the invalidation policy;
2. the PCI root bus is scanned (firmware already assigned the BARs);
3. built-in drivers register at device_initcall in ``drivers/Makefile`` link
   order: virtio (virtio_pci binds 00:03.0, creating virtio0), char/agp
   (intel-agp), iommu (virtio_iommu binds virtio0), nvme, ata (ahci), net
   (e1000e), i2c (i801_smbus);
4. binding a driver to a device runs ``really_probe``: ``dma_configure`` first
   (the IOMMU probe of the device: PROBE, group, "Adding to iommu group N",
   ATTACH), then the driver's probe; ``dma_configure`` answers -EPROBE_DEFER
   while the virtio-iommu has not registered, and the device goes on the
   deferred list, which is retried only from ``late_initcall``
   (``deferred_probe_initcall``) — that is where intel-agp binds;
5. the NVMe driver sets ``PROBE_PREFER_ASYNCHRONOUS``: its probe runs in an
   async worker (``async_schedule``) on another CPU, while the init thread
   goes on with the next drivers; the init thread waits for async probes
   before user space (``wait_for_device_probe``);
6. drivers built as modules (``MachineConfig.modules``, the reference's Debian 6.12 build) do not
   register at device_initcall: the initramfs's init inserts them one by one in the given order
   (``insmod_ps`` each, then the script's ``initramfs_module_pause_ps``), each module's init
   registering its driver as a built-in one would (``do_init_module`` waits for the async probes
   it started: ``async_synchronize_full``), and from late_initcall on every successful bind
   retries the deferred list at once (``driver_deferred_probe_trigger``, the deferred-probe work
   on the async worker's CPU): so the deferred intel-agp probe of 00:00.0 binds right after
   ``insmod virtio_iommu`` and takes IOMMU group 0, as in the reference boot.

The fixed policy that resolves what the real kernel leaves to timing: the init
thread runs on CPU 0; async workers run on CPU ``1 % ncpus`` and start
``ASYNC_PROBE_START_PS`` after being queued.  Everything else — who waits for
whom — comes from the locks the models hold (``iommu_probe_device_lock``, the
virtio-iommu request lock).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from sim import Task, ms, sleep, us

from .._errno import ENODEV, ENXIO, EPROBE_DEFER
from .._pci_ids import (
    PCI_DEVICE_ID_INTEL_82574L,
    PCI_DEVICE_ID_INTEL_ICH9_SMBUS,
    PCI_DEVICE_ID_INTEL_Q35_MCH,
    PCI_DEVICE_ID_VIRTIO_MAX,
    PCI_DEVICE_ID_VIRTIO_10_BASE,
    PCI_VENDOR_ID_INTEL,
    PCI_VENDOR_ID_REDHAT_QUMRANET,
)
from ._device import GuestDevice
from ._drivers import agp_intel_probe, ahci_probe, no_dma_probe
from ._kernel import GuestKernel
from ._pci_scan import PciDeviceInfo, enumerate_bus

#: power-on to subsys_initcall: decompression, memory, ACPI tables, early initcalls (estimate for a
#: KVM guest; the seed shows 0.546 s)
EARLY_BOOT_PS = ms(540)
#: subsys_initcall to the first device_initcall drivers (fs, net core, PCI scan, ...): estimate
INITCALLS_BEFORE_DRIVERS_PS = ms(100)
#: one driver registration (driver_register, bus match walk, up to really_probe), CPU time only
DRIVER_REGISTER_PS = us(10)
#: from async_schedule() to the worker running on its CPU: waking an idle vCPU takes an IPI, the
#: target's exit from HLT and a reschedule (tens of microseconds under KVM) -- longer than the init
#: thread needs to reach the next driver's IOMMU probe, which is why the seed's ahci, registered
#: right after nvme, is IOMMU-probed first
ASYNC_PROBE_START_PS = us(50)
#: the device_initcalls between drivers/ata and drivers/net in link order that are not modelled
#: (ahci's host registration, other ATA/SCSI-target/SPI/MTD/PHY drivers): estimate
ATA_TO_NET_INITCALLS_PS = ms(10)
#: the device_initcalls between drivers/net and drivers/i2c in link order that are not modelled
#: (USB host controllers, input/i8042, rtc, ...): estimate; the seed shows ~105 ms
NET_TO_I2C_INITCALLS_PS = ms(100)
#: from the last device_initcall to late_initcall (estimate; the seed shows ~17 ms)
LATE_INITCALL_GAP_PS = ms(17)
#: from late_initcall to the initramfs's /init running (freeing init memory, unpacking the
#: initramfs, exec): estimate for a KVM guest (the TCG reference shows ~0.8 s)
RUN_INIT_PS = ms(50)

ProbeFn = Callable[[GuestKernel, GuestDevice, int], Awaitable[int]]

#: the initcall that registers each built-in driver (for ``initcall_blacklist=``)
INITCALLS = {
    "agpgart-intel": "agp_intel_init",
    "virtio_iommu": "virtio_iommu_drv_init",
    "nvme": "nvme_init",
    "ahci": "ahci_pci_driver_init",
    "e1000e": "e1000_init_module",
    "i801_smbus": "i2c_i801_init",
}


#: drivers with PROBE_PREFER_ASYNCHRONOUS
ASYNC_DRIVERS = frozenset({"nvme"})
#: the driver each module registers (library modules register none)
MODULE_DRIVERS = {"virtio_iommu": "virtio_iommu", "ahci": "ahci", "nvme": "nvme", "e1000e": "e1000e",
                  "i2c_i801": "i801_smbus"}


def _match(info: PciDeviceInfo) -> str | None:
    """The built-in driver that binds this function (pci_match_device over the id tables)."""
    ids = (info.vendor_id, info.device_id)
    if ids == (PCI_VENDOR_ID_INTEL, PCI_DEVICE_ID_INTEL_Q35_MCH):
        return "agpgart-intel"
    if (info.vendor_id == PCI_VENDOR_ID_REDHAT_QUMRANET
            and PCI_DEVICE_ID_VIRTIO_10_BASE <= info.device_id <= PCI_DEVICE_ID_VIRTIO_MAX):
        return "virtio-pci"
    if info.class_code == 0x010802:
        return "nvme"
    if info.class_code == 0x010601:
        return "ahci"
    if ids == (PCI_VENDOR_ID_INTEL, PCI_DEVICE_ID_INTEL_82574L):
        return "e1000e"
    if ids == (PCI_VENDOR_ID_INTEL, PCI_DEVICE_ID_INTEL_ICH9_SMBUS):
        return "i801_smbus"
    return None  # std VGA (no bochs-drm built in), LPC (lpc_ich not built in)


class Boot:
    """One boot of the guest kernel on a machine."""

    def __init__(self, kernel: GuestKernel) -> None:
        self.kernel = kernel
        self.deferred: list[tuple[GuestDevice, str, ProbeFn]] = []
        self.async_probes: list[Task[Any]] = []
        self.viommu: Any = None
        self.nvme: Any = None
        #: driver_deferred_probe_enable: set at late_initcall, from then on a bind retries the deferred list
        self.deferred_enabled = False
        self._deferred_work: Task[Any] | None = None
        self._by_driver: dict[str, list[GuestDevice]] = {}
        modules = [m.replace("-", "_") for m in kernel.config.modules]
        #: the drivers the initramfs inserts as modules (they do not register at device_initcall)
        self.modular = {MODULE_DRIVERS[m] for m in modules if m in MODULE_DRIVERS}

    async def run(self) -> None:
        k = self.kernel
        from ._iommu_core import IommuCore  # the IOMMU stack

        await sleep(EARLY_BOOT_PS)
        k.iommu = IommuCore(k)
        k.iommu.subsys_init()
        await sleep(INITCALLS_BEFORE_DRIVERS_PS)
        infos = enumerate_bus(k.machine.bus, k.machine.memory)
        for info in infos:
            k.devices[info.bdf] = GuestDevice(info)
        by_driver: dict[str, list[GuestDevice]] = {}
        for dev in k.devices.values():
            name = _match(dev.info)
            if name is not None:
                by_driver.setdefault(name, []).append(dev)
        self._by_driver = by_driver
        # device_initcall, in drivers/Makefile link order (the drivers built as modules wait for the initramfs)
        await self._register("agpgart-intel", by_driver, agp_intel_probe)
        await self._load("virtio_iommu", builtin=True)
        await self._load("nvme", builtin=True)
        await self._load("ahci", builtin=True)
        await sleep(ATA_TO_NET_INITCALLS_PS)
        await self._load("e1000e", builtin=True)
        await sleep(NET_TO_I2C_INITCALLS_PS)
        await self._load("i801_smbus", builtin=True)
        await sleep(LATE_INITCALL_GAP_PS)
        # late_initcall: deferred_probe_initcall retries the deferred list
        self.deferred_enabled = True
        deferred, self.deferred = self.deferred, []
        for dev, name, probe in deferred:
            await self.really_probe(dev, name, probe, cpu=0)
        for task in self.async_probes:  # wait_for_device_probe()
            await task
        if k.config.modules:
            await sleep(RUN_INIT_PS)
            await self._initramfs()

    async def _initramfs(self) -> None:
        """The initramfs's init: ``insmod`` each module in order, pausing after each (scripts/init)."""
        cost = self.kernel.cost
        for module in self.kernel.config.modules:
            await sleep(cost.insmod_ps)
            driver = MODULE_DRIVERS.get(module.replace("-", "_"))
            if driver is not None:
                await self._load(driver, builtin=False)
                for task in self.async_probes:  # do_init_module: async_synchronize_full()
                    await task
            await sleep(cost.initramfs_module_pause_ps)
        if self._deferred_work is not None:
            await self._deferred_work

    async def _load(self, driver: str, *, builtin: bool) -> None:
        """Register ``driver`` (its built-in initcall, or its module's init), unless the other place does."""
        if (driver in self.modular) == builtin:
            return
        by_driver = self._by_driver
        if driver == "virtio_iommu":
            virtio_devs = by_driver.get("virtio-pci", [])
            if virtio_devs and not self._blacklisted("virtio_iommu"):
                await self._bind_virtio_iommu(virtio_devs[0])
                self._bound()
        elif driver in ASYNC_DRIVERS:
            await self._register(driver, by_driver, self._nvme_probe, asynchronous=True)
        elif driver == "ahci":
            await self._register("ahci", by_driver, ahci_probe)
        else:
            await self._register(driver, by_driver, no_dma_probe)

    def _bound(self) -> None:
        """``driver_bound`` -> ``driver_deferred_probe_trigger``: retry the deferred list at once (from
        late_initcall on), in the deferred-probe work; a trigger while it runs makes it run again."""
        if not self.deferred_enabled or not self.deferred:
            return
        if self._deferred_work is not None and not self._deferred_work.done():
            return  # the running work takes the whole list when it gets to it
        self._deferred_work = self.kernel.sim.spawn(self._deferred_probe_work(), name="deferred_probe_work")

    async def _deferred_probe_work(self) -> None:
        """``deferred_probe_work_func``: every pending device, on the async worker's CPU; a driver that
        prefers asynchronous probing (nvme) is probed by an async worker again (``__device_attach``
        with allow_async), the others in the work itself."""
        while self.deferred:
            deferred, self.deferred = self.deferred, []
            for dev, name, probe in deferred:
                if name in ASYNC_DRIVERS:
                    self.async_probes.append(self.kernel.sim.spawn(self._async_probe(dev, name, probe),
                                                                   name=f"async_probe:{name}"))
                else:
                    await self.really_probe(dev, name, probe, cpu=1 % self.kernel.ncpus)

    def _blacklisted(self, driver: str) -> bool:
        return INITCALLS[driver] in self.kernel.config.initcall_blacklist

    async def _register(self, name: str, by_driver: dict[str, list[GuestDevice]], probe: ProbeFn, *,
                        asynchronous: bool = False) -> None:
        if self._blacklisted(name):
            return
        await sleep(DRIVER_REGISTER_PS)
        for dev in by_driver.get(name, []):
            if asynchronous:
                self.async_probes.append(self.kernel.sim.spawn(self._async_probe(dev, name, probe),
                                                               name=f"async_probe:{name}"))
            else:
                await self.really_probe(dev, name, probe, cpu=0)

    async def _async_probe(self, dev: GuestDevice, name: str, probe: ProbeFn) -> int:
        await sleep(ASYNC_PROBE_START_PS)
        return await self.really_probe(dev, name, probe, cpu=1 % self.kernel.ncpus)

    async def really_probe(self, dev: GuestDevice, name: str, probe: ProbeFn, cpu: int) -> int:
        """drivers/base/dd.c really_probe: dma_configure, then the driver's probe."""
        k = self.kernel
        dev.driver = name
        ret = await k.iommu.dma_configure(dev, cpu)
        if ret == -EPROBE_DEFER:
            dev.driver = None
            self.deferred.append((dev, name, probe))
            return ret
        ret = await probe(k, dev, cpu)
        if ret < 0:
            if ret not in (-ENODEV, -ENXIO):  # call_driver_probe: those two are silent
                k.dev_info(dev, f"probe with driver {name} failed with error {ret}")
            dev.driver = None
        else:
            self._bound()
        return ret

    async def _bind_virtio_iommu(self, dev: GuestDevice) -> None:
        """virtio_pci binds 00:03.0 (no IOMMU for itself: VIOT -EINVAL is ignored), then virtio_iommu binds virtio0."""
        from ._viommu_driver import ViommuDriver

        await sleep(DRIVER_REGISTER_PS)
        dev.driver = "virtio-pci"
        self.viommu = ViommuDriver(self.kernel, dev.info)
        await self.viommu.probe(0)

    async def _nvme_probe(self, kernel: GuestKernel, dev: GuestDevice, cpu: int) -> int:
        from ._nvme_pci import NvmeDriver

        self.nvme = NvmeDriver(kernel, dev)
        ret = await self.nvme.probe(cpu)
        return int(ret or 0)


async def boot(machine: Any) -> GuestKernel:
    """Boot the guest on ``machine`` (call from a sim task); returns the booted kernel."""
    kernel = GuestKernel(machine)
    b = Boot(kernel)
    kernel.boot = b
    await b.run()
    return kernel
