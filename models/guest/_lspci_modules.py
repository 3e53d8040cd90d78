"""Which PCI drivers a guest kernel build has as loadable modules: the module index ``lspci -k`` reads.

pciutils ls-kernel.c (``show_kernel``) prints "Kernel modules:" with the modules
libkmod finds for the device's ``modalias`` (``kmod_module_new_from_lookup``
over ``modules.alias``), consecutive duplicates dropped.  ``modules.alias`` is
written by depmod from each module's ``MODULE_DEVICE_TABLE(pci, ...)`` as
scripts/mod/file2alias.c ``do_pci_entry`` renders it: ``pci:v%08Xd%08Xsv%08Xsd%08X``
then ``bc``/``sc``/``i`` for each class byte its mask covers, a ``*`` for every
wildcard field and one at the end; kmod matches with ``fnmatch``.  A driver
built into the kernel has no entry there, so lspci lists no module for it (the
"Kernel driver in use:" line comes from sysfs and is printed either way).

The builds are data of the guest kernel, not of a device:

* ``SEED_BUILD``: the seed's 6.7 guest, every driver built in (the boot that
  ``_boot.py`` models), so ``-k`` shows no "Kernel modules:" line;
* ``DEBIAN_6_12_BUILD``: Debian's linux-image-6.12.117+deb12-amd64 of the
  reference captures, where e1000e, nvme, ahci, bochs, lpc_ich and i2c_i801 are
  modules and virtio-pci and intel-agp are built in.  Each module carries the
  entries of its PCI id table that concern the q35 functions (the real tables are
  longer; the other entries match no function of these machines).

``kernel_build`` picks the build from the guest kernel version: 6.8 and later
are the reference's Debian 6.12 build.  The boot itself still binds every
driver at its initcall as a built-in one would (the modular boot is issue 13,
item 4); only the module index differs.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import attrs

from .._config import guest_kernel_behaviour

#: include/linux/mod_devicetable.h PCI_ANY_ID
PCI_ANY_ID = 0xFFFF_FFFF


@attrs.frozen
class PciDeviceId:
    """One ``struct pci_device_id`` entry: ids (``PCI_ANY_ID`` = any) and a class under a mask."""

    vendor: int = PCI_ANY_ID
    device: int = PCI_ANY_ID
    subvendor: int = PCI_ANY_ID
    subdevice: int = PCI_ANY_ID
    class_code: int = 0
    class_mask: int = 0

    def alias(self) -> str:
        """The ``modules.alias`` pattern (file2alias.c ``do_pci_entry``)."""

        def field(prefix: str, value: int) -> str:
            return f"{prefix}*" if value == PCI_ANY_ID else f"{prefix}{value:08X}"

        def class_byte(prefix: str, shift: int) -> str:
            if (self.class_mask >> shift) & 0xFF == 0xFF:
                return f"{prefix}{(self.class_code >> shift) & 0xFF:02X}"
            return f"{prefix}*"

        return ("pci:" + field("v", self.vendor) + field("d", self.device) + field("sv", self.subvendor)
                + field("sd", self.subdevice) + class_byte("bc", 16) + class_byte("sc", 8) + class_byte("i", 0)
                + "*")


@attrs.frozen
class KernelModule:
    """A loadable module and its PCI id table (``MODULE_DEVICE_TABLE(pci, ...)``)."""

    name: str
    id_table: tuple[PciDeviceId, ...]


@attrs.frozen
class KernelBuild:
    """A guest kernel build: its name and the PCI drivers it has as modules, in ``modules.alias`` order."""

    name: str
    modules: tuple[KernelModule, ...] = ()

    def modules_for(self, modalias: str) -> tuple[str, ...]:
        """The module names lspci prints for a device's ``modalias``, consecutive duplicates dropped."""
        found: list[str] = []
        for module in self.modules:
            for entry in module.id_table:
                if fnmatchcase(modalias, entry.alias()) and (not found or found[-1] != module.name):
                    found.append(module.name)
        return tuple(found)


def pci_modalias(vendor: int, device: int, subvendor: int, subdevice: int, class_code: int) -> str:
    """``/sys/bus/pci/devices/*/modalias`` (drivers/pci/pci-sysfs.c ``modalias_show``)."""
    return (f"pci:v{vendor:08X}d{device:08X}sv{subvendor:08X}sd{subdevice:08X}"
            f"bc{class_code >> 16 & 0xFF:02X}sc{class_code >> 8 & 0xFF:02X}i{class_code & 0xFF:02X}")


SEED_BUILD = KernelBuild("the seed's Linux 6.7 (every driver built in)")

DEBIAN_6_12_BUILD = KernelBuild(
    "Debian linux-image-6.12.117+deb12-amd64",
    (
        # drivers/gpu/drm/tiny/bochs.c bochs_pci_tbl: QEMU's std VGA
        KernelModule("bochs", (PciDeviceId(0x1234, 0x1111), PciDeviceId(0x4321, 0x1111))),
        # drivers/net/ethernet/intel/e1000e/netdev.c e1000_pci_tbl: E1000_DEV_ID_82574L
        KernelModule("e1000e", (PciDeviceId(0x8086, 0x10D3),)),
        # drivers/nvme/host/pci.c nvme_id_table: QEMU's controller, then any NVMe by class
        KernelModule("nvme", (PciDeviceId(0x1B36, 0x0010), PciDeviceId(class_code=0x010802, class_mask=0xFFFFFF))),
        # drivers/mfd/lpc_ich.c lpc_ich_ids: ICH9 LPC (LPC_ICH9)
        KernelModule("lpc_ich", (PciDeviceId(0x8086, 0x2918),)),
        # drivers/ata/ahci.c ahci_pci_tbl: ICH9R, then any AHCI 1.0 by class
        KernelModule("ahci", (PciDeviceId(0x8086, 0x2922), PciDeviceId(class_code=0x010601, class_mask=0xFFFFFF))),
        # drivers/i2c/busses/i2c-i801.c i801_ids: ICH9_6 (the driver registers as "i801_smbus")
        KernelModule("i2c_i801", (PciDeviceId(0x8086, 0x2930),)),
    ),
)


def kernel_build(guest_kernel: str) -> KernelBuild:
    """The build of the guest kernel ``guest_kernel`` (a ``MachineConfig.guest_kernel`` version)."""
    return DEBIAN_6_12_BUILD if guest_kernel_behaviour(guest_kernel) == "6.12" else SEED_BUILD
