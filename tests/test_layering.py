"""Import rules of the design card, checked over the source tree.

Layers, bottom up: ``sim`` (the kernel) ← ``models`` (the platform) ← ``models.guest``
(the Linux-like guest) ← ``testbench`` / ``viommu_sim`` (the CLI) ← ``benchmarks``,
``examples``.  Imports point down; above a package, only its public names are used
(``sim``, ``models``, ``models.guest``, never a ``_private`` module); no module
imports itself back through a cycle; no module is over 700 lines; each package's sorted
``__all__`` is exactly what its ``__init__`` re-exports, and those names report the public
package as their module.  Every rule is a function (over a tree of files, or over a package),
and each is shown to fail on a small bad tree.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sim", "models", "testbench", "viommu_sim")
MAX_LINES = 700


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(root: Path, path: Path, *, top_level_only: bool = False) -> list[str]:
    """Absolute names ``path`` imports (``pkg.mod`` and ``pkg.mod.Name`` for from-imports).

    With ``top_level_only``: only imports that run when the module is imported (not
    those inside functions or ``if TYPE_CHECKING:``), the ones that can form a cycle."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(root, path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    names: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                names.append(module)
                names.extend(f"{module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                if not top_level_only:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not top_level_only:
                    visit(node.body)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return names


def _files(root: Path, *tops: str) -> list[Path]:
    return [p for top in tops for p in sorted((root / top).rglob("*.py"))]


def _private_part(name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


# -- the rules, as functions over a tree ------------------------------------------------------
def upward_imports(root: Path) -> list[tuple[str, str]]:
    """Imports that point up a layer."""
    above = {
        "sim": {"models", "testbench", "viommu_sim", "benchmarks", "examples"},
        "models": {"testbench", "viommu_sim", "benchmarks", "examples"},
        "testbench": {"viommu_sim", "benchmarks", "examples"},
        "viommu_sim": {"benchmarks", "examples"},
    }
    bad = []
    for top, forbidden in above.items():
        for p in _files(root, top):
            mod = _module_name(root, p)
            for n in _imports(root, p):
                if n.split(".")[0] in forbidden:
                    bad.append((mod, n))
                # the platform never reaches into the guest that runs on it
                if top == "models" and not mod.startswith("models.guest") and n.startswith("models.guest"):
                    bad.append((mod, n))
    return bad


def private_imports_across_packages(root: Path, tops: tuple[str, ...]) -> list[tuple[str, str]]:
    """``tops`` importing a private module of ``sim``/``models``/``models.guest``
    (inside a package, its own private modules are fine)."""
    owners = ("models.guest", "models", "sim")  # longest first
    bad = []
    for p in _files(root, *tops):
        mod = _module_name(root, p)
        for n in _imports(root, p):
            owner = next((o for o in owners if n == o or n.startswith(o + ".")), None)
            if owner is None or mod == owner or mod.startswith(owner + "."):
                continue
            if _private_part(n[len(owner):]):
                bad.append((mod, n))
    return bad


def import_cycles(root: Path, tops: tuple[str, ...]) -> list[list[str]]:
    """Cycles among the import-time imports of the project's modules."""
    mods = {_module_name(root, p): p for p in _files(root, *tops)}
    graph: dict[str, set[str]] = {}
    for mod, p in mods.items():
        deps = set()
        for n in _imports(root, p, top_level_only=True):
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n and n != mod and not mod.startswith(n + "."):  # a package's own __init__ is not a cycle
                deps.add(n)
        graph[mod] = deps
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def long_modules(root: Path, tops: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for p in _files(root, *tops):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append((str(p.relative_to(root)), n))
    return out


def export_problems(package: str) -> list[str]:
    """What is wrong with ``package``'s public names: ``__all__`` must be sorted, list each name
    once and be exactly the names its ``__init__`` re-exports (``from ._x import Name as Name``);
    the classes and functions among them must report the package as their module."""
    mod = importlib.import_module(package)
    exported = list(mod.__all__)
    problems = []
    if exported != sorted(set(exported)):
        problems.append("__all__ is not sorted or repeats a name")
    tree = ast.parse(Path(str(mod.__file__)).read_text(encoding="utf-8"))
    reexported = {a.name for node in tree.body if isinstance(node, ast.ImportFrom)
                  for a in node.names if a.asname == a.name}
    problems += [f"{package}.{name} is re-exported but not in __all__" for name in sorted(reexported - set(exported))]
    problems += [f"{package}.{name} is in __all__ but not re-exported" for name in sorted(set(exported) - reexported)]
    for name in sorted(set(exported) & reexported):
        obj = getattr(mod, name)
        if isinstance(obj, type) or callable(obj):
            home = getattr(obj, "__module__", package)
            if home.startswith(package + "._"):
                problems.append(f"{package}.{name} reports module {home!r}")
    return problems


# -- the project obeys them ----------------------------------------------------------------------
def test_imports_point_down_the_layers():
    assert upward_imports(ROOT) == []


def test_the_cli_testbench_benchmarks_and_examples_use_only_public_names():
    assert private_imports_across_packages(ROOT, ("testbench", "viommu_sim", "benchmarks", "examples")) == []


def test_models_use_only_public_sim_names():
    assert private_imports_across_packages(ROOT, ("models",)) == []


def test_no_module_imports_itself_back_through_a_cycle():
    assert import_cycles(ROOT, PACKAGES) == []


def test_no_module_is_longer_than_700_lines():
    assert long_modules(ROOT, PACKAGES) == []


@pytest.mark.parametrize("package", ["sim", "models", "models.guest", "testbench"])
def test_each_public_name_is_exported_once_and_reports_its_public_module(package):
    """``__all__`` lists every name the package imports for re-export, once; classes and
    functions defined in its private modules say they belong to the package."""
    assert export_problems(package) == []


# -- and each rule can fail ------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_rules_catch_a_bad_tree(tmp_path, monkeypatch):
    root = _tree(tmp_path, {
        "sim/__init__.py": "",
        "sim/_kernel.py": "import models\n",
        "models/__init__.py": "",
        "models/_dev.py": "from .guest._drv import x\n",
        "models/guest/__init__.py": "",
        "models/guest/_drv.py": "from .._dev import y\nfrom sim._kernel import k\n",
        "viommu_sim/__init__.py": "",
        "viommu_sim/cli.py": "from ._cmd import run\n",
        "viommu_sim/_cmd.py": "from .cli import main\nfrom models._dev import d\nfrom models.guest._drv import e\n",
        "testbench/__init__.py": "\n" * (MAX_LINES + 1),
    })
    assert upward_imports(root) == [("sim._kernel", "models"), ("models._dev", "models.guest._drv"),
                                    ("models._dev", "models.guest._drv.x")]
    assert private_imports_across_packages(root, ("viommu_sim",)) == [
        ("viommu_sim._cmd", "models._dev"), ("viommu_sim._cmd", "models._dev.d"),
        ("viommu_sim._cmd", "models.guest._drv"), ("viommu_sim._cmd", "models.guest._drv.e")]
    assert private_imports_across_packages(root, ("models",)) == [
        ("models._dev", "models.guest._drv"), ("models._dev", "models.guest._drv.x"),
        ("models.guest._drv", "sim._kernel"), ("models.guest._drv", "sim._kernel.k")]
    assert import_cycles(root, PACKAGES) == [["models._dev", "models.guest._drv", "models._dev"],
                                             ["viommu_sim._cmd", "viommu_sim.cli", "viommu_sim._cmd"]]
    assert long_modules(root, PACKAGES) == [("testbench/__init__.py", MAX_LINES + 1)]

    # a package whose __all__ repeats a name, lists one it does not re-export and misses one it
    # does, and whose class and function still report their private module
    bad = _tree(tmp_path / "bad", {
        "badpkg/__init__.py": "from ._a import Thing as Thing, helper as helper, other as other\n"
                              "__all__ = ['helper', 'Thing', 'Thing', 'ghost']\n",
        "badpkg/_a.py": "class Thing: pass\ndef helper(): pass\ndef other(): pass\n",
    })
    monkeypatch.syspath_prepend(str(bad))
    assert export_problems("badpkg") == [
        "__all__ is not sorted or repeats a name",
        "badpkg.other is re-exported but not in __all__",
        "badpkg.ghost is in __all__ but not re-exported",
        "badpkg.Thing reports module 'badpkg._a'",
        "badpkg.helper reports module 'badpkg._a'",
    ]
