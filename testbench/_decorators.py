"""``@testbench.test`` and ``testbench.parametrize``: cocotb 2.x test declarations on pytest.

A decorated ``async def`` test runs *inside the simulation*: the plugin's
``sim`` fixture builds a fresh, seeded ``Simulator``; the test coroutine is
spawned on it as a kernel task and ``await sim.run(until=task)`` drives it from
the trio task that pytest-trio gives the test.  So the body awaits kernel
triggers (``Timer``, ``Event`` ...) directly, as a cocotb test does, and the
options keep cocotb's meanings (cocotb/cocotb src/cocotb/_decorators.py
``test``): ``timeout`` counts simulated time, ``expect_error`` names exception
types the test must raise, ``expect_fail`` expects a failed ``assert``, ``skip``
skips.  ``parametrize`` is cocotb 2.0's: the Cartesian product of the options,
values named in the test id.
"""

from __future__ import annotations

import enum
import functools
import inspect
import itertools
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, overload

import pytest

from sim import PRIORITY_LATE, TIME_UNITS, Simulator, SimTimeoutError, format_time, to_ps

from . import _seed

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

_ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


@overload
def test(fn: F, /) -> F: ...


@overload
def test(
    *,
    timeout: int | None = None,
    timeout_time: float | None = None,
    timeout_unit: str = "step",
    expect_error: _ExcTypes = (),
    skip: bool = False,
    expect_fail: bool = False,
) -> Callable[[F], F]: ...


def test(
    fn: F | None = None,
    /,
    *,
    timeout: int | None = None,
    timeout_time: float | None = None,
    timeout_unit: str = "step",
    expect_error: _ExcTypes = (),
    skip: bool = False,
    expect_fail: bool = False,
) -> F | Callable[[F], F]:
    """Declare a simulation test; usable bare (``@testbench.test``) or with options.

    Args:
        timeout: simulated time in ps (``testbench.us(5)``) the test may take,
            counted from its start; if it is still running after every event of
            that instant, it is cancelled and fails with ``SimTimeoutError``
            naming what it was waiting on.  Meant to catch hangs.
        timeout_time, timeout_unit: cocotb's spelling of the same limit
            (``timeout_time=5, timeout_unit="us"``; units fs, ps, ns, us, ms, sec,
            step = 1 ps); give either these or ``timeout``.
        expect_error: exception type(s); the test passes only if it (or a sim
            task nobody awaited) raises one of them.
        skip: do not run the test.
        expect_fail: the test is expected to fail an ``assert`` (or a
            scoreboard check): that outcome is reported as xfail; passing, or
            any other exception, fails it.

    The test may take any fixtures; ``sim`` is the Simulator it runs on.
    Scoreboards created during the test are checked when it returns.
    """
    timeout = _timeout_ps(timeout, timeout_time, timeout_unit)
    if fn is not None:
        return _make_test(fn, timeout, expect_error, skip, expect_fail)
    _check_options(timeout, expect_error)
    return lambda f: _make_test(f, timeout, expect_error, skip, expect_fail)


def _timeout_ps(timeout: int | None, timeout_time: float | None, timeout_unit: str) -> int | None:
    """The limit in ps from ``timeout`` or from cocotb's ``timeout_time``/``timeout_unit``."""
    if timeout_time is None:
        if timeout_unit != "step":
            raise TypeError(f"@testbench.test(timeout_unit={timeout_unit!r}) needs timeout_time")
        return timeout
    if timeout is not None:
        raise TypeError("@testbench.test: give timeout (ps) or timeout_time/timeout_unit, not both")
    if timeout_unit not in TIME_UNITS:
        raise TypeError(f"@testbench.test(timeout_unit={timeout_unit!r}): one of {', '.join(TIME_UNITS)}")
    if isinstance(timeout_time, bool) or not isinstance(timeout_time, (int, float)) or timeout_time <= 0:
        raise TypeError(f"@testbench.test(timeout_time={timeout_time!r}): a positive number")
    try:
        return to_ps(timeout_time, timeout_unit)
    except ValueError as exc:
        raise TypeError(f"@testbench.test(timeout_time={timeout_time!r}, timeout_unit={timeout_unit!r}): {exc}") from None


test.__test__ = False  # type: ignore[attr-defined]  # `from testbench import test` is not a pytest test


def _check_options(timeout: int | None, expect_error: _ExcTypes) -> tuple[type[BaseException], ...]:
    if timeout is not None and (type(timeout) is not int or timeout <= 0):
        raise TypeError(
            f"@testbench.test(timeout={timeout!r}): timeout is a positive int number of simulated ps "
            "(write testbench.us(5), testbench.ns(300))"
        )
    errors = expect_error if isinstance(expect_error, tuple) else (expect_error,)
    for exc in errors:
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise TypeError(f"@testbench.test(expect_error=...) takes exception types, not {exc!r}")
    return errors


