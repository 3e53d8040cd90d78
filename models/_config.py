"""MachineConfig: every machine and policy option in one frozen record.

The CLI flags, TOML scenario files and the testbench's ``platform(...)`` fixture
are three spellings of this one class; ``models.build_machine(config)`` turns it
into a running machine.  Validation errors are ``ConfigError`` (a ValueError)
whose message names the option, so the CLI can print one line and exit 2.

Defaults are the seed's machine: ``qemu-system-x86_64 -machine q35 -smp 4 -m 64G
-device virtio-iommu -device vfio-pci,host=...`` booting Linux 6.7.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ._cost import CostModel

GIB = 1 << 30
MIB = 1 << 20

#: host IOMMU page sizes of the seed's host (Intel VT-d with 2M and 1G superpages):
#: 4 KiB | 2 MiB | 1 GiB = 0x40201000, the page mask the seed's guest prints.
HOST_IOMMU_PGSIZES_DEFAULT = (1 << 12) | (1 << 21) | (1 << 30)


class ConfigError(ValueError):
    """A machine option has a value the machine cannot have.  ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


def _choice(option: str, choices: tuple[str, ...]) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if value not in choices:
            raise ConfigError(option, f"invalid value {value!r} (choose from {', '.join(choices)})")

    return check


def _int_range(option: str, lo: int, hi: int) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(option, f"invalid value {value!r} (an integer from {lo} to {hi})")

    return check


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 20, "K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str | int, option: str = "--memory") -> int:
    """QEMU ``-m`` syntax: a number with optional K/M/G/T suffix; bare numbers are MiB."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ConfigError(option, f"invalid size {text!r} (e.g. 64G, 2048M)")
    value = int(m.group(1)) << _SIZE_SHIFT[m.group(2).upper()]
    if value <= 0:
        raise ConfigError(option, f"size must be positive, not {text!r}")
    return value


@attrs.frozen(kw_only=True)
class MachineConfig:
    """The whole machine: platform, devices, guest kernel and policies."""

    smp: int = attrs.field(default=4, validator=_int_range("--smp", 1, 288))
    memory: int = attrs.field(default=64 * GIB, converter=parse_size)
    nvme: str = attrs.field(default="vfio", validator=_choice("--nvme", ("vfio", "emulated", "none")))
    aw_bits: int = attrs.field(default=64, validator=_int_range("--aw-bits", 32, 64))
    seed: int = attrs.field(default=0, validator=_int_range("--seed", 0, 2**64 - 1))
    viommu: str = attrs.field(default="on", validator=_choice("--viommu", ("on", "none")))
    flavor: str = attrs.field(default="qemu", validator=_choice("--flavor", ("qemu", "spec")))
    iommu_policy: str = attrs.field(default="lazy", validator=_choice("--iommu-policy", ("lazy", "strict")))
    guest_kernel: str = attrs.field(default="6.7", validator=_choice("--guest-kernel", ("6.7", "6.12")))
    #: dma-iommu flush queue of lazy (DMA-FQ) domains: per-CPU rings (256 entries, 10 ms) or one ring
    #: (32768 entries, 1000 ms, as ``shadow_on_flush`` selects).  "auto" follows ``guest_kernel``: 6.7's
    #: virtio-iommu lacks IOMMU_CAP_DEFERRED_FLUSH (lazy domains fall back to strict), 6.12 has per-CPU
    #: queues.  An explicit choice gives virtio-iommu ``flush_iotlb_all`` (the 6.8 patch) on any kernel.
    flush_queue: str = attrs.field(default="auto", validator=_choice("--flush-queue", ("percpu", "single", "auto")))
    #: virtio-iommu MAPs: "on" queues them and syncs once per map operation (``iotlb_sync_map``, 6.8+),
    #: "off" sends each MAP synchronously (6.7); "auto" follows ``guest_kernel``
    map_batching: str = attrs.field(default="auto", validator=_choice("--map-batching", ("on", "off", "auto")))
    #: guest kernel command line ``initcall_blacklist=``: built-in driver initcalls that do not run
    initcall_blacklist: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: page sizes the host IOMMU behind VFIO supports (bitmap, as VFIO reports it)
    host_iommu_pgsizes: int = HOST_IOMMU_PGSIZES_DEFAULT
    #: every timing parameter (see models/_cost.py)
    cost: CostModel = attrs.field(factory=CostModel)

    @memory.validator
    def _check_memory(self, _attr: object, value: int) -> None:
        if value < 128 * MIB:
            raise ConfigError("--memory", f"{value} bytes is too small for a q35 guest (at least 128M)")
        if value > 16 * (1 << 40):
            raise ConfigError("--memory", f"{value} bytes is larger than this simulator supports (16T)")

    def evolve(self, **changes: Any) -> MachineConfig:
        return attrs.evolve(self, **changes)
