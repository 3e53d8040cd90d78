"""How the virtio-iommu driver submits MAPs: the MAP-submission policy plug-in.

Linux's virtio-iommu driver maps a page range in ``viommu_map_pages`` and, from 6.8, syncs once per
map operation in ``viommu_iotlb_sync_map``.  Two ways exist upstream:

* 6.7 (``SyncPerRange``): each range is one MAP sent with ``viommu_send_req_sync`` -- kick, spin
  until the device answers, its status returned to ``iommu_map`` -- and the driver has no
  ``iotlb_sync_map``;
* 6.8+ (``BatchPerOperation``, Linux commit "iommu/virtio: Add .iotlb_sync_map"): each range is
  queued with ``viommu_add_req`` (no kick, status never read) and ``iotlb_sync_map`` kicks once
  after the operation's last range (``iommu_map`` / ``iommu_map_sg``).

A policy decides, per range, ``MAP_SEND_SYNC`` or ``MAP_QUEUE`` (``map_range``) and, at the end of a
map operation, whether to sync now (``map_operation_done``); ``sync_map`` says whether the driver
implements ``iotlb_sync_map`` at all (the IOMMU core calls it only then).  A policy that queues
must sync at some point: a queued MAP reaches the device only with a kick, and a device DMA to a
range whose MAP has not been processed faults (the testbench's ``OrderingScoreboard`` reports it).
A class is constructed as ``Class(PolicyContext)`` once per virtio-iommu and declares
``api_version`` (``POLICY_API_VERSION``).  ``MachineConfig.map_batching`` selects one: ``off``,
``on``, ``auto`` (as the guest kernel) or a reference ``PATH.py:Class`` / ``package.module:Class``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._policy_ref import POLICY_API_VERSION, is_policy_reference, load_map_policy_class
from ._flush_queue import virtio_iommu_map_batching
from ._policy_api import PolicyContext

#: ``map_range``'s answers: send this range's MAP synchronously (kick, wait, status returned), or queue it
MAP_SEND_SYNC = "send-sync"
MAP_QUEUE = "queue"


@runtime_checkable
class MapSubmissionPolicy(Protocol):
    """How ``viommu_map_pages`` / ``viommu_iotlb_sync_map`` submit MAPs (see the module docstring)."""

    api_version: int
    #: the driver implements ``iotlb_sync_map`` (the core calls it after each map operation)
    sync_map: bool

    def map_range(self, cpu: int, iova: int, size: int) -> str:
        """``MAP_SEND_SYNC`` or ``MAP_QUEUE`` for one range of a map operation."""
        ...

    def map_operation_done(self, cpu: int, iova: int, size: int) -> bool:
        """At ``iotlb_sync_map`` for the operation ``[iova, iova + size)``: kick and wait now?"""
        ...


class SyncPerRange:
    """Linux 6.7: every range's MAP is sent synchronously; no ``iotlb_sync_map``."""

    api_version = POLICY_API_VERSION
    sync_map = False

    def __init__(self, context: PolicyContext) -> None:
        self.context = context

    def map_range(self, cpu: int, iova: int, size: int) -> str:
        return MAP_SEND_SYNC

    def map_operation_done(self, cpu: int, iova: int, size: int) -> bool:
        return False


class BatchPerOperation:
    """Linux 6.8+: every range's MAP is queued; ``iotlb_sync_map`` kicks once per operation."""

    api_version = POLICY_API_VERSION
    sync_map = True

    def __init__(self, context: PolicyContext) -> None:
        self.context = context

    def map_range(self, cpu: int, iova: int, size: int) -> str:
        return MAP_QUEUE

    def map_operation_done(self, cpu: int, iova: int, size: int) -> bool:
        return True


def make_map_policy(map_batching: str, context: PolicyContext) -> MapSubmissionPolicy:
    """The policy ``MachineConfig.map_batching`` names, made for one virtio-iommu."""
    if is_policy_reference(map_batching):
        policy: MapSubmissionPolicy = load_map_policy_class(map_batching)(context)
        return policy
    if virtio_iommu_map_batching(context.guest_kernel, map_batching):
        return BatchPerOperation(context)
    return SyncPerRange(context)