def _make_test(fn: F, timeout: int | None, expect_error: _ExcTypes, skip: bool, expect_fail: bool) -> F:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@testbench.test needs an `async def` function; {fn.__qualname__} is not one")
    errors = _check_options(timeout, expect_error)
    sig = inspect.signature(fn)
    wants_sim = "sim" in sig.parameters
    name = fn.__qualname__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        simulator: Simulator = kwargs["sim"] if wants_sim else kwargs.pop("sim")
        ctx = _seed.active()
        if ctx is not None:
            ctx.test_function = fn
        t0 = time.perf_counter()
        try:
            await _run_in_sim(simulator, fn(*args, **kwargs), name, timeout, ctx)
        except errors:
            return
        finally:
            if ctx is not None:
                ctx.wall_s = time.perf_counter() - t0
        if errors:
            pytest.fail(f"{name} returned, but expect_error={_names(errors)} requires it to raise", pytrace=False)

    if not wants_sim:
        params = list(sig.parameters.values())
        at = len(params) - (bool(params) and params[-1].kind is inspect.Parameter.VAR_KEYWORD)
        params.insert(at, inspect.Parameter("sim", inspect.Parameter.KEYWORD_ONLY))
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    marked: Any = pytest.mark.trio(wrapper)
    if expect_fail:
        marked = pytest.mark.xfail(raises=AssertionError, strict=True, reason="expect_fail=True")(marked)
    if skip:
        marked = pytest.mark.skip(reason="skip=True in @testbench.test")(marked)
    return marked  # type: ignore[no-any-return]


async def _run_in_sim(
    simulator: Simulator, coro: Coroutine[Any, Any, Any], name: str, timeout: int | None, ctx: _seed.CaseContext | None
) -> None:
    """Run the test coroutine as a kernel task until it ends; apply the simulated-time timeout."""
    __tracebackhide__ = True
    task = simulator.spawn(coro, name=name)
    expired: list[str] = []
    if timeout is not None:
        start = simulator.now

        def watchdog() -> None:
            if task.done():
                return
            expired.append(repr(task))
            task.cancel(f"timeout={format_time(timeout)} of simulated time reached")
            simulator.call_at(simulator.now, simulator.stop, PRIORITY_LATE)  # after its cleanup, this instant

        simulator.call_at(start + timeout, watchdog, PRIORITY_LATE)
    await simulator.run(until=task)
    if expired:
        raise SimTimeoutError(
            f"{name} did not finish within its timeout of {format_time(timeout or 0)} of simulated time "
            f"(reached at {format_time(simulator.now)}); it was {expired[0].removeprefix('<').removesuffix('>')}"
        )
    task.result()
    if ctx is not None:
        for board in ctx.scoreboards:
            if not board.checked:
                board.check()


def _names(errors: tuple[type[BaseException], ...]) -> str:
    names = [e.__qualname__ for e in errors]
    return names[0] if len(names) == 1 else f"({', '.join(names)})"


# -- parametrize -------------------------------------------------------------

_SIMPLE_STR = re.compile(r"[\w.+]{1,24}")


def _id_of(value: Any) -> str | None:
    """A readable id for a parameter value, or None if it has none (cocotb's rules, widened
    to strings like "6.12")."""
    if isinstance(value, str):
        return value if _SIMPLE_STR.fullmatch(value) else None
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return str(value.__qualname__)
    return None


def _ids(values: Sequence[Any]) -> list[str]:
    """Ids of one option's values; indices for all of them if any value has no readable id."""
    ids = [_id_of(v) for v in values]
    if any(i is None for i in ids):
        return [str(i) for i in range(len(values))]
    return ids  # type: ignore[return-value]


def parametrize(*grouped: tuple[Sequence[str], Sequence[Sequence[Any]]], **named: Sequence[Any]) -> Callable[[F], F]:
    """One test per point of the Cartesian product of the options (cocotb 2.0 ``parametrize``).

    ``parametrize(x=[1, 2], policy=["lazy", "strict"])`` makes four tests with
    ids like ``test_foo[x=1-policy=lazy]``.  A grouped option varies several
    parameters together: ``parametrize((("a", "b"), [(1, 2), (3, 4)]))``.
    Grouped options come first in the id, then named ones, each in the order
    given.  Works above or below ``@testbench.test``.
    """
    options: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    for group in grouped:
        if not (isinstance(group, tuple) and len(group) == 2 and not isinstance(group[0], str)):
            raise TypeError(f"parametrize: a grouped option is ((name, ...), [(value, ...), ...]), not {group!r}")
        names = tuple(group[0])
        rows = [tuple(row) for row in group[1]]
        for row in rows:
            if len(row) != len(names):
                raise ValueError(f"parametrize: {row!r} does not give one value for each of {names!r}")
        options.append((names, rows))
    for pname, values in named.items():
        if isinstance(values, (str, bytes)):
            raise TypeError(f"parametrize: {pname}= takes a sequence of values, not the string {values!r}")
        options.append(((pname,), [(v,) for v in values]))
    for names, rows in options:
        if not rows:
            raise ValueError(f"parametrize: no values given for {', '.join(names)}")
    argnames = [n for names, _ in options for n in names]
    if len(set(argnames)) != len(argnames):
        raise ValueError(f"parametrize: a parameter is named twice in {argnames!r}")

    # per option, the id fragment of each row: "a=1-b=2"
    fragments = []
    for names, rows in options:
        columns = [_ids([row[i] for row in rows]) for i in range(len(names))]
        fragments.append(["-".join(f"{n}={columns[i][r]}" for i, n in enumerate(names)) for r in range(len(rows))])

    points = list(itertools.product(*(range(len(rows)) for _, rows in options)))
    values = [tuple(v for (_, rows), r in zip(options, point) for v in rows[r]) for point in points]
    ids = ["-".join(frag[r] for frag, r in zip(fragments, point)) for point in points]

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        missing = [n for n in argnames if n not in params]
        if missing:
            raise TypeError(f"parametrize: {fn.__qualname__} has no parameter {', '.join(map(repr, missing))}")
        return pytest.mark.parametrize(argnames, values, ids=ids)(fn)  # type: ignore[no-any-return]

    return decorate
