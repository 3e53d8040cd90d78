"""PCI vendor and device IDs of the q35 machine's functions, for the platform and the guest.

The names are Linux's include/linux/pci_ids.h (QEMU's include/hw/pci/pci_ids.h
where Linux has none); QEMU builds the functions with these IDs and the guest's
drivers match on them.
"""

from __future__ import annotations

from ._viommu_wire import VIRTIO_ID_IOMMU

PCI_VENDOR_ID_INTEL = 0x8086
#: q35's MCH (host bridge): QEMU PCI_DEVICE_ID_INTEL_Q35_MCH
PCI_DEVICE_ID_INTEL_Q35_MCH = 0x29C0
#: ICH9 LPC bridge (QEMU PCI_DEVICE_ID_INTEL_ICH9_8)
PCI_DEVICE_ID_INTEL_ICH9_LPC = 0x2918
#: ICH9 AHCI controller (QEMU PCI_DEVICE_ID_INTEL_82801IR)
PCI_DEVICE_ID_INTEL_ICH9_AHCI = 0x2922
#: ICH9 SMBus controller (Linux PCI_DEVICE_ID_INTEL_ICH9_6)
PCI_DEVICE_ID_INTEL_ICH9_SMBUS = 0x2930
#: 82574L Gigabit NIC, QEMU's e1000e (Linux e1000e E1000_DEV_ID_82574L)
PCI_DEVICE_ID_INTEL_82574L = 0x10D3

#: Bochs/QEMU std VGA (Linux PCI_VENDOR_ID_QEMU / QEMU PCI_VENDOR_ID_QEMU)
PCI_VENDOR_ID_QEMU = 0x1234
PCI_DEVICE_ID_QEMU_VGA = 0x1111

#: virtio (Linux PCI_VENDOR_ID_REDHAT_QUMRANET), also QEMU's subsystem vendor of its devices
PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1AF4
PCI_SUBVENDOR_ID_REDHAT_QUMRANET = 0x1AF4
#: QEMU's default subsystem ID (Linux PCI_SUBDEVICE_ID_QEMU)
PCI_SUBDEVICE_ID_QEMU = 0x1100
#: modern (virtio 1.0) virtio-pci device IDs: base + virtio device ID (virtio spec 4.1.2.1;
#: QEMU PCI_DEVICE_ID_VIRTIO_10_BASE); Linux's virtio-pci binds 0x1000..0x107F, modern 0x1040..0x107F
PCI_DEVICE_ID_VIRTIO_10_BASE = 0x1040
PCI_DEVICE_ID_VIRTIO_MAX = 0x107F
#: the virtio-iommu-pci function's (vendor, device)
VIRTIO_IOMMU_PCI_ID = (PCI_VENDOR_ID_REDHAT_QUMRANET, PCI_DEVICE_ID_VIRTIO_10_BASE + VIRTIO_ID_IOMMU)

#: QEMU's own PCI devices (QEMU PCI_VENDOR_ID_REDHAT, PCI_DEVICE_ID_REDHAT_NVME)
PCI_VENDOR_ID_REDHAT = 0x1B36
PCI_DEVICE_ID_REDHAT_NVME = 0x0010

#: Samsung PM173x NVMe SSDs (Linux PCI_VENDOR_ID_SAMSUNG)
PCI_VENDOR_ID_SAMSUNG = 0x144D
PCI_DEVICE_ID_SAMSUNG_PM173X = 0xA824
PCI_SUBDEVICE_ID_SAMSUNG_PM173X = 0xA801
