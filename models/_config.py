"""MachineConfig: every machine and policy option in one frozen record, and its option table.

The CLI flags, TOML scenario files and the testbench's ``platform(...)`` fixture
are three spellings of this one class; ``models.build_machine(config)`` turns it
into a running machine.  Each option's spelling lives once, in its field's
metadata (flag, metavar, help, choices or integer range, CLI group);
``machine_options()`` returns it as ``OptionSpec`` values, from which the CLI
builds its flags and help and the TOML loaders their key tables.  Validation
errors are ``ConfigError`` (a ValueError) whose message names the flag, so the
CLI can print one line and exit 2, whichever spelling carried the bad value.

Defaults are the seed's machine: ``qemu-system-x86_64 -machine q35 -smp 4 -m 64G
-device virtio-iommu -device vfio-pci,host=...`` booting Linux 6.7.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from ._cost import CostModel, shown

GIB = 1 << 30
MIB = 1 << 20

#: host IOMMU page sizes of the seed's host (Intel VT-d with 2M and 1G superpages):
#: 4 KiB | 2 MiB | 1 GiB = 0x40201000, the page mask the seed's guest prints.
HOST_IOMMU_PGSIZES_DEFAULT = (1 << 12) | (1 << 21) | (1 << 30)

#: the smallest guest RAM: the guest model's early boot keeps 256 MiB above the 16 MiB DMA zones
#: (models/guest/_kernel.py EARLY_BOOT_RESERVED), so below about 273M the boot runs out of pages;
#: 512M leaves room for the boot and a job's buffers
MIN_MEMORY = 512 * MIB
#: the most vCPUs: xAPIC destination IDs are 8 bits and 0xFF is the broadcast ID, so without x2APIC
#: (not modelled) QEMU's x86 machine refuses an APIC ID limit above 255
MAX_SMP = 255

#: the CLI groups of the options, in help order
GROUPS = ("machine", "device", "guest", "policy", "simulation")


class ConfigError(ValueError):
    """A machine option has a value the machine cannot have.  ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


_SIZE_RE = re.compile(r"^\s*(\d{1,20})\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 20, "K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str | int, option: str = "--memory") -> int:
    """QEMU ``-m`` syntax: a number with optional K/M/G/T suffix; bare numbers are MiB."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ConfigError(option, f"invalid size {shown(text)} (e.g. 64G, 2048M)")
    value = int(m.group(1)) << _SIZE_SHIFT[m.group(2).upper()]
    if value <= 0:
        raise ConfigError(option, f"size must be positive, not {shown(text)}")
    return value


def format_size(value: int) -> str:
    """``parse_size``'s inverse for whole units: 64 GiB -> ``"64G"``."""
    for suffix in "TGMK":
        shift = _SIZE_SHIFT[suffix]
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift}{suffix}"
    return str(value)


