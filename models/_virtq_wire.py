"""Split-virtqueue and virtio-pci (modern) wire formats: layouts, flag bits, register map.

Follows the virtio spec (1.2/1.3): ``split-ring.tex`` ("The Virtqueue Descriptor
Table", "The Virtqueue Available Ring", "The Virtqueue Used Ring", "Indirect
Descriptors"), ``content.tex`` ("Device Status Field", "Reserved Feature Bits")
and ``transport-pci.tex`` ("Virtio Structure PCI Capabilities", "Common
configuration structure layout" = spec 4.1.4.3).  Everything is little-endian;
64-bit common-config fields are two 32-bit halves, low half first.

The ring areas are described as offsets from each area's base address, so the
device side (models/_virtqueue.py DeviceQueue) and the driver side (DriverQueue)
compute the same addresses from one definition.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from ._wire import WireStruct

# -- descriptor and ring flags (split-ring.tex, virtio_ring.h) ---------------------------
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

#: "Queue Size ... the maximum is 32768" (split-ring.tex, "Virtqueues")
VIRTQUEUE_MAX_SIZE = 32768
#: alignment of the Descriptor Area, Driver Area and Device Area (spec 2.7, table)
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4

# -- reserved feature bits (content.tex "Reserved Feature Bits") -------------------------
VIRTIO_F_NOTIFY_ON_EMPTY = 24  # legacy; QEMU still offers it (virtio_split_should_notify)
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_RING_RESET = 40


class DeviceStatus(enum.IntFlag):
    """``device_status`` bits (content.tex "Device Status Field"); 0 means reset."""

    ACKNOWLEDGE = 1  # the guest has noticed the device
    DRIVER = 2  # the guest knows how to drive it
    DRIVER_OK = 4  # the driver is set up and ready
    FEATURES_OK = 8  # feature negotiation is complete (the device may refuse it)
    SUSPEND = 16
    NEEDS_RESET = 64  # the device hit an unrecoverable error
    FAILED = 128  # the guest gave up on the device


#: ISR status bits (transport-pci.tex "ISR status capability")
ISR_QUEUE = 1
ISR_CONFIG = 2
#: "no MSI-X vector" (transport-pci.tex "MSI-X Vector Configuration")
VIRTIO_MSI_NO_VECTOR = 0xFFFF

# -- split ring ------------------------------------------------------------------------
@attrs.frozen
class VirtqDesc(WireStruct):
    """struct virtq_desc (16 B): addr @0, len @8, flags @12, next @14."""

    FORMAT: ClassVar[str] = "<QIHH"
    SIZE: ClassVar[int] = 16

    addr: int
    len: int
    flags: int = 0
    next: int = 0

    @property
    def has_next(self) -> bool:
        return bool(self.flags & VIRTQ_DESC_F_NEXT)

    @property
    def is_write_only(self) -> bool:
        return bool(self.flags & VIRTQ_DESC_F_WRITE)

    @property
    def is_indirect(self) -> bool:
        return bool(self.flags & VIRTQ_DESC_F_INDIRECT)


@attrs.frozen
class VirtqUsedElem(WireStruct):
    """struct virtq_used_elem (8 B): id (chain head) @0, len (bytes written) @4."""

    FORMAT: ClassVar[str] = "<II"
    SIZE: ClassVar[int] = 8

    id: int
    len: int


@attrs.frozen
class VirtqRingHeader(WireStruct):
    """The first 4 bytes of struct virtq_avail and struct virtq_used: flags @0, idx @2."""

    FORMAT: ClassVar[str] = "<HH"
    SIZE: ClassVar[int] = 4

    flags: int
    idx: int


#: byte offsets inside the ring areas (split-ring.tex struct virtq_avail / virtq_used)
RING_FLAGS = 0
RING_IDX = 2
RING_ENTRIES = VirtqRingHeader.SIZE


def desc_table_size(num: int) -> int:
    """Descriptor Area bytes: 16 * Queue Size."""
    return VirtqDesc.SIZE * num


def avail_ring_size(num: int) -> int:
    """Driver Area bytes: flags, idx, ring[num], used_event = 6 + 2 * Queue Size."""
    return RING_ENTRIES + 2 * num + 2


def used_ring_size(num: int) -> int:
    """Device Area bytes: flags, idx, ring[num] of 8-byte elements, avail_event = 6 + 8 * Queue Size."""
    return RING_ENTRIES + VirtqUsedElem.SIZE * num + 2


def avail_entry_offset(slot: int) -> int:
    """Offset of avail.ring[slot] in the Driver Area."""
    return RING_ENTRIES + 2 * slot


def used_event_offset(num: int) -> int:
    """Offset of used_event (after avail.ring[num]); meaningful only with EVENT_IDX."""
    return RING_ENTRIES + 2 * num


def used_entry_offset(slot: int) -> int:
    """Offset of used.ring[slot] in the Device Area."""
    return RING_ENTRIES + VirtqUsedElem.SIZE * slot


def avail_event_offset(num: int) -> int:
    """Offset of avail_event (after used.ring[num]); meaningful only with EVENT_IDX."""
    return RING_ENTRIES + VirtqUsedElem.SIZE * num


# -- virtio-pci capabilities (transport-pci.tex "Virtio Structure PCI Capabilities") ---
PCI_CAP_ID_VNDR = 0x09


class PciCapType(enum.IntEnum):
    """``virtio_pci_cap.cfg_type``."""

    COMMON_CFG = 1
    NOTIFY_CFG = 2
    ISR_CFG = 3
    DEVICE_CFG = 4
    PCI_CFG = 5
    SHARED_MEMORY_CFG = 8
    VENDOR_CFG = 9


@attrs.frozen
class VirtioPciCap(WireStruct):
    """struct virtio_pci_cap (16 B): vndr @0, next @1, len @2, cfg_type @3, bar @4, id @5, offset @8, length @12."""

    FORMAT: ClassVar[str] = "<BBBBBB2xII"
    SIZE: ClassVar[int] = 16

    cap_vndr: int
    cap_next: int
    cap_len: int
    cfg_type: int
    bar: int
    id: int
    offset: int
    length: int


@attrs.frozen
class VirtioPciNotifyCap(WireStruct):
    """struct virtio_pci_notify_cap (20 B): a virtio_pci_cap then notify_off_multiplier @16."""

    FORMAT: ClassVar[str] = "<BBBBBB2xIII"
    SIZE: ClassVar[int] = 20

    cap_vndr: int
    cap_next: int
    cap_len: int
    cfg_type: int
    bar: int
    id: int
    offset: int
    length: int
    notify_off_multiplier: int


@attrs.frozen
class VirtioPciCommonCfg(WireStruct):
    """struct virtio_pci_common_cfg (spec 4.1.4.3), 64 B including the admin-queue fields."""

    FORMAT: ClassVar[str] = "<IIIIHHBBHHHHHQQQHHHH"
    SIZE: ClassVar[int] = 0x40

    device_feature_select: int
    device_feature: int
    driver_feature_select: int
    driver_feature: int
    config_msix_vector: int
    num_queues: int
    device_status: int
    config_generation: int
    queue_select: int
    queue_size: int
    queue_msix_vector: int
    queue_enable: int
    queue_notify_off: int
    queue_desc: int
    queue_driver: int
    queue_device: int
    queue_notif_config_data: int
    queue_reset: int
    admin_queue_index: int
    admin_queue_num: int


class CommonCfg(enum.IntEnum):
    """Register offsets in the common configuration structure; 64-bit fields split into lo/hi."""

    DEVICE_FEATURE_SELECT = 0x00
    DEVICE_FEATURE = 0x04
    DRIVER_FEATURE_SELECT = 0x08
    DRIVER_FEATURE = 0x0C
    CONFIG_MSIX_VECTOR = 0x10
    NUM_QUEUES = 0x12
    DEVICE_STATUS = 0x14
    CONFIG_GENERATION = 0x15
    QUEUE_SELECT = 0x16
    QUEUE_SIZE = 0x18
    QUEUE_MSIX_VECTOR = 0x1A
    QUEUE_ENABLE = 0x1C
    QUEUE_NOTIFY_OFF = 0x1E
    QUEUE_DESC_LO = 0x20
    QUEUE_DESC_HI = 0x24
    QUEUE_DRIVER_LO = 0x28
    QUEUE_DRIVER_HI = 0x2C
    QUEUE_DEVICE_LO = 0x30
    QUEUE_DEVICE_HI = 0x34
    QUEUE_NOTIF_CONFIG_DATA = 0x38
    QUEUE_RESET = 0x3A
    ADMIN_QUEUE_INDEX = 0x3C
    ADMIN_QUEUE_NUM = 0x3E

