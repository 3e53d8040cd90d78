"""viommu-sim's deterministic simulation kernel.

Integer picosecond time, one event heap ordered by ``(time, priority, seq)``,
model coroutines resumed by the kernel itself, hosted inside one trio task.
This package imports nothing from ``models`` or ``testbench``.
"""

from ._kernel import (
    SimDeadlockError as SimDeadlockError,
    SimTimeoutError as SimTimeoutError,
    Simulator as Simulator,
    current_sim as current_sim,
)
from ._task import Cancelled as Cancelled, Task as Task, TaskState as TaskState
from ._wait import (
    PRIORITY_LATE as PRIORITY_LATE,
    PRIORITY_NORMAL as PRIORITY_NORMAL,
    PRIORITY_URGENT as PRIORITY_URGENT,
    Timer as Timer,
    Trigger as Trigger,
    sleep as sleep,
)
from ._histogram import Histogram as Histogram
from ._rng import RngStreams as RngStreams, stable_hash as stable_hash
from ._time import (
    PS_PER_MS as PS_PER_MS,
    PS_PER_NS as PS_PER_NS,
    PS_PER_S as PS_PER_S,
    PS_PER_US as PS_PER_US,
    TIME_UNITS as TIME_UNITS,
    SimTime as SimTime,
    format_time as format_time,
    ms as ms,
    ns as ns,
    ps as ps,
    seconds as seconds,
    to_ps as to_ps,
    us as us,
)
from ._trace import (
    CallbackSink as CallbackSink,
    JsonlSink as JsonlSink,
    ListSink as ListSink,
    TraceRecord as TraceRecord,
    Tracer as Tracer,
    TraceSink as TraceSink,
)
from ._tas import TestAndSetLock as TestAndSetLock
from ._triggers import (
    Combine as Combine,
    Event as Event,
    First as First,
    Lock as Lock,
    Queue as Queue,
    QueueEmpty as QueueEmpty,
    QueueFull as QueueFull,
    Signal as Signal,
    spawn as spawn,
    with_timeout as with_timeout,
)

__all__ = sorted(
    [
        "Cancelled", "CallbackSink", "Combine", "Event", "First", "Histogram", "JsonlSink", "ListSink", "Lock",
        "PRIORITY_LATE", "PRIORITY_NORMAL", "PRIORITY_URGENT", "PS_PER_MS", "PS_PER_NS", "PS_PER_S",
        "PS_PER_US", "Queue", "QueueEmpty", "QueueFull", "RngStreams", "Signal", "SimDeadlockError",
        "SimTime", "SimTimeoutError", "TIME_UNITS", "Simulator", "Task", "TaskState", "TestAndSetLock", "Timer",
        "TraceRecord",
        "TraceSink", "Tracer", "Trigger", "current_sim", "format_time", "ms", "ns", "ps", "seconds", "sleep", "spawn",
        "stable_hash", "to_ps", "us", "with_timeout",
    ]
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("sim._"):
        try:
            _obj.__module__ = "sim"
        except (AttributeError, TypeError):
            pass
del _name, _obj
