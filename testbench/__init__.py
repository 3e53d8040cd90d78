"""viommu-sim's cocotb-style testbench: tests, seeds, monitors, scoreboards, coverage.

A test file needs only ``import testbench``::

    import testbench
    from testbench import Event, Timer, ns

    @testbench.test(timeout=testbench.us(10))
    @testbench.parametrize(policy=["lazy", "strict"])
    async def test_irq_is_handled(sim, policy):
        irq = Event()
        sim.spawn(device(irq))
        await irq.wait()

The body of a ``@testbench.test`` runs inside the simulation as a kernel task,
so it awaits the kernel's triggers re-exported here.  ``sim`` is a fresh
``Simulator`` seeded with the test's seed, ``base + stable_hash(node id)``
(``--viommu-seed`` sets the base, default 0); a failed test prints its seed and
the command that replays it.  The pytest plugin lives in ``testbench._plugin``.
"""

from sim import (
    Cancelled as Cancelled,
    Combine as Combine,
    Event as Event,
    First as First,
    Lock as Lock,
    Queue as Queue,
    QueueEmpty as QueueEmpty,
    QueueFull as QueueFull,
    Signal as Signal,
    SimDeadlockError as SimDeadlockError,
    SimTimeoutError as SimTimeoutError,
    Simulator as Simulator,
    Task as Task,
    Timer as Timer,
    TraceRecord as TraceRecord,
    format_time as format_time,
    ms as ms,
    ns as ns,
    ps as ps,
    seconds as seconds,
    sleep as sleep,
    spawn as spawn,
    us as us,
    with_timeout as with_timeout,
)

from ._conformance import (
    INVALIDATION_SLACK_PS as INVALIDATION_SLACK_PS,
    PolicyReport as PolicyReport,
    PropertyVerdict as PropertyVerdict,
    RunPoint as RunPoint,
    check_policy as check_policy,
)
from ._coverage import Coverage as Coverage
from ._decorators import parametrize as parametrize, test as test
from ._faults import (
    DmaAttempt as DmaAttempt,
    HostMapFailures as HostMapFailures,
    ResetOutcome as ResetOutcome,
    UsedIrqFault as UsedIrqFault,
    attempt_dma as attempt_dma,
    enable_bus_master as enable_bus_master,
    endpoint_dma_port as endpoint_dma_port,
    fail_host_maps as fail_host_maps,
    reset_device as reset_device,
)
from ._platform import Platform as Platform, sample_request_coverage as sample_request_coverage
from ._platform_hook import PlatformFactory as PlatformFactory, register_platform_factory as register_platform_factory
from ._safety import DmaSafetyScoreboard as DmaSafetyScoreboard, OrderingScoreboard as OrderingScoreboard
from ._scoreboard import Monitor as Monitor, Scoreboard as Scoreboard, ScoreboardError as ScoreboardError
from ._seed import current_seed as current_seed

__all__ = sorted(
    [
        "Cancelled", "Combine", "Coverage", "DmaAttempt", "DmaSafetyScoreboard", "Event", "First",
        "HostMapFailures", "Lock", "Monitor", "ResetOutcome", "UsedIrqFault", "attempt_dma", "enable_bus_master",
        "endpoint_dma_port", "fail_host_maps", "reset_device",
        "OrderingScoreboard", "Platform", "PlatformFactory", "Queue",
        "QueueEmpty", "QueueFull", "Scoreboard", "ScoreboardError", "Signal", "SimDeadlockError",
        "SimTimeoutError", "Simulator", "Task", "Timer", "TraceRecord", "current_seed", "format_time", "ms", "ns",
        "parametrize", "ps", "register_platform_factory", "sample_request_coverage", "seconds", "sleep", "spawn", "test", "us",
        "with_timeout",
        # the invalidation-policy conformance suite (_conformance; the API itself is models.guest's)
        "INVALIDATION_SLACK_PS", "PolicyReport", "PropertyVerdict",
        "RunPoint", "check_policy",
    ]
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("testbench._"):
        try:
            _obj.__module__ = "testbench"
        except (AttributeError, TypeError):
            pass
del _name, _obj
