"""Functional cross coverage: bins, shared counts per name, and the end-of-session report."""

import pytest

from testbench import Coverage, _coverage


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(_coverage, "_registry", {})


AXES = {"type": ["MAP", "UNMAP"], "status": ["OK", "ENOENT"], "policy": ["lazy", "strict"]}


def test_coverage_counts_each_cross_bin_and_reports_missing_ones():
    """sample() hits one bin of the cross; covered/total/missing follow the axis order."""
    cov = Coverage("req", AXES)
    cov.sample(type="MAP", status="OK", policy="lazy")
    cov.sample(type="MAP", status="OK", policy="lazy")
    cov.sample(type="UNMAP", status="ENOENT", policy="strict")
    assert (cov.total, cov.covered, cov.samples) == (8, 2, 3)
    assert cov.hits(type="MAP", status="OK", policy="lazy") == 2
    assert cov.percent == 25.0
    assert cov.missing()[:2] == [
        {"type": "MAP", "status": "OK", "policy": "strict"},
        {"type": "MAP", "status": "ENOENT", "policy": "lazy"},
    ]


def test_coverage_with_the_same_name_shares_its_counts():
    """Two Coverage objects with one name and the same axes add to the same bins; other axes are refused."""
    Coverage("req", AXES).sample(type="MAP", status="OK", policy="lazy")
    again = Coverage("req", AXES)
    again.sample(type="MAP", status="OK", policy="lazy")
    assert again.hits(type="MAP", status="OK", policy="lazy") == 2
    with pytest.raises(ValueError, match="coverage 'req' already exists with axes"):
        Coverage("req", {"type": ["MAP"]})


def test_coverage_ignore_and_at_least_shape_the_goal():
    """Ignored combinations leave the goal; a bin needs at_least hits to count."""
    cov = Coverage("req", AXES, ignore=lambda b: b["type"] == "MAP" and b["status"] == "ENOENT", at_least=2)
    cov.sample(type="UNMAP", status="OK", policy="lazy")
    assert (cov.total, cov.covered) == (6, 0)
    cov.sample(type="UNMAP", status="OK", policy="lazy")
    assert cov.covered == 1


def test_coverage_keeps_samples_outside_the_bins_and_refuses_wrong_axes():
    """A value outside the bins is counted and reported, not dropped; missing or extra axes are an error."""
    cov = Coverage("req", AXES)
    cov.sample(type="PROBE", status="OK", policy="lazy")
    assert (cov.samples, cov.covered) == (1, 0)
    assert cov.report()[-1] == "  outside the bins: type='PROBE', status='OK', policy='lazy': 1 samples"
    with pytest.raises(ValueError, match=r"sample\(\) needs the axes \['type', 'status', 'policy'\], got \['type'\]"):
        cov.sample(type="MAP")


def test_coverage_report_is_printed_at_session_end_when_tests_sampled(pytester):
    """Samples from several tests and files accumulate into one report table after the test summary."""
    common = """
import testbench
AXES = {"type": ["MAP", "UNMAP"], "status": ["OK", "ENOENT"]}
"""
    pytester.makepyfile(
        test_one=common + """
@testbench.test
@testbench.parametrize(status=["OK", "ENOENT"])
async def test_map(status):
    testbench.Coverage("viommu.requests", AXES).sample(type="MAP", status=status)
""",
        test_two=common + """
def test_unmap():
    testbench.Coverage("viommu.requests", AXES).sample(type="UNMAP", status="OK")
""",
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*= viommu-sim functional coverage =*",
        "viommu.requests: 3/4 bins covered (75.0%), 3 samples",
        "  type   status  hits",
        "  MAP    OK         1",
        "  MAP    ENOENT     1",
        "  UNMAP  OK         1",
        "  UNMAP  ENOENT     0   <- missed",
    ])


def test_coverage_report_is_absent_when_no_test_sampled(pytester):
    """A session where coverage was defined but never sampled prints no coverage section."""
    pytester.makepyfile(test_none="""
import testbench
COV = testbench.Coverage("unused", {"a": [1, 2]})

def test_nothing():
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "functional coverage" not in result.stdout.str()
