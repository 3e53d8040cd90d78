"""Per-flavour decisions of the virtio-iommu device: what QEMU, the spec, cloud-hypervisor and crosvm each do.

``MachineConfig.flavor`` picks one row of ``FLAVOURS``.  The values here are the
device's identity as the guest sees it (features, config space, PROBE
properties, bypass) and the few framing and bookkeeping choices that differ; the
request handlers (models/_viommu_requests.py) read the row and, for the two peer
VMMs, follow their own check order.  Sources, snapshot by snapshot:

* ``qemu``: hw/virtio/virtio-iommu.c (``virtio_iommu_device_realize``,
  ``virtio_iommu_get_config``/``_set_config``, ``virtio_iommu_handle_command``);
  the baseline every other row is compared with.
* ``spec``: QEMU's identity, the spec's device requirements in the handlers.
* ``cloud-hypervisor``: cloud-hypervisor virtio-devices/src/iommu.rs at ae44c29
  (``Iommu::new``: VERSION_1, MAP_UNMAP, PROBE, BYPASS_CONFIG, INPUT_RANGE only when
  the address width is below 64; ``VIRTIO_IOMMU_PAGE_SIZE_MASK`` = 4 KiB | 2 MiB;
  ``PROBE_PROP_SIZE`` = 24, one RESV_MEM MSI property from
  ``DeviceManager::get_msi_iova_space``; ``IommuMapping::bypass`` starts true while
  ``config.bypass`` reads 0; ``write_config`` takes a one-byte write of ``bypass``,
  masked to bit 0, applied by ``update_bypass`` only once BYPASS_CONFIG is acked;
  ``IommuEpollHandler::request_queue`` gives used length 0 to every request whose
  ``Request::parse`` returned an error, after the tail was written; no eventq writes;
  ``DmaRemapping::translate_gva`` stores and checks no permissions).
* ``crosvm``: crosvm devices/src/virtio/iommu.rs at f1e797a (``Iommu::new``:
  ``base_features`` = VERSION_1, EVENT_IDX, SUSPEND, plus MAP_UNMAP, INPUT_RANGE,
  MMIO, and PROBE on x86_64; ``page_size_mask`` = ``!(pagesize - 1)`` ANDed with
  every VFIO container's mask; ``input_range`` 0..``iova_max_addr``, the largest
  VFIO device's ``get_max_iova`` or u64::MAX (src/crosvm/sys/linux.rs); no
  DOMAIN_RANGE, no BYPASS_CONFIG, so an unattached endpoint has no access;
  ``IOMMU_PROBE_SIZE`` = 24, one x86 MSI property in ``process_probe_request``;
  ``VirtioDevice::write_config`` is not implemented; ``request_queue`` gives used
  length 0 to a request ``execute_request`` fails; the eventq is never written;
  ``process_dma_map_request`` maps read-write when WRITE is set, else read-only).

Kept from QEMU where the peers' sources do not settle it (see the report of
issue #16 part 5): the request and event queue sizes (256 in all three), the
endpoint topology (every function on the root bus is an endpoint), the
reserved-region handling in ``translate`` (the MSI window is identity-mapped), the
VFIO side (a container per assigned function, following the IOMMU region's
notifiers and the address-space switch), and the threading (each kick is handled
in the kicking vCPU's exit under the BQL; cloud-hypervisor's epoll worker and
crosvm's executor are not modelled, nor crosvm's wait for exported memory).
"""

from __future__ import annotations

from typing import Literal

import attrs

from ._viommu_wire import (
    F_BYPASS_CONFIG,
    F_INPUT_RANGE,
    F_MAP_UNMAP,
    F_MMIO,
    F_PROBE,
    QEMU_FEATURES,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
)

#: crosvm ``base_features``: VIRTIO_F_SUSPEND (virtio spec "Feature Bits", bit 43)
VIRTIO_F_SUSPEND = 43
#: cloud-hypervisor ``VIRTIO_IOMMU_PAGE_SIZE_MASK``: 4 KiB granule, 2 MiB hint
CLOUD_HYPERVISOR_PAGE_SIZE_MASK = (2 << 20) | (4 << 10)
#: cloud-hypervisor ``PROBE_PROP_SIZE`` and crosvm ``IOMMU_PROBE_SIZE``: one 24-byte RESV_MEM property
PEER_PROBE_SIZE = 24

