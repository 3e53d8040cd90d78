"""pytest plugin entry point (registered as ``pytest11: viommu_sim``).

Active in every pytest run of an environment where viommu-sim is installed,
so it stays cheap and quiet for plain tests: it adds ``--viommu-seed``, the
``sim`` and ``platform`` fixtures, a seed/replay block under failed tests that
used the seed, JUnit properties for tests that used ``sim``, and the
functional-coverage report when a test sampled coverage.
"""

from __future__ import annotations

import inspect

import os
import time
from collections.abc import Generator
from typing import Any

import pytest

import sim as _sim_pkg
from sim import Simulator

from . import _coverage, _seed
from ._platform_hook import INI_NAME, platform  # noqa: F401  (a fixture, found by name)

_CTX = pytest.StashKey[_seed.CaseContext]()
_PREVIOUS = pytest.StashKey["_seed.CaseContext | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("viommu-sim")
    group.addoption(
        "--viommu-seed",
        type=int,
        default=_seed.DEFAULT_BASE_SEED,
        metavar="N",
        help="base seed of the viommu-sim testbench; each test's seed is N + stable_hash(node id) "
        f"(default {_seed.DEFAULT_BASE_SEED}, so runs are reproducible; vary N to explore)",
    )
    parser.addini(
        INI_NAME,
        "'module:function' building a machine for the `platform` fixture (imported on first use)",
        default="",
    )


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Generator[Simulator, None, None]:
    """A fresh Simulator seeded with this test's seed (``base + stable_hash(node id)``)."""
    ctx = request.node.stash[_CTX]
    ctx.used = True
    simulator = Simulator(seed=ctx.seed)
    ctx.sim = simulator
    t0 = time.perf_counter()
    yield simulator
    if ctx.wall_s is None:
        ctx.wall_s = time.perf_counter() - t0
    request.node.user_properties.extend(ctx.properties())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    ctx = _seed.CaseContext(item.nodeid, config.getoption("viommu_seed"), str(config.rootpath))
    item.stash[_CTX] = ctx
    item.stash[_PREVIOUS] = _seed.activate(ctx)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """An ``async def`` test that nothing runs (pytest-trio wraps the ones it runs, so they are
    plain functions by now): say what to write instead of pytest's "install a plugin" skip."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        pytest.fail(f"{pyfuncitem.name} is an `async def` test without @testbench.test: decorate it with "
                    "@testbench.test to run it inside the simulation (its body awaits Timer, Event, ...)",
                    pytrace=False)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        if _PREVIOUS in item.stash:
            _seed.activate(item.stash[_PREVIOUS])


_KERNEL_DIR = os.path.dirname(_sim_pkg.__file__)


def _unwrap(excinfo: pytest.ExceptionInfo[BaseException], fn: Any) -> pytest.ExceptionInfo[BaseException]:
    """The exception a ``@testbench.test`` raised, out of the one-member group pytest-trio's
    nursery wraps it in, with its traceback starting at the test function if it passed there,
    else (a model task's exception) just below the kernel's frames."""
    exc = excinfo.value
    if not (isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1):
        return excinfo
    info = pytest.ExceptionInfo.from_exception(exc.exceptions[0])
    tb = info.traceback
    start = next((i for i, entry in enumerate(tb) if entry.frame.code.raw is fn.__code__), None)
    if start is None:
        kernel = [i for i, entry in enumerate(tb) if os.path.dirname(str(entry.path)) == _KERNEL_DIR]
        if kernel and kernel[-1] + 1 < len(tb):
            start = kernel[-1] + 1
    if start is not None:
        info.traceback = tb[start:]
    return info


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    ctx = item.stash.get(_CTX, None)
    if ctx is not None and ctx.test_function is not None and call.excinfo is not None:
        call.excinfo = _unwrap(call.excinfo, ctx.test_function)
    report = yield
    longrepr = report.longrepr
    if ctx is not None and ctx.test_function is not None:
        # a verdict of @testbench.test itself (timeout, expect_error) has no user frame to show: say only the message
        for reprtb, _, _ in getattr(longrepr, "chain", ()):
            if (reprtb.extraline or "").startswith("All traceback entries are hidden"):
                reprtb.extraline = None
    if report.failed and ctx is not None and ctx.used:
        text = ctx.failure_text()
        if hasattr(longrepr, "addsection"):
            longrepr.addsection("viommu-sim seed", text)
        else:
            report.sections.append(("viommu-sim seed", text))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _coverage.session_report()
    if lines:
        terminalreporter.write_sep("=", "viommu-sim functional coverage")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    _coverage.reset()
