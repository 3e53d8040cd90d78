"""@testbench.test options and testbench.parametrize, run through pytest itself."""

import pytest

import testbench

HEADER = "import testbench\nfrom testbench import Event, Timer, ns, us\n"


def run(pytester, source, *args):
    pytester.makepyfile(test_it=HEADER + source)
    return pytester.runpytest("-p", "no:cacheprovider", "-rsxX", *args)


def test_test_decorator_runs_the_body_inside_the_simulation(pytester):
    """The body awaits kernel triggers; `sim` is the Simulator it runs on; bare and called forms both work."""
    result = run(pytester, """
@testbench.test
async def test_bare(sim):
    await Timer(ns(5))
    assert sim.now == ns(5)

@testbench.test()
async def test_called_without_sim():
    ev = Event()
    testbench.spawn(_setter(ev))
    await ev.wait()
    assert ev.data == 7

async def _setter(ev):
    await Timer(ns(1))
    ev.set(7)

class TestGroup:
    @testbench.test
    async def test_method(self, sim):
        await Timer(2)
        assert sim.now == 2
""")
    result.assert_outcomes(passed=3)


def test_test_timeout_fails_a_test_that_runs_past_it_in_simulated_time(pytester):
    """timeout counts simulated ps: a test still waiting at timeout fails with SimTimeoutError naming its wait."""
    result = run(pytester, """
@testbench.test(timeout=us(1))
async def test_slow():
    await Timer(us(2))

@testbench.test(timeout=us(1))
async def test_done_at_the_deadline(sim):
    await Timer(us(1))
    assert sim.now == us(1)

@testbench.test(timeout=us(1))
async def test_hang_becomes_timeout():
    await Event(name="never").wait()
""")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*SimTimeoutError: test_slow did not finish within its timeout of 1 us of simulated time "
        "(reached at 1 us); it was Task 'test_slow' waiting on Timer(2 us)",
        "*SimTimeoutError: test_hang_becomes_timeout did not finish within its timeout of 1 us*"
        "waiting on <Event never clear>.wait()",
    ])


