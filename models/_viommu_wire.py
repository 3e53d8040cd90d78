"""virtio-iommu wire formats: config space, requests, PROBE properties, fault events.

Layouts follow the virtio spec (device-types/iommu/description.tex, "Device
configuration layout", "Device operations", "PROBE properties", "Fault
reporting") and QEMU's copy of the Linux uapi header
(include/standard-headers/linux/virtio_iommu.h).  Everything is little-endian.

A request class describes the *device-readable part* of a request: the 4-byte
head (``type`` + 3 reserved bytes, which the device ignores) followed by the
body, i.e. ``sizeof(struct virtio_iommu_req_X) - sizeof(tail)`` bytes, exactly
what QEMU's ``virtio_iommu_iov_to_req`` copies.  The tail (``status`` + 3
reserved bytes) lives in the device-writable part.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Self

import attrs

from ._wire import WireStruct, WireValue, check_u32, check_u64

VIRTIO_ID_IOMMU = 23
#: the device's virtqueues (spec "Virtqueues"): 0 requestq, 1 eventq
REQUESTQ = 0
EVENTQ = 1


class ReqType(enum.IntEnum):
    """``virtio_iommu_req_head.type`` (spec "Device operations")."""

    ATTACH = 1
    DETACH = 2
    MAP = 3
    UNMAP = 4
    PROBE = 5


class Status(enum.IntEnum):
    """``virtio_iommu_req_tail.status`` (spec "Device operations")."""

    OK = 0
    IOERR = 1
    UNSUPP = 2
    DEVERR = 3
    INVAL = 4
    RANGE = 5
    NOENT = 6
    FAULT = 7
    NOMEM = 8


# -- feature bits (bit numbers) ----------------------------------------------------
F_INPUT_RANGE = 0
F_DOMAIN_RANGE = 1
F_MAP_UNMAP = 2
F_BYPASS = 3
F_PROBE = 4
F_MMIO = 5
F_BYPASS_CONFIG = 6
VIRTIO_F_NOTIFY_ON_EMPTY = 24
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_RING_RESET = 40

#: what QEMU offers through the modern virtio-pci interface (virtio_iommu_device_realize
#: adds the device bits and INDIRECT_DESC/EVENT_IDX/VERSION_1; the common virtio defaults
#: add NOTIFY_ON_EMPTY, ANY_LAYOUT and RING_RESET).  QEMU's get_features trace also
#: shows bit 30 (VIRTIO_F_BAD_FEATURE), a legacy-only bit virtio-pci masks out of the
#: modern device_feature register.  F_BYPASS (3) is not offered since QEMU 7.0.
QEMU_FEATURES = sum(
    1 << b
    for b in (
        F_INPUT_RANGE, F_DOMAIN_RANGE, F_MAP_UNMAP, F_PROBE, F_MMIO, F_BYPASS_CONFIG,
        VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_ANY_LAYOUT, VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_RING_RESET,
    )
)

# -- flags ------------------------------------------------------------------------
ATTACH_F_BYPASS = 1 << 0
MAP_F_READ = 1 << 0
MAP_F_WRITE = 1 << 1
MAP_F_MMIO = 1 << 2
MAP_F_MASK = MAP_F_READ | MAP_F_WRITE | MAP_F_MMIO

PROBE_T_NONE = 0
PROBE_T_RESV_MEM = 1
PROBE_T_MASK = 0xFFF
RESV_MEM_T_RESERVED = 0
RESV_MEM_T_MSI = 1

FAULT_R_UNKNOWN = 0
FAULT_R_DOMAIN = 1
FAULT_R_MAPPING = 2
FAULT_F_READ = 1 << 0
FAULT_F_WRITE = 1 << 1
FAULT_F_EXEC = 1 << 2  # Linux uapi only; QEMU never sets it
FAULT_F_ADDRESS = 1 << 8

HEAD_SIZE = 4
TAIL_SIZE = 4

class _Request(WireStruct):
    """A request's device-readable part: head (type + 3 ignored bytes) then the body."""

    TYPE: ClassVar[ReqType]

    def _to_wire(self) -> tuple[WireValue, ...]:
        return (int(self.TYPE), *super()._to_wire())

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Self:
        return super()._from_wire(values[1:])


@attrs.frozen
class IommuConfig(WireStruct):
    """struct virtio_iommu_config (40 bytes)."""

    FORMAT: ClassVar[str] = "<QQQIIIB3x"
    SIZE: ClassVar[int] = 40

    page_size_mask: int
    input_range_start: int
    input_range_end: int
    domain_range_start: int
    domain_range_end: int
    probe_size: int
    bypass: int


@attrs.frozen
class ReqHead(WireStruct):
    """struct virtio_iommu_req_head: the first 4 readable bytes of every request."""

    FORMAT: ClassVar[str] = "<B3s"
    SIZE: ClassVar[int] = HEAD_SIZE

    type: int
    reserved: bytes = bytes(3)


@attrs.frozen
class ReqTail(WireStruct):
    """struct virtio_iommu_req_tail: the device writes status and zero reserved bytes."""

    FORMAT: ClassVar[str] = "<B3x"
    SIZE: ClassVar[int] = TAIL_SIZE

    status: int


@attrs.frozen
class AttachReq(_Request):
    """ATTACH readable part: head, domain @4, endpoint @8, flags @12, reserved[4] @16."""

    FORMAT: ClassVar[str] = "<B3xIII4s"
    SIZE: ClassVar[int] = 20
    TYPE: ClassVar[ReqType] = ReqType.ATTACH

    domain: int = attrs.field(validator=check_u32)
    endpoint: int = attrs.field(validator=check_u32)
    flags: int = attrs.field(default=0, validator=check_u32)
    reserved: bytes = bytes(4)


