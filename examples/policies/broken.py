"""A deliberately broken invalidation policy: it frees each IOVA as soon as its UNMAP is queued.

It is ``Deferred1ms`` (deferred.py) with one bug: ``unmap`` returns ``FreeIova`` at once, before
any invalidation has begun, so the IOVA goes back to the allocator while the device may still
translate it -- the next mapping can get the same IOVA while the old UNMAP waits in the request
queue.  ``viommu-sim check-policy`` fails it on ``use-after-unmap`` (see README.md).
"""

from __future__ import annotations

import os
import sys

from models.guest import Action, FreeIova

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deferred import Deferred1ms  # noqa: E402  (the example folder is no package)


class FreeOnUnmap(Deferred1ms):
    """Frees the IOVA when the UNMAP is queued; the flush it still arms then has nothing left to free."""

    def unmap(self, cpu: int, pfn: int, pages: int, now_ps: int) -> list[Action]:
        actions = super().unmap(cpu, pfn, pages, now_ps)
        self.counters.release(0)
        return [FreeIova(cpu, pfn, pages)] + actions  # the bug: free before any invalidation began

    def flush_done(self, token: int, now_ps: int) -> list[Action]:
        self.flushing.pop(token)
        self.counters.finished += 1
        return []
