"""Loading a guest policy named by reference: ``./file.py:Class`` or ``package.module:Class``.

Two kinds: an invalidation policy (``MachineConfig.iommu_policy``, below) and a MAP-submission
policy (``MachineConfig.map_batching``: a class with ``api_version``, a bool ``sync_map`` and the
methods ``map_range`` and ``map_operation_done``; ``check_map_policy``).

``MachineConfig.iommu_policy`` is ``"lazy"``, ``"strict"`` or such a reference; the config keeps
the string (so it stays frozen and hashable) and its validator calls ``load_policy_class`` at
once, so a bad reference is a ``ConfigError`` naming ``--iommu-policy`` whichever spelling
carried it (flag, TOML ``[machine] iommu_policy``, ``platform(iommu_policy=...)``), before
anything boots.  The guest asks again when it builds a DMA domain and gets the cached class.

What is checked here is the shape the guest's ``InvalidationPolicy`` protocol
(``models.guest``) requires, by name, so the platform need not import the guest: a class with
``api_version == POLICY_API_VERSION``, an ``int`` (or None) ``stale_bound_ps``, a bool
``deferred_flush`` and the methods ``unmap``, ``timer_expired``, ``flush_done`` and
``statistics``.  A file reference is loaded once per absolute path (as ``importlib`` loads a
module once), relative paths from the current directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

from ._config import ConfigError

#: the version of the invalidation-policy protocol this simulator implements; a policy states the
#: version it was written for as ``api_version`` and is refused if it differs
POLICY_API_VERSION = 1

#: the names ``iommu_policy`` takes besides a reference
BUILTIN_POLICIES = ("lazy", "strict")

_METHODS = ("unmap", "timer_expired", "flush_done", "statistics")
_OPTION = "--iommu-policy"
_REF_RE = re.compile(r"^(?P<module>.+):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_cache: dict[str, type[Any]] = {}


def is_policy_reference(value: object) -> bool:
    """Is ``value`` a reference to user code (``MODULE:Class`` or ``PATH.py:Class``), not a built-in name?"""
    return isinstance(value, str) and ":" in value


def _fail(ref: str, problem: str, option: str = _OPTION) -> ConfigError:
    return ConfigError(option, f"policy {ref!r}: {problem}")


def _load_file(ref: str, path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise _fail(ref, f"no such file {path!r}")
    name = "viommu_policy_" + re.sub(r"\W", "_", full)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:  # not a .py file
        raise _fail(ref, f"cannot load {path!r} as Python (a PATH.py:Class reference names a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise _fail(ref, f"syntax error in {path} line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[name]
        raise _fail(ref, f"importing {path} raised {type(exc).__name__}: {exc}") from None
    return module


def _load_module(ref: str, dotted: str) -> Any:
    if not _MODULE_RE.match(dotted):
        raise _fail(ref, "expected PATH.py:Class or package.module:Class")
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise _fail(ref, f"no module named {exc.name!r}") from None
    except SyntaxError as exc:
        raise _fail(ref, f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        raise _fail(ref, f"importing {dotted} raised {type(exc).__name__}: {exc}") from None


def _check_class(ref: str, cls_name: str, cls: object) -> type[Any]:
    if not isinstance(cls, type):
        raise _fail(ref, f"{cls_name} is not a class")
    missing = [m for m in _METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise _fail(ref, f"{cls_name} does not implement the invalidation-policy protocol (no {', '.join(missing)})")
    version = getattr(cls, "api_version", None)
    if version != POLICY_API_VERSION:
        raise _fail(ref, f"{cls_name} is written for policy API version {version!r}, this simulator implements "
                         f"version {POLICY_API_VERSION}")
    bound = getattr(cls, "stale_bound_ps", None)
    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 0):
        raise _fail(ref, f"{cls_name}.stale_bound_ps must be a non-negative int of ps or None, not {bound!r}")
    if not isinstance(getattr(cls, "deferred_flush", None), bool):
        raise _fail(ref, f"{cls_name}.deferred_flush must be True or False")
    return cls


def load_reference(ref: str, option: str) -> tuple[str, object]:
    """(class name, the object ``ref`` names) for ``PATH.py:Class`` or ``package.module:Class``: a bad
    form, a missing file or module, a syntax error or a missing name is one ``ConfigError`` naming
    ``option``.  The kinds of policy check the object's shape themselves."""
    m = _REF_RE.match(ref)
    if m is None:
        raise _fail(ref, "expected PATH.py:Class or package.module:Class", option)
    where, cls_name = m.group("module"), m.group("cls")
    try:
        module = _load_file(ref, where) if where.endswith(".py") or os.sep in where else _load_module(ref, where)
    except ConfigError as exc:  # the file/module loaders name --iommu-policy
        raise ConfigError(option, str(exc).split(": ", 1)[1]) from None
    if not hasattr(module, cls_name):
        raise _fail(ref, f"no class {cls_name!r} in {where}", option)
    return cls_name, getattr(module, cls_name)


