"""Functional coverage: named cross-coverage groups that accumulate over a pytest session.

A ``Coverage`` is a cross of named axes, each a list of bins (values), e.g.
request type × status × IOMMU policy; every combination is a bin of the cross
(cocotb-coverage's ``CoverCross``, mciepluc/cocotb-coverage coverage.py).
Groups are registered by name for the session, so every test that builds
``Coverage("viommu.requests", ...)`` with the same axes adds to one set of
counts, and the plugin prints one report at the end of the session when any
group has samples.  Samples outside the bins are counted and reported, never
dropped.  Bins are kept in a list in axis order, so the report is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

_registry: dict[str, Coverage] = {}


class Coverage:
    """A cross-coverage group.

    Args:
        name: the group's name; groups with the same name share their counts
            (the axes must then be the same).
        cross: axis name -> the values (bins) of that axis, in report order.
        ignore: predicate on a bin (a dict axis -> value) for combinations that
            cannot occur; they are left out of the goal.
        at_least: hits a bin needs to count as covered.
    """

    _bins: list[tuple[Hashable, ...]]
    _hits: dict[tuple[Hashable, ...], int]
    #: combinations sampled outside the goal; insertion order = first-seen order
    _outside: dict[tuple[Hashable, ...], int]

    def __init__(
        self,
        name: str,
        cross: Mapping[str, Sequence[Hashable]],
        *,
        ignore: Callable[[dict[str, Any]], bool] | None = None,
        at_least: int = 1,
    ) -> None:
        if not cross:
            raise ValueError(f"coverage {name!r}: give at least one axis")
        axes = {axis: tuple(values) for axis, values in cross.items()}
        for axis, values in axes.items():
            if not values:
                raise ValueError(f"coverage {name!r}: axis {axis!r} has no bins")
            if len(set(values)) != len(values):
                raise ValueError(f"coverage {name!r}: axis {axis!r} lists a bin twice: {values!r}")
        if at_least < 1:
            raise ValueError(f"coverage {name!r}: at_least must be >= 1, not {at_least}")
        self.name = name
        self.axes = axes
        self.at_least = at_least
        shared = _registry.get(name)
        if shared is not None:
            if shared.axes != axes or shared.at_least != at_least:
                raise ValueError(
                    f"coverage {name!r} already exists with axes {shared.axes!r} (at_least={shared.at_least}); "
                    "one name, one set of bins"
                )
            self._hits, self._bins, self._outside = shared._hits, shared._bins, shared._outside
            return
        names = list(axes)
        self._bins = [
            combo
            for combo in itertools.product(*axes.values())
            if ignore is None or not ignore(dict(zip(names, combo)))
        ]
        self._hits = dict.fromkeys(self._bins, 0)
        self._outside = {}
        _registry[name] = self

    def __repr__(self) -> str:
        return f"<Coverage {self.name} {self.covered}/{self.total} bins>"

    def sample(self, **values: Hashable) -> None:
        """Count one occurrence; give exactly one value per axis."""
        if values.keys() != self.axes.keys():
            raise ValueError(
                f"coverage {self.name!r}: sample() needs the axes {list(self.axes)}, got {list(values)}"
            )
        combo = tuple(values[a] for a in self.axes)
        if combo in self._hits:
            self._hits[combo] += 1
        else:
            self._outside[combo] = self._outside.get(combo, 0) + 1

    def hits(self, **values: Hashable) -> int:
        """Hits of one bin."""
        return self._hits.get(tuple(values[a] for a in self.axes), 0)

    @property
    def samples(self) -> int:
        return sum(self._hits.values()) + sum(self._outside.values())

    @property
    def total(self) -> int:
        """Number of bins in the goal (ignored combinations excluded)."""
        return len(self._bins)

    @property
    def covered(self) -> int:
        return sum(1 for b in self._bins if self._hits[b] >= self.at_least)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0

    def missing(self) -> list[dict[str, Hashable]]:
        """The bins not yet covered, in report order."""
        return [dict(zip(self.axes, b)) for b in self._bins if self._hits[b] < self.at_least]

    def report(self) -> list[str]:
        """The report lines of this group: a table of every bin and its hits."""
        head = list(self.axes) + ["hits"]
        rows = [[str(v) for v in b] + [str(self._hits[b])] for b in self._bins]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

        def fmt(row: list[str], mark: str = "") -> str:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1].rjust(widths[-1])]
            return ("  " + "  ".join(cells) + mark).rstrip()

        goal = f" (at least {self.at_least} hits each)" if self.at_least > 1 else ""
        lines = [
            f"{self.name}: {self.covered}/{self.total} bins covered ({self.percent:.1f}%){goal}, {self.samples} samples",
            fmt(head),
        ]
        lines += [fmt(r, "" if self._hits[b] >= self.at_least else "   <- missed") for r, b in zip(rows, self._bins)]
        for combo, n in self._outside.items():
            where = ", ".join(f"{a}={v!r}" for a, v in zip(self.axes, combo))
            lines.append(f"  outside the bins: {where}: {n} samples")
        return lines


def session_report() -> list[str]:
    """Report lines of every group that has samples, in creation order; empty if none has."""
    lines: list[str] = []
    for cov in _registry.values():
        if cov.samples:
            lines += cov.report() + [""]
    return lines[:-1]


def reset() -> None:
    """Forget every group (end of a pytest session)."""
    _registry.clear()
