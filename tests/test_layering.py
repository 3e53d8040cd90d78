"""Import rules of the design card: sim/ is self-contained; others use only sim's public names."""

import ast
from pathlib import Path

import sim

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_sim_imports_nothing_from_models_testbench_or_cli():
    """The kernel layer never reaches up into the layers built on it."""
    bad = [
        (p.name, n)
        for p in sorted((ROOT / "sim").rglob("*.py"))
        for n in _imports(p)
        if n.split(".")[0] in {"models", "testbench", "viommu_sim"}
    ]
    assert bad == []


def test_upper_layers_use_only_public_sim_names():
    """models/, testbench/ and the CLI import `sim`, never `sim._private` modules."""
    bad = [
        (str(p.relative_to(ROOT)), n)
        for top in ("models", "testbench", "viommu_sim")
        for p in sorted((ROOT / top).rglob("*.py"))
        for n in _imports(p)
        if n.startswith("sim._")
    ]
    assert bad == []


def test_models_do_not_import_testbench_or_cli():
    """Imports point down only: models never import the testbench or the CLI."""
    bad = [
        (str(p.relative_to(ROOT)), n)
        for p in sorted((ROOT / "models").rglob("*.py"))
        for n in _imports(p)
        if n.split(".")[0] in {"testbench", "viommu_sim"}
    ]
    assert bad == []


def test_every_public_sim_name_is_exported_once_and_documented_as_sim():
    """sim.__all__ is sorted, complete, and its classes report module 'sim'."""
    assert list(sim.__all__) == sorted(sim.__all__)
    for name in sim.__all__:
        obj = getattr(sim, name)
        if isinstance(obj, type) and name != "SimTime":  # SimTime is an alias of int
            assert obj.__module__ == "sim", name
