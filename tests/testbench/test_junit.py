"""--junitxml carries each simulation test's seed, final simulated time and sim/wall ratio."""

import xml.etree.ElementTree as ET

from sim import stable_hash

SOURCE = """
import testbench
from testbench import Timer, ns

@testbench.test
async def test_passes(sim):
    await Timer(ns(5))

@testbench.test
async def test_fails(sim):
    await Timer(ns(7))
    assert False

def test_plain():
    pass
"""


def properties(path) -> dict[str, dict[str, str]]:
    root = ET.parse(path).getroot()
    return {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in root.iter("testcase")
    }


def test_junit_testcases_carry_seed_sim_time_and_ratio(pytester):
    """Each simulation test has seed, base_seed, sim_time_ps, sim_time, wall_time_s, sim_ns_per_wall_s; plain tests none."""
    pytester.makepyfile(test_j=SOURCE)
    pytester.runpytest("-p", "no:cacheprovider", "--viommu-seed", "3", "--junitxml=out.xml")
    props = properties(pytester.path / "out.xml")
    assert props["test_plain"] == {}
    for name, sim_ps in [("test_passes", 5000), ("test_fails", 7000)]:
        p = props[name]
        assert list(p) == ["seed", "base_seed", "sim_time_ps", "sim_time", "wall_time_s", "sim_ns_per_wall_s"]
        assert p["seed"] == str(3 + stable_hash(f"test_j.py::{name}"))
        assert p["base_seed"] == "3"
        assert p["sim_time_ps"] == str(sim_ps)
        assert p["sim_time"] == f"{sim_ps // 1000} ns"
        wall = float(p["wall_time_s"])
        assert wall > 0
        ratio = (sim_ps / 1000) / wall
        assert abs(float(p["sim_ns_per_wall_s"]) - ratio) <= 0.05 + 1e-4 * ratio