InputRange = Literal["aw", "aw-below-64", "vfio-iova-max"]
MapFlags = Literal["as-given", "read-write", "write-implies-read"]


@attrs.frozen
class Flavour:
    """One VMM's virtio-iommu, as far as it differs from QEMU's.

    ``features`` are the device feature bits before the address-width ones
    (``input_range`` "aw-below-64" adds INPUT_RANGE when ``aw_bits < 64``).
    ``page_size_mask`` None is QEMU's (the host page mask, narrowed by each VFIO
    device's page sizes), else a fixed value.  ``input_range``: "aw" offers
    0..2^aw-1 (QEMU), "aw-below-64" offers it only below 64 bits and presents 0..0
    otherwise (cloud-hypervisor), "vfio-iova-max" offers 0 up to the largest
    assigned function's last usable IOVA, or 2^64-1 (crosvm).  ``host_reserved``:
    PROBE reports (and translate knows) the host IOMMU's reserved ranges of an
    assigned function, not only the machine's MSI window.  ``config_bypass``: what
    ``config.bypass`` reads at boot (None: boot-bypass); ``unattached_bypass``:
    whether an unattached endpoint bypasses before the driver writes ``bypass``
    (None: as ``config.bypass``).  ``bypass_write``: "qemu" (virtio_error without
    BYPASS_CONFIG or for a value > 1), "masked" (bit 0 kept, applied once the
    feature is acked), "ignored".  ``framing_breaks_device``: a chain too short
    for its head or tail is virtio_error (else used length 0, nothing written).
    ``rejected_used_len_zero``: a rejected request's tail is written but its used
    length is 0.  ``map_flags``: what a MAP stores as its permissions.
    ``endpoint_checks``: ATTACH/DETACH/PROBE look the endpoint up (else any id is
    accepted).
    """

    name: str
    features: int
    page_size_mask: int | None
    input_range: InputRange
    domain_range: bool
    probe_size: int
    host_reserved: bool
    config_bypass: int | None
    unattached_bypass: bool | None
    bypass_write: Literal["qemu", "masked", "ignored"]
    reports_faults: bool
    framing_breaks_device: bool
    rejected_used_len_zero: bool
    map_flags: MapFlags
    endpoint_checks: bool

    def offered(self, aw_bits: int) -> int:
        """The device feature bits this VMM offers for an ``aw_bits`` input address width."""
        if self.input_range == "aw-below-64" and aw_bits < 64:
            return self.features | 1 << F_INPUT_RANGE
        return self.features


def _bits(*bits: int) -> int:
    return sum(1 << b for b in bits)


_QEMU = Flavour(
    name="qemu", features=QEMU_FEATURES, page_size_mask=None, input_range="aw", domain_range=True,
    probe_size=512, host_reserved=True, config_bypass=None, unattached_bypass=None, bypass_write="qemu",
    reports_faults=True, framing_breaks_device=True, rejected_used_len_zero=False, map_flags="as-given",
    endpoint_checks=True,
)

FLAVOURS: dict[str, Flavour] = {
    "qemu": _QEMU,
    "spec": attrs.evolve(_QEMU, name="spec"),
    "cloud-hypervisor": Flavour(
        name="cloud-hypervisor", features=_bits(VIRTIO_F_VERSION_1, F_MAP_UNMAP, F_PROBE, F_BYPASS_CONFIG),
        page_size_mask=CLOUD_HYPERVISOR_PAGE_SIZE_MASK, input_range="aw-below-64", domain_range=False,
        probe_size=PEER_PROBE_SIZE, host_reserved=False, config_bypass=0, unattached_bypass=True,
        bypass_write="masked", reports_faults=False, framing_breaks_device=False, rejected_used_len_zero=True,
        map_flags="read-write", endpoint_checks=False,
    ),
    "crosvm": Flavour(
        name="crosvm", features=_bits(VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_F_SUSPEND, F_MAP_UNMAP,
                                      F_INPUT_RANGE, F_MMIO, F_PROBE),
        page_size_mask=None, input_range="vfio-iova-max", domain_range=False, probe_size=PEER_PROBE_SIZE,
        host_reserved=False, config_bypass=0, unattached_bypass=False, bypass_write="ignored",
        reports_faults=False, framing_breaks_device=False, rejected_used_len_zero=False,
        map_flags="write-implies-read", endpoint_checks=True,
    ),
}
#: the ``--flavor`` choices, in the order the help lists them
FLAVOUR_NAMES = tuple(FLAVOURS)