def test_test_without_timeout_reports_a_deadlock(pytester):
    """With no timeout, a test waiting on something that can never happen fails with SimDeadlockError."""
    result = run(pytester, """
@testbench.test
async def test_stuck():
    await Event(name="never").wait()
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SimDeadlockError: no events left at 0 ps but <Task 'test_stuck' waiting on*"])


def test_test_expect_error_passes_only_for_the_named_exception(pytester):
    """expect_error: the right exception passes (also from an unawaited sim task); a wrong one or none fails."""
    result = run(pytester, """
@testbench.test(expect_error=ValueError)
async def test_right():
    await Timer(1)
    raise ValueError("bad iova")

@testbench.test(expect_error=(KeyError, ValueError))
async def test_from_background_task(sim):
    async def model():
        await Timer(1)
        raise KeyError("domain")
    sim.spawn(model(), name="model")
    await Timer(10)

@testbench.test(expect_error=ValueError)
async def test_wrong():
    raise TypeError("not this one")

@testbench.test(expect_error=ValueError)
async def test_none():
    await Timer(1)

@testbench.test(timeout=ns(1), expect_error=testbench.SimTimeoutError)
async def test_timeout_expected():
    await Timer(ns(2))
""")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*TypeError: not this one",
        "*test_none returned, but expect_error=ValueError requires it to raise",
    ])


def test_test_expect_fail_expects_an_assertion_failure(pytester):
    """expect_fail: a failed assert is xfail; passing or another exception fails the test."""
    result = run(pytester, """
@testbench.test(expect_fail=True)
async def test_assert_fails():
    await Timer(1)
    assert 1 == 2

@testbench.test(expect_fail=True)
async def test_passes():
    await Timer(1)

@testbench.test(expect_fail=True)
async def test_crashes():
    raise RuntimeError("crash")
""")
    result.assert_outcomes(xfailed=1, failed=2)
    result.stdout.fnmatch_lines(["*XPASS(strict)*expect_fail=True*", "*RuntimeError: crash"])


def test_test_skip_does_not_run_the_test(pytester):
    """skip=True skips the test with a reason that names the option."""
    result = run(pytester, """
@testbench.test(skip=True)
async def test_skipped():
    raise RuntimeError("must not run")
""")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*skip=True in @testbench.test"])


def test_test_failure_traceback_starts_at_the_test_or_model_frame(pytester):
    """Failures are reported as themselves (no ExceptionGroup), from the test's frame or the failing model task's."""
    result = run(pytester, """
@testbench.test
async def test_fails(sim):
    await Timer(ns(3))
    assert sim.now == 4

@testbench.test
async def test_model_fails(sim):
    async def model():
        await Timer(1)
        raise ValueError("model broke")
    sim.spawn(model(), name="model")
    await Timer(10)

@testbench.test(timeout=ns(1))
async def test_times_out():
    await Timer(ns(2))
""")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "_*_ test_fails _*_", "", "sim = <sim.Simulator object at *>", "",
        "    @testbench.test", "    async def test_fails(sim):", "*", ">       assert sim.now == 4",
        "E       assert 3000 == 4*",
        "_*_ test_model_fails _*_", "", "    async def model():", "        await Timer(1)",
        '>       raise ValueError("model broke")', "E       ValueError: model broke",
        "E       (raised by sim task 'model' at simulated time 1 ps = 1 ps)",
        "_*_ test_times_out _*_", "", "E   sim.SimTimeoutError: test_times_out did not finish*",
        "-*- viommu-sim seed -*-",
    ])
    assert "ExceptionGroup" not in result.stdout.str()
    assert "traceback entries are hidden" not in result.stdout.str()


def test_test_runs_under_trio_mode_as_well(pytester):
    """A project with trio_mode = true runs the same tests, next to its own trio tests and async fixtures."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    result = run(pytester, """
import pytest, trio

@pytest.fixture
async def answer():
    await trio.sleep(0)
    return 42

@testbench.test
async def test_sim(sim, answer):
    await Timer(ns(2))
    assert (sim.now, answer) == (2000, 42)

async def test_plain_trio():
    await trio.sleep(0)
""")
    result.assert_outcomes(passed=2)


def test_parametrize_makes_the_cartesian_product_with_values_in_the_ids(pytester):
    """Named options multiply; a grouped option varies its parameters together; ids read name=value."""
    result = run(pytester, """
@testbench.test
@testbench.parametrize((("smp", "nvme"), [(1, "vfio"), (4, "none")]), kernel=["6.7", "6.12"], lazy=[True, False])
async def test_p(smp, nvme, kernel, lazy):
    assert (smp, nvme) in [(1, "vfio"), (4, "none")]

@testbench.parametrize(size=[4096, 2 * 1024 * 1024])
@testbench.test
async def test_decorator_order(size):
    pass
""", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_it.py::test_p[smp=1-nvme=vfio-kernel=6.7-lazy=True]",
        "test_it.py::test_p[smp=1-nvme=vfio-kernel=6.7-lazy=False]",
        "test_it.py::test_p[smp=1-nvme=vfio-kernel=6.12-lazy=True]",
        "test_it.py::test_p[smp=1-nvme=vfio-kernel=6.12-lazy=False]",
        "test_it.py::test_p[smp=4-nvme=none-kernel=6.7-lazy=True]",
        "test_it.py::test_p[smp=4-nvme=none-kernel=6.7-lazy=False]",
        "test_it.py::test_p[smp=4-nvme=none-kernel=6.12-lazy=True]",
        "test_it.py::test_p[smp=4-nvme=none-kernel=6.12-lazy=False]",
        "test_it.py::test_decorator_order[size=4096]",
        "test_it.py::test_decorator_order[size=2097152]",
    ])


def test_parametrize_ids_fall_back_to_indices_for_unnamed_values(pytester):
    """An option with a value that has no short readable form is numbered, like cocotb does."""
    result = run(pytester, """
@testbench.test
@testbench.parametrize(buf=[b"\\x00", b"\\x01"], tag=["has space", "ok"])
async def test_p(buf, tag):
    pass
""", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_it.py::test_p[buf=0-tag=0]", "test_it.py::test_p[buf=1-tag=1]"])


def test_test_refuses_misuse_with_a_clear_message():
    """A sync function, a non-int timeout, a non-exception expect_error are refused at decoration."""
    def sync_test():
        pass

    async def t(sim):
        pass

    with pytest.raises(TypeError, match="needs an `async def` function"):
        testbench.test(sync_test)
    with pytest.raises(TypeError, match=r"timeout=1.5\): timeout is a positive int number of simulated ps"):
        testbench.test(timeout=1.5)
    with pytest.raises(TypeError, match="takes exception types, not 'ValueError'"):
        testbench.test(expect_error="ValueError")(t)


def test_parametrize_refuses_misuse_with_a_clear_message():
    """Unknown parameters, empty value lists, bad groups and strings as value lists are refused."""
    async def t(sim, a):
        pass

    with pytest.raises(TypeError, match="t has no parameter 'b'"):
        testbench.parametrize(b=[1])(t)
    with pytest.raises(ValueError, match="no values given for a"):
        testbench.parametrize(a=[])
    with pytest.raises(ValueError, match=r"\(1,\) does not give one value for each of \('a', 'b'\)"):
        testbench.parametrize((("a", "b"), [(1,)]))
    with pytest.raises(TypeError, match="takes a sequence of values, not the string 'lazy'"):
        testbench.parametrize(a="lazy")


def test_testbench_reexports_the_kernel_api():
    """A test file needs only `import testbench`: the kernel's tasks, triggers and time units are the same objects."""
    import sim

    for name in ["Timer", "sleep", "Event", "Signal", "Queue", "Lock", "First", "Combine", "with_timeout",
                 "Task", "ns", "us", "ms", "Cancelled", "SimTimeoutError", "spawn", "Simulator"]:
        assert getattr(testbench, name) is getattr(sim, name), name
    assert testbench.test.__test__ is False


def test_cocotb_units_and_timeout_time_work_as_in_cocotb(pytester):
    """Timer(n, unit=...) and @testbench.test(timeout_time=, timeout_unit=) as cocotb 2 spells them."""
    result = run(pytester, """
@testbench.test(timeout_time=5, timeout_unit="us")
async def test_within(sim):
    await Timer(10, unit="ns")
    assert sim.now == 10_000

@testbench.test(timeout_time=1, timeout_unit="us")
async def test_past_it(sim):
    await Timer(2, unit="us")
""")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*SimTimeoutError: test_past_it did not finish within its timeout of 1 us*"])


def test_timeout_time_is_checked_like_timeout():
    with pytest.raises(TypeError, match="give timeout \\(ps\\) or timeout_time/timeout_unit, not both"):
        testbench.test(timeout=5, timeout_time=1, timeout_unit="ns")
    with pytest.raises(TypeError, match="timeout_unit='hours'"):
        testbench.test(timeout_time=1, timeout_unit="hours")
    with pytest.raises(TypeError, match="not a whole number of picoseconds"):
        testbench.test(timeout_time=1, timeout_unit="fs")


def test_a_bare_async_test_is_told_to_use_testbench_test(pytester):
    """Without trio_mode, an undecorated `async def` test fails naming @testbench.test (not "install a plugin")."""
    pytester.makeini("[pytest]\n")
    result = run(pytester, """
async def test_forgot_the_decorator():
    await Timer(1)
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_forgot_the_decorator is an `async def` test without @testbench.test*"])