@attrs.frozen
class DetachReq(_Request):
    """DETACH readable part: head, domain @4, endpoint @8, reserved[8] @12."""

    FORMAT: ClassVar[str] = "<B3xII8s"
    SIZE: ClassVar[int] = 20
    TYPE: ClassVar[ReqType] = ReqType.DETACH

    domain: int = attrs.field(validator=check_u32)
    endpoint: int = attrs.field(validator=check_u32)
    reserved: bytes = bytes(8)


@attrs.frozen
class MapReq(_Request):
    """MAP readable part: head, domain @4, virt_start @8, virt_end @16, phys_start @24, flags @32."""

    FORMAT: ClassVar[str] = "<B3xIQQQI"
    SIZE: ClassVar[int] = 36
    TYPE: ClassVar[ReqType] = ReqType.MAP

    domain: int = attrs.field(validator=check_u32)
    virt_start: int = attrs.field(validator=check_u64)
    virt_end: int = attrs.field(validator=check_u64)
    phys_start: int = attrs.field(validator=check_u64)
    flags: int = attrs.field(validator=check_u32)


@attrs.frozen
class UnmapReq(_Request):
    """UNMAP readable part: head, domain @4, virt_start @8, virt_end @16, reserved[4] @24."""

    FORMAT: ClassVar[str] = "<B3xIQQ4s"
    SIZE: ClassVar[int] = 28
    TYPE: ClassVar[ReqType] = ReqType.UNMAP

    domain: int = attrs.field(validator=check_u32)
    virt_start: int = attrs.field(validator=check_u64)
    virt_end: int = attrs.field(validator=check_u64)
    reserved: bytes = bytes(4)


@attrs.frozen
class ProbeReq(_Request):
    """PROBE readable part: head, endpoint @4, reserved[64] @8 (72 bytes)."""

    FORMAT: ClassVar[str] = "<B3xI64s"
    SIZE: ClassVar[int] = 72
    TYPE: ClassVar[ReqType] = ReqType.PROBE

    endpoint: int = attrs.field(validator=check_u32)
    reserved: bytes = bytes(64)


REQUEST_CLASSES: dict[int, type[_Request]] = {
    c.TYPE: c for c in (AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq)
}


@attrs.frozen
class ProbeProperty(WireStruct):
    """struct virtio_iommu_probe_property: le16 {type:12, reserved:4}; le16 length."""

    FORMAT: ClassVar[str] = "<HH"
    SIZE: ClassVar[int] = 4

    type: int
    length: int


@attrs.frozen
class ProbeResvMem(WireStruct):
    """struct virtio_iommu_probe_resv_mem (24 bytes; ``length`` = 20, ``end`` inclusive)."""

    FORMAT: ClassVar[str] = "<HHB3xQQ"
    SIZE: ClassVar[int] = 24

    type: int
    length: int
    subtype: int
    start: int
    end: int

    @classmethod
    def of(cls, subtype: int, start: int, end: int) -> ProbeResvMem:
        return cls(PROBE_T_RESV_MEM, cls.SIZE - ProbeProperty.SIZE, subtype, start, end)


_FAULT_REASONS = {FAULT_R_UNKNOWN: "UNKNOWN", FAULT_R_DOMAIN: "DOMAIN", FAULT_R_MAPPING: "MAPPING"}
_FAULT_FLAGS = ((FAULT_F_READ, "READ"), (FAULT_F_WRITE, "WRITE"), (FAULT_F_EXEC, "EXEC"), (FAULT_F_ADDRESS, "ADDRESS"))


def describe_fault(reason: int, flags: int) -> str:
    """A fault record in words, then as the spec names it: what went wrong -- an unknown endpoint
    (R_UNKNOWN), an endpoint in no domain (R_DOMAIN), or for R_MAPPING (the spec's "unmapped or
    wrong permission") which of the two: the flags READ/WRITE/EXEC name the access the mapping
    does not permit, none of them means no mapping covers the address.  E.g. "write not permitted
    by the mapping (VIRTIO_IOMMU_FAULT_R_MAPPING, flags WRITE|ADDRESS)"."""
    denied = [name.lower() for bit, name in _FAULT_FLAGS[:3] if flags & bit]
    if reason == FAULT_R_MAPPING:
        what = f"{' and '.join(denied)} not permitted by the mapping" if denied else "page not mapped"
    elif reason == FAULT_R_DOMAIN:
        what = "endpoint attached to no domain"
    elif reason == FAULT_R_UNKNOWN:
        what = "unknown endpoint"
    else:
        what = "fault of an unknown reason"
    name = f"VIRTIO_IOMMU_FAULT_R_{_FAULT_REASONS[reason]}" if reason in _FAULT_REASONS else f"reason {reason}"
    shown = "|".join(n for bit, n in _FAULT_FLAGS if flags & bit) or "none"
    return f"{what} ({name}, flags {shown})"


@attrs.frozen
class FaultEvent(WireStruct):
    """struct virtio_iommu_fault (24 bytes), written into an eventq buffer."""

    FORMAT: ClassVar[str] = "<B3xII4xQ"
    SIZE: ClassVar[int] = 24

    reason: int
    flags: int
    endpoint: int
    address: int

    @property
    def description(self) -> str:
        """The record in words (``describe_fault``)."""
        return describe_fault(self.reason, self.flags)
