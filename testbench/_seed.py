"""Per-test seeds and the running test's context.

Every test gets its own seed, ``base + stable_hash(nodeid)`` (cocotb's rule,
regression seed plus a hash of the test's name, cocotb/cocotb#2672): one test
draws the same random streams whatever other tests are selected or in which
order they run, and ``sim.stable_hash`` (SHA-256) keeps it independent of
``PYTHONHASHSEED``.  The base seed comes from ``--viommu-seed`` and defaults
to 0, so a plain ``pytest`` run is reproducible; pass another base to explore.
Replaying one test needs only its node id and the base seed, which the plugin
prints on failure as a command line.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from sim import Simulator, format_time, stable_hash

if TYPE_CHECKING:
    from ._scoreboard import Scoreboard

#: the base seed when ``--viommu-seed`` is not given
DEFAULT_BASE_SEED = 0


def seed_for(base: int, nodeid: str) -> int:
    """The seed of the test ``nodeid`` under base seed ``base``."""
    return base + stable_hash(nodeid)


@attrs.define(eq=False)
class CaseContext:
    """What the plugin knows about the test being run."""

    nodeid: str
    base_seed: int
    rootdir: str
    seed: int = attrs.field(init=False)
    #: the seed was handed out (``sim`` fixture, ``current_seed()``): print it on failure
    used: bool = False
    sim: Simulator | None = None
    #: wall-clock seconds spent running the simulation (set by ``@testbench.test``)
    wall_s: float | None = None
    scoreboards: list[Scoreboard] = attrs.Factory(list)
    #: the user's function when the test is a ``@testbench.test`` (its tracebacks start there)
    test_function: Callable[..., Any] | None = None

    def __attrs_post_init__(self) -> None:
        self.seed = seed_for(self.base_seed, self.nodeid)

    def replay_command(self) -> str:
        """A shell line that reruns this test alone with the same seed."""
        return (
            f"cd {shlex.quote(self.rootdir)} && {shlex.quote(sys.executable)} -m pytest "
            f"{shlex.quote(self.nodeid)} --viommu-seed {self.base_seed}"
        )

    def failure_text(self) -> str:
        """The block printed under a failed test."""
        return (
            f"test seed {self.seed} = base seed {self.base_seed} (--viommu-seed) + stable_hash({self.nodeid!r})\n"
            f"replay: {self.replay_command()}"
        )

    def properties(self) -> list[tuple[str, Any]]:
        """JUnit ``<property>`` entries: seeds, final simulated time, sim/wall ratio."""
        props: list[tuple[str, Any]] = [("seed", self.seed), ("base_seed", self.base_seed)]
        if self.sim is not None:
            sim_ps = self.sim.now
            props += [("sim_time_ps", sim_ps), ("sim_time", format_time(sim_ps))]
            if self.wall_s is not None:
                ratio = (sim_ps / 1000) / max(self.wall_s, 1e-9)
                props += [("wall_time_s", f"{self.wall_s:.6g}"), ("sim_ns_per_wall_s", f"{ratio:.1f}")]
        return props


_active: CaseContext | None = None


def activate(ctx: CaseContext | None) -> CaseContext | None:
    """Make ``ctx`` the running test's context; returns the previous one."""
    global _active
    previous, _active = _active, ctx
    return previous


def active() -> CaseContext | None:
    """The running test's context, or None outside a test."""
    return _active


def current_seed() -> int:
    """The running test's seed: the seed its ``sim`` fixture's Simulator was built with.

    Use it to seed extra generators a test needs (e.g. a Hypothesis-free
    stimulus generator), so they vary between tests and replay with the test.
    """
    ctx = _active
    if ctx is None:
        raise RuntimeError("current_seed() is only available while a pytest test runs (viommu-sim plugin)")
    ctx.used = True
    return ctx.seed
