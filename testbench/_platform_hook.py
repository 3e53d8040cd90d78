"""The ``platform`` fixture and the registry of the factory that builds and boots a machine.

The testbench does not know how to build a machine; the models layer does.
Models never import the testbench (tests/test_layering.py), so the factory is
made known from above, in one of two ways:

- ``register_platform_factory(fn)`` (e.g. from a ``conftest.py``), or
- the ini option ``viommu_platform_factory = "package.module:function"``,
  imported lazily the first time a test calls ``platform(...)``; this keeps
  the plugin's import (which happens in every pytest run) free of the models.

A factory is ``fn(config: dict, sim) -> awaitable platform``: ``config`` holds
the keyword arguments the test gave (MachineConfig's fields: ``smp``,
``iommu_policy``, ``guest_kernel``, ...) and ``sim`` is the test's Simulator.
A test calls ``machine = await platform(smp=2, iommu_policy="lazy")`` inside
its simulation.  A registered factory takes precedence over the ini option.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sim import Simulator

PlatformFactory = Callable[[dict[str, Any], Simulator], Awaitable[Any]]

INI_NAME = "viommu_platform_factory"

_factory: PlatformFactory | None = None


def register_platform_factory(fn: PlatformFactory) -> PlatformFactory:
    """Make ``fn`` the factory behind the ``platform`` fixture (the last registration wins).

    Returns ``fn``, so it also works as a decorator.
    """
    global _factory
    if not callable(fn):
        raise TypeError(f"register_platform_factory() takes a callable fn(config, sim), not {fn!r}")
    _factory = fn
    return fn


def _load_from_ini(spec: str) -> PlatformFactory:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        pytest.fail(f"{INI_NAME} = {spec!r}: write it as 'package.module:function'", pytrace=False)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"{INI_NAME} = {spec!r}: cannot import {module_name!r}: {exc}", pytrace=False)
    fn = getattr(module, attr, None)
    if not callable(fn):
        pytest.fail(f"{INI_NAME} = {spec!r}: {module_name} has no callable {attr!r}", pytrace=False)
    return fn  # type: ignore[no-any-return]


def resolve_factory(config: pytest.Config) -> PlatformFactory:
    """The registered factory, else the ini option's; fails the test if there is neither."""
    if _factory is not None:
        return _factory
    spec = str(config.getini(INI_NAME) or "").strip()
    if spec:
        return _load_from_ini(spec)
    from ._platform import boot_platform  # the default: viommu-sim's own machine and guest

    return boot_platform


@pytest.fixture
def platform(request: pytest.FixtureRequest, sim: Simulator) -> Callable[..., Awaitable[Any]]:
    """An async factory: ``machine = await platform(smp=2, iommu_policy="lazy", ...)`` builds and
    boots a machine on the test's simulator (call it inside a ``@testbench.test``)."""
    config = request.config

    async def make(**machine: Any) -> Any:
        factory = resolve_factory(config)
        return await factory(dict(machine), sim)

    return make
