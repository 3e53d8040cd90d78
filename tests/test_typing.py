"""The typed seams are checked: ``mypy --strict`` over the four packages passes
(configuration in pyproject.toml's ``[tool.mypy]``)."""

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["sim", "models", "testbench", "viommu_sim"]


def test_mypy_strict_passes_on_sim_models_testbench_and_the_cli():
    out, err, status = api.run(["--strict", "--config-file", str(ROOT / "pyproject.toml"),
                                "--cache-dir", str(ROOT / ".mypy_cache"), *[str(ROOT / p) for p in PACKAGES]])
    assert status == 0, out + err