def check_choice_or_reference(value: object, option: str, choices: tuple[str, ...] | dict[str, Any],
                              load: Any) -> None:
    """A policy option's check: one of ``choices``, or a reference that ``load`` loads and checks."""
    if is_policy_reference(value):
        assert isinstance(value, str)
        load(value)
    elif value not in choices:  # the message of every option with choices (a reference has a colon)
        raise ConfigError(option, f"invalid value {value!r} (choose from {', '.join(choices)})")


def load_policy_class(ref: str) -> type[Any]:
    """The policy class ``ref`` names (``PATH.py:Class`` or ``package.module:Class``); a missing file or
    module, a syntax error, a missing class, a class not implementing the protocol or written for
    another API version raise ``ConfigError`` naming ``--iommu-policy`` and the problem in one line."""
    cached = _cache.get(ref)
    if cached is not None:
        return cached
    cls_name, obj = load_reference(ref, _OPTION)
    cls = _check_class(ref, cls_name, obj)
    _cache[ref] = cls
    return cls


def check_iommu_policy(value: object) -> None:
    """``MachineConfig.iommu_policy``'s check: a built-in name, or a reference that loads."""
    check_choice_or_reference(value, _OPTION, BUILTIN_POLICIES, load_policy_class)


#: the names ``map_batching`` takes besides a reference
BUILTIN_MAP_POLICIES = ("on", "off", "auto")
_MAP_OPTION = "--map-batching"
_MAP_METHODS = ("map_range", "map_operation_done")
_map_cache: dict[str, type[Any]] = {}


def load_map_policy_class(ref: str) -> type[Any]:
    """The MAP-submission policy class ``ref`` names; every problem is one ``ConfigError`` naming
    ``--map-batching`` (missing file/module/class, syntax error, shape, API version)."""
    cached = _map_cache.get(ref)
    if cached is not None:
        return cached
    cls_name, cls = load_reference(ref, _MAP_OPTION)
    if not isinstance(cls, type):
        raise _fail(ref, f"{cls_name} is not a class", _MAP_OPTION)
    missing = [name for name in _MAP_METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise _fail(ref, f"{cls_name} does not implement the MAP-submission protocol (no {', '.join(missing)})",
                    _MAP_OPTION)
    version = getattr(cls, "api_version", None)
    if version != POLICY_API_VERSION:
        raise _fail(ref, f"{cls_name} is written for policy API version {version!r}, this simulator implements "
                         f"version {POLICY_API_VERSION}", _MAP_OPTION)
    if not isinstance(getattr(cls, "sync_map", None), bool):
        raise _fail(ref, f"{cls_name}.sync_map must be True or False", _MAP_OPTION)
    _map_cache[ref] = cls
    return cls


def check_map_policy(value: object) -> None:
    """``MachineConfig.map_batching``'s check: a built-in name, or a reference that loads."""
    check_choice_or_reference(value, _MAP_OPTION, BUILTIN_MAP_POLICIES, load_map_policy_class)
