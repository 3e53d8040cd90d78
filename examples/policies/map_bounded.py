"""A MAP-submission policy: batch MAPs, but never more than 8 outstanding in one map operation.

Each range of a map operation is queued (``viommu_add_req``) except every 8th, which is sent
synchronously: that kick carries the 7 queued before it, so at most 8 MAPs wait for the device at
once (a VMM with a small request queue, or a bound on the work one kick does under the BQL).
``iotlb_sync_map`` then syncs what is left.  Correct: every range is on the device before
``iommu_map`` returns.  Try it::

    viommu-sim run --guest-kernel 6.12 --bs 64k --contig-pages 1 --map-batching examples/policies/map_bounded.py:BoundedBatch8
"""

from __future__ import annotations

from models.guest import MAP_QUEUE, MAP_SEND_SYNC, POLICY_API_VERSION, PolicyContext

LIMIT = 8


class BoundedBatch8:
    api_version = POLICY_API_VERSION
    sync_map = True

    def __init__(self, context: PolicyContext) -> None:
        self.queued = [0] * context.ncpus  # ranges queued in the CPU's current map operation

    def map_range(self, cpu: int, iova: int, size: int) -> str:
        self.queued[cpu] += 1
        if self.queued[cpu] == LIMIT:
            self.queued[cpu] = 0
            return MAP_SEND_SYNC
        return MAP_QUEUE

    def map_operation_done(self, cpu: int, iova: int, size: int) -> bool:
        self.queued[cpu] = 0
        return True
