"""The device-side request-ordering policy: in what order virtio-iommu handles a kick's requests and
when it completes them (public protocol, version ``ORDERING_API_VERSION``).

QEMU's ``virtio_iommu_handle_command`` pops one chain, handles it, pushes its used entry
(``virtqueue_push``: the element, then ``used.idx``), decides the interrupt (``virtio_notify``)
and only then pops the next.  Nothing in the virtio spec requires that: a device may use buffers
in any order (2.7.14 "used buffers ... need not be in the order they were made available") and
batch its used entries and interrupts.  A driver that silently assumes ring-order completion
works against QEMU and breaks on a device that does not; an ordering policy lets a VMM developer
run the same guest against such a device.

A policy is a *decision object*, as the guest's invalidation policy is (models/guest/_policy_api.py):
it never touches the machine.  The device (``VirtioIommu._drain_requests``) pops up to
``lookahead`` available chains (None: every one available, at most the queue's size), gives their
``PendingRequest`` values to ``plan`` and carries out the ``RequestBatch`` list it returns in order:
handle ``process`` (each request costs its time, writes its reply), publish the used entries of
``complete`` in that order, then decide the interrupt if ``notify``.  Then it pops again, until no
chain is available.  A plan must handle every request once, publish every request once after it
was handled, and its last batch must notify (``check_plan``; another plan is an
``OrderingPlanError``, a bug in the policy).

What no order changes: a malformed ring (``VirtqueueError`` at a pop) breaks the device when it
is met, and a malformed chain (head or tail too short) when its turn to be handled comes; the
device checks before each request that it is not broken and stops there, so requests not handled
and used entries not yet published then stay so (the driver must reset the device, as after any
virtio_error).  Popping is bounded by the queue's size.

A policy class declares ``api_version`` (``ORDERING_API_VERSION``; another value is refused) and
``lookahead`` (a positive int or None) as class attributes, and is constructed without arguments,
once per device.  ``MachineConfig.request_order`` names a built-in (``BUILTIN_ORDERINGS``) or a
class by reference (``PATH.py:Class``, ``package.module:Class``; ``load_ordering_class``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ._config import ConfigError
from ._policy_ref import check_choice_or_reference, is_policy_reference, load_reference

__all__ = [
    "BUILTIN_ORDERINGS", "ORDERING_API_VERSION", "BatchComplete", "Fifo", "OrderingPlanError",
    "PendingRequest", "RequestBatch", "RequestOrderingPolicy", "ReverseComplete", "check_plan", "check_request_order",
    "load_ordering_class", "make_ordering",
]

#: the version of the request-ordering protocol this simulator implements
ORDERING_API_VERSION = 1

_OPTION = "--request-order"


@attrs.frozen
class PendingRequest:
    """One popped request of a kick: ``index`` is its position in pop (ring) order within the
    ``plan`` call (0, 1, ...), ``type`` its request type byte (``VIRTIO_IOMMU_T_*``; None when the
    chain's readable part is shorter than the head), ``head`` its chain's descriptor head."""

    index: int
    type: int | None
    head: int


@attrs.frozen
class RequestBatch:
    """Handle ``process`` (indices, in this order), then publish the used entries of ``complete`` (any
    requests handled so far and not yet published, in this used-ring order), then, if ``notify``,
    decide the interrupt (``virtio_notify``: the driver's event suppression still applies)."""

    process: tuple[int, ...]
    complete: tuple[int, ...]
    notify: bool = True


class OrderingPlanError(ValueError):
    """A policy's ``plan`` broke the rules of ``check_plan`` (a bug in the policy, not the guest)."""


@runtime_checkable
class RequestOrderingPolicy(Protocol):
    """The device's request-ordering policy (see the module docstring for the rules)."""

    @property
    def api_version(self) -> int:
        """The protocol version the policy is written for (``ORDERING_API_VERSION``)."""

    @property
    def lookahead(self) -> int | None:
        """How many chains the device pops before it asks for a plan (None: all available)."""

    def plan(self, requests: Sequence[PendingRequest]) -> Sequence[RequestBatch]: ...


# -- the built-ins -----------------------------------------------------------------------------


class Fifo:
    """QEMU: one request at a time, handled and completed in ring order, an interrupt decision each."""

    api_version = ORDERING_API_VERSION
    lookahead: int | None = 1

    def plan(self, requests: Sequence[PendingRequest]) -> Sequence[RequestBatch]:
        return [RequestBatch((r.index,), (r.index,)) for r in requests]


class BatchComplete:
    """Pop every available chain, handle them in ring order, publish all used entries (ring order)
    at the end, one interrupt decision: completion coalescing, as a device with a completion
    thread does.  The driver sees nothing of the kick until all of it is done."""

    api_version = ORDERING_API_VERSION
    lookahead: int | None = None

    def plan(self, requests: Sequence[PendingRequest]) -> Sequence[RequestBatch]:
        order = tuple(r.index for r in requests)
        return [RequestBatch(order, order)]


class ReverseComplete:
    """Pop every available chain, handle them in ring order (so ATTACH still precedes its MAPs), but
    publish the used entries in reverse, one interrupt decision: the out-of-order completion the
    spec allows, for a driver that must match used entries by head, not by position."""

    api_version = ORDERING_API_VERSION
    lookahead: int | None = None

    def plan(self, requests: Sequence[PendingRequest]) -> Sequence[RequestBatch]:
        order = tuple(r.index for r in requests)
        return [RequestBatch(order, order[::-1])]


#: the names ``request_order`` takes besides a reference
BUILTIN_ORDERINGS: dict[str, type[Any]] = {"fifo": Fifo, "batch-complete": BatchComplete, "reverse": ReverseComplete}


def check_plan(plan: Sequence[RequestBatch], count: int, who: str = "the ordering policy") -> None:
    """Raise ``OrderingPlanError`` unless ``plan`` handles each of ``count`` requests once, publishes
    each once after it was handled, and notifies in its last batch."""
    handled: set[int] = set()
    published: set[int] = set()
    for n, batch in enumerate(plan):
        if not isinstance(batch, RequestBatch):
            raise OrderingPlanError(f"{who}: plan item {n} is {batch!r}, not a RequestBatch")
        for i in batch.process:
            if not isinstance(i, int) or not 0 <= i < count or i in handled:
                raise OrderingPlanError(f"{who}: batch {n} handles request {i!r} "
                                        f"({'again' if i in handled else f'not one of 0..{count - 1}'})")
            handled.add(i)
        for i in batch.complete:
            if i not in handled or i in published:
                raise OrderingPlanError(f"{who}: batch {n} publishes request {i!r} "
                                        f"({'again' if i in published else 'before it is handled'})")
            published.add(i)
    if len(published) != count:
        missing = sorted(set(range(count)) - published)
        raise OrderingPlanError(f"{who}: the plan never publishes request(s) {missing} of {count}")
    if count and not plan[-1].notify:
        raise OrderingPlanError(f"{who}: the plan's last batch does not notify (the driver would not be told)")


# -- by reference ----------------------------------------------------------------------------------


def _fail(ref: str, problem: str) -> ConfigError:
    return ConfigError(_OPTION, f"policy {ref!r}: {problem}")


_cache: dict[str, type[Any]] = {}


def load_ordering_class(ref: str) -> type[Any]:
    """The ordering policy class ``ref`` names (``PATH.py:Class`` or ``package.module:Class``): a
    missing file, module or class, a syntax error, a class without ``plan``, a wrong ``api_version``
    or ``lookahead`` raise one ``ConfigError`` naming ``--request-order``."""
    cached = _cache.get(ref)
    if cached is not None:
        return cached
    cls_name, cls = load_reference(ref, _OPTION)
    if not isinstance(cls, type):
        raise _fail(ref, f"{cls_name} is not a class")
    if not callable(getattr(cls, "plan", None)):
        raise _fail(ref, f"{cls_name} does not implement the request-ordering protocol (no plan)")
    version = getattr(cls, "api_version", None)
    if version != ORDERING_API_VERSION:
        raise _fail(ref, f"{cls_name} is written for ordering API version {version!r}, this simulator "
                         f"implements version {ORDERING_API_VERSION}")
    lookahead = getattr(cls, "lookahead", 0)
    if lookahead is not None and (not isinstance(lookahead, int) or isinstance(lookahead, bool) or lookahead < 1):
        raise _fail(ref, f"{cls_name}.lookahead must be a positive int or None (all available), not {lookahead!r}")
    _cache[ref] = cls
    return cls


def check_request_order(value: object) -> None:
    """``MachineConfig.request_order``'s check: a built-in name, or a reference that loads."""
    check_choice_or_reference(value, _OPTION, BUILTIN_ORDERINGS, load_ordering_class)


def make_ordering(value: str) -> RequestOrderingPolicy:
    """A new policy object for ``MachineConfig.request_order`` (a built-in name or a reference)."""
    cls = load_ordering_class(value) if is_policy_reference(value) else BUILTIN_ORDERINGS[value]
    policy: RequestOrderingPolicy = cls()
    return policy