def _name_list(value: str | Iterable[str], option: str, what: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string of them (the kernel command line's form)."""
    if isinstance(value, str):
        return tuple(n for n in value.split(",") if n)
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise ConfigError(option, f"invalid value {shown(value)} ({what} names: a list of strings or NAME[,NAME])")
    return tuple(value)


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return _name_list(value, "--initcall-blacklist", "initcall")


def _module_names(value: str | Iterable[str]) -> tuple[str, ...]:
    return _name_list(value, "--modules", "module")


@attrs.frozen(kw_only=True)
class OptionSpec:
    """One machine option, as every spelling of it sees it.

    ``name`` is the MachineConfig field and the TOML ``[machine]`` key, ``flag`` (with
    ``aliases``) the command-line flag, ``help`` the flag's help text ending in
    ``(default <default_text>...)``, ``kind`` the type the command line converts a flag's text
    to before MachineConfig's own checks.
    """

    name: str
    flag: str
    aliases: tuple[str, ...]
    metavar: str
    help: str
    group: str
    kind: type[int] | type[str]
    #: the base a command-line integer is written in (0: Python's literal prefixes, e.g. 0x)
    base: int
    default: object
    default_text: str
    choices: tuple[str, ...] | None
    range: tuple[int, int] | None

    @property
    def toml_key(self) -> str:
        return self.name

    def check(self, value: object) -> None:
        """Raise ``ConfigError`` naming the flag if ``value`` is not one of the choices / in range."""
        _validate(self.flag, self.choices, self.range, value)
        if self.name == "guest_kernel":
            guest_kernel_behaviour(value)


def _validate(flag: str, choices: tuple[str, ...] | None, range: tuple[int, int] | None, value: object) -> None:
    if choices is not None and value not in choices:
        raise ConfigError(flag, f"invalid value {shown(value)} (choose from {', '.join(choices)})")
    if range is not None:
        lo, hi = range
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(flag, f"invalid value {shown(value)} (an integer from {lo} to {hi})")


@attrs.frozen(kw_only=True)
class _Meta:
    """A field's option metadata (``OptionSpec`` without what the field itself knows)."""

    flag: str
    metavar: str | None
    help: str
    group: str
    choices: tuple[str, ...] | None = None
    range: tuple[int, int] | None = None
    aliases: tuple[str, ...] = ()
    #: what the default means, after its value in the help (e.g. for "auto")
    default_note: str = ""
    base: int = 10


_OPTION = "viommu_sim.option"


def _option(flag: str, help: str, *, group: str = "machine", metavar: str | None = None,
            choices: tuple[str, ...] | None = None, range: tuple[int, int] | None = None,
            aliases: tuple[str, ...] = (), default_note: str = "", base: int = 10) -> dict[str, _Meta]:
    return {_OPTION: _Meta(flag=flag, metavar=metavar, help=help, group=group, choices=choices, range=range,
                           aliases=aliases, default_note=default_note, base=base)}


def _check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """The validator of every option field: its choices or range, from its metadata."""
    meta: _Meta = attribute.metadata[_OPTION]
    _validate(meta.flag, meta.choices, meta.range, value)


#: the oldest guest kernel the model boots: Linux 5.14 added ACPI VIOT, the table that describes a
#: q35 machine's virtio-iommu to an x86 guest (before it, virtio-iommu worked only on device-tree machines)
OLDEST_GUEST_KERNEL = (5, 14)
#: the first kernel with 6.12's virtio-iommu (``iotlb_sync_map`` and ``flush_iotlb_all``: Linux 6.8)
_BATCHING_KERNEL = (6, 8)
_KERNEL_VERSION = re.compile(r"^([1-9]\d?)\.(0|[1-9]\d{0,2})(?:\.(0|[1-9]\d{0,3}))?$")


def guest_kernel_behaviour(version: object) -> str:
    """The guest kernel behaviour the model gives a Linux ``version`` (MAJOR.MINOR[.PATCH]): "6.12"
    for 6.8 and later, "6.7" for 5.14 to 6.7; anything else raises ``ConfigError``."""
    m = _KERNEL_VERSION.match(version) if isinstance(version, str) else None
    if m is None:
        raise ConfigError("--guest-kernel", f"invalid value {shown(version)} (a Linux version MAJOR.MINOR, "
                          "e.g. 6.7, 6.12 or 7.0)")
    major_minor = (int(m.group(1)), int(m.group(2)))
    if major_minor < OLDEST_GUEST_KERNEL:
        raise ConfigError("--guest-kernel", f"Linux {version} is older than 5.14, the first kernel whose "
                          "virtio-iommu driver an x86 (q35) guest can use (ACPI VIOT)")
    return "6.12" if major_minor >= _BATCHING_KERNEL else "6.7"


def describe_guest_kernel(version: object) -> str:
    """``version`` and the behaviour it gets, for an echo: "6.9 (behaves as 6.12: 6.8+)", "6.7"."""
    behaviour = guest_kernel_behaviour(version)
    if version == behaviour:
        return behaviour
    return f"{version} (behaves as {behaviour}: {'6.8+' if behaviour == '6.12' else '5.14 .. 6.7'})"


def _check_guest_kernel(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    """``guest_kernel``: a Linux version the model knows (``guest_kernel_behaviour``)."""
    guest_kernel_behaviour(value)


def _check_map_batching(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    """``map_batching``: on, off, auto, or a reference to a MAP-submission policy class (``_policy_ref``)."""
    from ._policy_ref import check_map_policy  # not at import time: _policy_ref imports ConfigError from here

    check_map_policy(value)


#: the modules a guest kernel build may have (module names; "-" and "_" are the same, as modprobe has it):
#: the drivers of the machine's functions and the library modules they depend on
MODULE_NAMES = ("virtio_iommu", "scsi_common", "scsi_mod", "libata", "libahci", "ahci", "nvme_auth", "nvme_core",
                "nvme", "e1000e", "i2c_smbus", "i2c_i801")


#: the drivers the reference captures' Debian 6.12 kernel has as modules, in its initramfs's insmod
#: order (shared/reference/refboot/README.md 3.1: the dependency order of virtio_iommu, ahci, nvme,
#: e1000e, i2c_i801)
REFBOOT_MODULES = ("virtio_iommu", "scsi_common", "scsi_mod", "libata", "libahci", "ahci", "nvme_auth", "nvme_core",
                   "nvme", "e1000e", "i2c_smbus", "i2c_i801")

#: ``--preset NAME``: a machine in one word, as the individual options it stands for (explicit
#: options override it).  ``refboot``: the reference captures' machine as far as the model has
#: options for it -- QEMU's NVMe (serial deadbeef), -smp 4 -m 2G, Debian 6.12 with its drivers as
#: modules; not modelled yet: TCG timing and the q35 default CD-ROM on the AHCI.  ``seed``: the
#: default machine (the seed's).
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "refboot": {"nvme": "emulated", "smp": 4, "memory": "2G", "guest_kernel": "6.12", "modules": REFBOOT_MODULES},
}


def preset_options(name: str) -> dict[str, Any]:
    """The options ``--preset name`` stands for; an unknown name raises ConfigError naming it."""
    if name not in PRESETS:
        raise ConfigError("--preset", f"unknown preset {shown(name)} (choose from {', '.join(PRESETS)})")
    return dict(PRESETS[name])


def _check_modules(_inst: object, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for name in value:
        if name.replace("-", "_") not in MODULE_NAMES:
            raise ConfigError("--modules", f"unknown module {shown(name)} (known: {', '.join(MODULE_NAMES)})")
    seen = [n.replace("-", "_") for n in value]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup is not None:
        raise ConfigError("--modules", f"module {dup} is listed twice")


def _check_request_order(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    """``request_order``: a built-in request-ordering policy or a reference to one (``_viommu_ordering``)."""
    from ._viommu_ordering import check_request_order  # not at import time: it imports ConfigError from here

    check_request_order(value)


def _check_iommu_policy(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    """``iommu_policy``: lazy, strict, or a reference to a policy class that loads (``_policy_ref``)."""
    from ._policy_ref import check_iommu_policy  # not at import time: _policy_ref imports ConfigError from here

    check_iommu_policy(value)


@attrs.frozen(kw_only=True)
class MachineConfig:
    """The whole machine: platform, devices, guest kernel and policies."""

    smp: int = attrs.field(default=4, validator=_check, metadata=_option(
        "--smp", "number of vCPUs", metavar="N", range=(1, MAX_SMP)))
    memory: int = attrs.field(default=64 * GIB, converter=parse_size, validator=_check, metadata=_option(
        "--memory", "guest RAM, QEMU -m syntax", metavar="SIZE", aliases=("-m",)))
    nvme: str = attrs.field(default="vfio", validator=_check, metadata=_option(
        "--nvme", "00:04.0: passed-through PM173X (vfio), QEMU's emulated NVMe, or none",
        choices=("vfio", "emulated", "none")))
    aw_bits: int = attrs.field(default=64, validator=_check, metadata=_option(
        "--aw-bits", "virtio-iommu input address width", metavar="N", range=(32, 64)))
    seed: int = attrs.field(default=0, validator=_check, metadata=_option(
        "--seed", "simulation seed", metavar="N", range=(0, 2**64 - 1)))
    viommu: str = attrs.field(default="on", validator=_check, metadata=_option(
        "--viommu", "00:03.0 virtio-iommu-pci present", choices=("on", "none")))
    flavor: str = attrs.field(default="qemu", validator=_check, metadata=_option(
        "--flavor", "virtio-iommu behaviour: QEMU's exactly (qemu), the virtio spec's MUSTs (spec), or a peer "
        "VMM's documented differences from QEMU (cloud-hypervisor, crosvm)",
        group="device", choices=("qemu", "spec", "cloud-hypervisor", "crosvm")))
    #: the order and batching in which the device handles and completes a kick's requests: QEMU's
    #: (fifo), or a request-ordering policy (models/_viommu_ordering.py) by name or reference
    request_order: str = attrs.field(default="fifo", validator=_check_request_order, metadata=_option(
        "--request-order", "order in which virtio-iommu handles and completes a kick's requests: QEMU's "
        "ring order, one used entry and interrupt each (fifo), all used entries at the end (batch-complete), "
        "in reverse at the end (reverse), or a policy class: PATH.py:Class or package.module:Class",
        group="device", choices=("fifo", "batch-complete", "reverse")))
    iommu_policy: str = attrs.field(default="lazy", validator=_check_iommu_policy, metadata=_option(
        "--iommu-policy", "DMA domain TLB invalidation policy, kernel command line iommu.strict, or a policy "
        "class: PATH.py:Class or package.module:Class", group="guest", choices=("lazy", "strict")))
    #: a Linux version (``guest_kernel_behaviour``): 6.8 and later behave as 6.12, 5.14 .. 6.7 as 6.7
    guest_kernel: str = attrs.field(default="6.7", validator=_check_guest_kernel, metadata=_option(
        "--guest-kernel", "guest Linux version: 6.8 or later (6.8, 6.9, ..., 6.12, 7.0) behaves as 6.12 (the "
        "reference boot: MAPs batched, lazy domains get a flush queue), 5.14 to 6.7 as 6.7 (the seed: each MAP "
        "on its own, lazy falls back to strict)", group="guest", metavar="VERSION"))
    #: guest kernel command line ``initcall_blacklist=``: built-in driver initcalls that do not run
    initcall_blacklist: tuple[str, ...] = attrs.field(default=(), converter=_names, validator=_check, metadata=_option(
        "--initcall-blacklist", "kernel command line initcall_blacklist=, e.g. agp_intel_init",
        group="guest", metavar="NAME[,NAME]"))
    #: drivers built as modules, inserted by the initramfs in this order (``insmod``, then the init
    #: script's pause); every other driver is built in.  Empty: all built in (the seed's kernel).
    modules: tuple[str, ...] = attrs.field(default=(), converter=_module_names, validator=_check_modules, metadata=_option(
        "--modules", "kernel modules the initramfs inserts, in order (--preset refboot: virtio_iommu,scsi_common,"
        "scsi_mod,libata,libahci,ahci,nvme_auth,nvme_core,nvme,e1000e,i2c_smbus,i2c_i801); the others are built in",
        group="guest", metavar="NAME[,NAME]"))
    #: page sizes the host IOMMU behind VFIO supports (bitmap, as VFIO reports it)
    host_iommu_pgsizes: int = attrs.field(default=HOST_IOMMU_PGSIZES_DEFAULT, validator=_check, metadata=_option(
        "--host-iommu-pgsizes", "page sizes of the host IOMMU behind VFIO, a bitmap as VFIO reports it",
        metavar="MASK", range=(1, 2**64 - 1), base=0))
    #: dma-iommu flush queue of lazy (DMA-FQ) domains: per-CPU rings (256 entries, 10 ms) or one ring
    #: (32768 entries, 1000 ms, as ``shadow_on_flush`` selects).  "auto" follows ``guest_kernel``: 6.7's
    #: virtio-iommu lacks IOMMU_CAP_DEFERRED_FLUSH (lazy domains fall back to strict), 6.12 has per-CPU
    #: queues.  An explicit choice gives virtio-iommu ``flush_iotlb_all`` (the 6.8 patch) on any kernel.
    flush_queue: str = attrs.field(default="auto", validator=_check, metadata=_option(
        "--flush-queue", "lazy domains' flush queue", group="policy", choices=("percpu", "single", "auto"),
        default_note="as the guest kernel; an explicit choice gives virtio-iommu flush_iotlb_all on any kernel"))
    #: virtio-iommu MAPs: "on" queues them and syncs once per map operation (``iotlb_sync_map``, 6.8+),
    #: "off" sends each MAP synchronously (6.7); "auto" follows ``guest_kernel``; or a reference to a
    #: MAP-submission policy class (``models.guest.MapSubmissionPolicy``)
    map_batching: str = attrs.field(default="auto", validator=_check_map_batching, metadata=_option(
        "--map-batching", "queue MAPs and sync once per map operation, or a MAP-submission policy class: "
        "PATH.py:Class or package.module:Class", group="policy",
        choices=("on", "off", "auto"), default_note="as the guest kernel: 6.7 off, 6.12 on"))
    #: the level of detail of the simulation (issue 12; ARCHITECTURE.md "Levels of detail"): "full" moves
    #: every ring, descriptor and request through guest memory as bytes; "fast" hands the same requests
    #: over as objects (transaction level) with the same decisions and the same simulated delays in the
    #: same order, so every result is the same.  Not echoed in results: it cannot change them.
    detail: str = attrs.field(default="full", validator=_check, metadata=_option(
        "--detail", "level of detail: every ring and request as bytes in guest memory (full) or handed over as "
        "objects with the same timing and results (fast)", group="simulation", choices=("full", "fast")))
    #: every timing parameter (see models/_cost.py); spelt as the TOML ``[cost]`` table
    cost: CostModel = attrs.field(factory=CostModel)

    @host_iommu_pgsizes.validator
    def _check_pgsizes(self, _attr: object, value: int) -> None:
        if not value & (1 << 12):
            raise ConfigError("--host-iommu-pgsizes", f"{value:#x} has no 4 KiB page size (bit 12, 0x1000): "
                              "the guest maps 4 KiB pages")

    @memory.validator
    def _check_memory(self, _attr: object, value: int) -> None:
        if value < MIN_MEMORY:
            raise ConfigError("--memory", f"{shown(value)} bytes is too small for the guest "
                              f"(at least {format_size(MIN_MEMORY)})")
        if value > 16 * (1 << 40):
            raise ConfigError("--memory", f"{shown(value)} bytes is larger than this simulator supports (16T)")

    def evolve(self, **changes: Any) -> MachineConfig:
        return attrs.evolve(self, **changes)


def _default_text(default: object) -> str:
    if isinstance(default, tuple):
        return ",".join(default) or "none"
    if isinstance(default, int) and default > 0xFFFF:  # a bitmap
        return hex(default)
    return str(default)


def _spec(a: attrs.Attribute[Any]) -> OptionSpec:
    meta: _Meta = a.metadata[_OPTION]
    default: object = a.default
    text = format_size(default) if a.name == "memory" and isinstance(default, int) else _default_text(default)
    note = f": {meta.default_note}" if meta.default_note else ""
    metavar = meta.metavar or "|".join(meta.choices or ())
    return OptionSpec(name=a.name, flag=meta.flag, aliases=meta.aliases, metavar=metavar,
                      help=f"{meta.help} (default {text}{note})", group=meta.group,
                      kind=int if a.converter is None and a.type in (int, "int") else str, base=meta.base,
                      default=default, default_text=text,
                      choices=meta.choices, range=meta.range)


_SPECS = tuple(_spec(a) for a in attrs.fields(MachineConfig) if _OPTION in a.metadata)


def machine_options(*groups: str) -> tuple[OptionSpec, ...]:
    """Every machine option (all of MachineConfig's fields but ``cost``) in field order, or only
    those of the given CLI ``groups`` (see ``GROUPS``)."""
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown option group {g!r} (choose from {', '.join(GROUPS)})")
    return tuple(s for s in _SPECS if not groups or s.group in groups)


def unknown_option(names: Iterable[str]) -> str | None:
    """The first of ``names`` that is no machine option (``cost`` is none either), or None."""
    known = {s.name for s in _SPECS}
    return next((n for n in names if n not in known), None)


def machine_config(options: dict[str, Any], *, cost: CostModel | None = None,
                   label: str = "machine.") -> MachineConfig:
    """``MachineConfig(**options)``; a name that is no option raises ``ConfigError`` naming it
    (``label + name``) and listing the known ones, instead of a ``TypeError``."""
    bad = unknown_option(options)
    if bad is not None:
        known = ", ".join(s.name for s in _SPECS)
        raise ConfigError(f"{label}{bad}", f"unknown machine option (known: {known})")
    if cost is None:
        return MachineConfig(**options)
    return MachineConfig(**options, cost=cost)
