"""A custom device-side request-ordering policy: complete a kick's requests two at a time.

Interrupt coalescing as a device with a small completion batch does it: the device pops every
available chain, handles them in ring order, and publishes the used entries in pairs (ring order),
deciding the interrupt after each pair; an odd last request is published alone.  A driver that
waits for one interrupt per request, or reads the used ring only once per interrupt, loses
completions under it; Linux's virtio-iommu driver (which polls the used ring) does not.

Use it with ``--request-order examples/policies/pairs.py:CompleteInPairs`` (see README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from models import ORDERING_API_VERSION, PendingRequest, RequestBatch


class CompleteInPairs:
    """In ring order: handle two requests, publish their used entries, decide the interrupt; the next two."""

    api_version = ORDERING_API_VERSION
    #: pop every available chain (at most the queue's size) before planning
    lookahead = None

    def plan(self, requests: Sequence[PendingRequest]) -> list[RequestBatch]:
        order = [r.index for r in requests]
        pairs = [tuple(order[i : i + 2]) for i in range(0, len(order), 2)]
        return [RequestBatch(pair, pair) for pair in pairs]
