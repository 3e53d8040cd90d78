"""The default ``platform`` factory: build the machine a test asks for and boot the guest on it."""

from __future__ import annotations

from typing import Any

import attrs

from sim import Simulator


@attrs.define(eq=False)
class Platform:
    """A booted machine, as a test sees it."""

    sim: Simulator
    config: Any  # models.MachineConfig
    machine: Any  # models._machine.Machine: memory, bus, irq, viommu (device), nvme (controller), host
    kernel: Any  # models.guest._kernel.GuestKernel: printk, devices, iommu, mm

    @property
    def viommu_driver(self) -> Any:
        """The guest's virtio-iommu driver (None without a vIOMMU)."""
        return self.kernel.boot.viommu

    @property
    def nvme_driver(self) -> Any:
        """The guest's NVMe driver (None without an NVMe)."""
        return self.kernel.boot.nvme

    def dmesg(self, pattern: str | None = None) -> str:
        return str(self.kernel.printk.dmesg(pattern))


async def boot_platform(options: dict[str, Any], sim: Simulator) -> Platform:
    """``MachineConfig(**options, seed=<test seed>)``, built on ``sim`` and booted; returns the Platform.

    A keyword that is no machine option, or a bad value, raises ``ConfigError`` naming the option,
    with the message the CLI and scenario files give."""
    from models import build_machine, machine_config
    from models.guest import boot

    options = dict(options)
    options.setdefault("seed", sim.seed % (1 << 64))
    config = machine_config(options, label="")
    machine = build_machine(config, sim)
    kernel = await boot(machine)
    return Platform(sim, config, machine, kernel)


#: request types and statuses of virtio-iommu (spec 5.13.6), the bins of request coverage
REQUEST_TYPES = ("ATTACH", "DETACH", "MAP", "UNMAP", "PROBE")
STATUSES = ("OK", "IOERR", "UNSUPP", "DEVERR", "INVAL", "RANGE", "NOENT", "FAULT", "NOMEM")
POLICIES = ("strict", "lazy")


def sample_request_coverage(sim: Simulator, policy: str) -> Any:
    """Sample every request the virtio-iommu answers into the session's request type x status x policy
    coverage (reported at the end of the pytest session); call before ``await platform(...)``."""
    from sim import CallbackSink

    from ._coverage import Coverage

    cov = Coverage("virtio-iommu requests", {"type": REQUEST_TYPES, "status": STATUSES, "policy": POLICIES})

    def on_record(rec: Any) -> None:
        if rec.event == "virtio_iommu_request_status":
            t, st = rec.fields["type"], rec.fields["status"]
            cov.sample(type=REQUEST_TYPES[t - 1] if 1 <= t <= 5 else f"type{t}",
                       status=STATUSES[st] if 0 <= st < len(STATUSES) else f"status{st}", policy=policy)

    sim.add_sink(CallbackSink(on_record))
    return cov
