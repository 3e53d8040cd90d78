"""The conformance suite (``testbench.check_policy`` / ``viommu-sim check-policy``) on the built-ins and on
policies that break one property each: every property's verdict can fail, and a failure replays."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import testbench
from sim import ms
from viommu_sim.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"
ALL_PASS = ["use-after-unmap", "strict-unmap", "stale-window", "lost-completions", "map-ordering", "isolation"]


def _policy(tmp_path: Path, body: str) -> str:
    """A policy file deriving from the Deferred1ms example; returns its reference."""
    path = tmp_path / "variant.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(EXAMPLES)!r})\n" + textwrap.dedent(body))
    return f"{path}:Variant"


def test_strict_passes_every_property_on_both_kernels_one_and_four_cpus_two_seeds():
    report = testbench.check_policy("strict")
    assert [(r.guest_kernel, r.smp, r.seed) for r in report.runs] == [
        ("6.12", 1, 0), ("6.12", 1, 1), ("6.12", 4, 0), ("6.12", 4, 1),
        ("6.7", 1, 0), ("6.7", 1, 1), ("6.7", 4, 0), ("6.7", 4, 1)]
    assert report.lines()[1:7] == [f"PASS {name} (8 runs)" for name in ALL_PASS]
    assert report.ok and report.stale_bound_ps == 0
    assert report.max_stale_window_ps < testbench.us(100)


def test_lazy_passes_on_6_12_only_with_its_stale_window_near_the_10_ms_timer():
    """6.7 has no flush_iotlb_all, so lazy does not apply there; strict-unmap does not apply to a 10 ms bound."""
    report = testbench.check_policy("lazy", seeds=(0,))
    assert [r.guest_kernel for r in report.runs] == ["6.12", "6.12"]
    assert report.lines()[1:7] == [
        "PASS use-after-unmap (2 runs)", "SKIP strict-unmap: the policy declares a stale bound of 10.0000 ms, not 0",
        "PASS stale-window (2 runs)", "PASS lost-completions (2 runs)", "PASS map-ordering (2 runs)",
        "PASS isolation (2 runs)"]
    assert ms(5) < report.max_stale_window_ps <= ms(10) + testbench.us(100)


def test_a_policy_whose_timer_outlasts_its_declared_bound_fails_the_stale_window(tmp_path):
    ref = _policy(tmp_path, """
        from models.guest import ArmTimer
        from sim import ms
        from deferred import Deferred1ms

        class Variant(Deferred1ms):
            def _arm(self):
                if self.timer_armed or not self.queued:
                    return []
                self.timer_armed = True
                cpu, _, _, unmapped = self.queued[0]
                return [ArmTimer(unmapped + ms(5), cpu)]  # declares 1 ms, waits 5
    """)
    report = testbench.check_policy(ref, smps=(1,), seeds=(0,))
    verdict = report.verdict("stale-window")
    assert not verdict.ok and report.verdict("use-after-unmap").ok
    assert verdict.counterexample is not None and verdict.counterexample.startswith("IOVA 0x")
    assert "unmapped on CPU 0 at t=" in verdict.counterexample
    assert verdict.counterexample.endswith("beyond the declared 1 ms + slack")
    assert verdict.replay == f"viommu-sim check-policy {ref} --guest-kernel 6.12 --smp 1 --seed 0"


def test_a_policy_that_never_invalidates_loses_the_last_unmaps(tmp_path):
    """Without a flush the UNMAPs ride on later kicks; the last ones never reach the device."""
    ref = _policy(tmp_path, """
        from deferred import Deferred1ms

        class Variant(Deferred1ms):
            stale_bound_ps = None

            def unmap(self, cpu, pfn, pages, now_ps):
                self.counters.unmaps += 1
                return []
    """)
    report = testbench.check_policy(ref, smps=(1,), seeds=(0,))
    lost = report.verdict("lost-completions")
    assert not lost.ok and lost.counterexample is not None
    assert lost.counterexample.startswith("the UNMAP of IOVA 0x") and "had not completed at t=" in lost.counterexample
    assert report.verdict("stale-window").skipped == "the policy declares no bound"


def test_check_policy_exits_1_on_a_violation_and_its_replay_command_reproduces_it(capsys):
    ref = f"{EXAMPLES}/broken.py:FreeOnUnmap"
    assert main(["check-policy", ref, "--smp", "4", "--seed", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    fail = out[1]
    assert fail.startswith("FAIL use-after-unmap: IOVA 0x") and " freed for reuse on CPU " in fail
    replay = fail.split("; replay: ")[1]
    assert replay == f"viommu-sim check-policy {ref} --guest-kernel 6.12 --smp 4 --seed 1"
    assert main(shlex.split(replay)[1:]) == 1
    assert capsys.readouterr().out.splitlines()[1] == fail


def test_check_policy_exits_0_when_every_property_passes_and_2_on_a_bad_flag(capsys):
    assert main(["check-policy", "strict", "--guest-kernel", "6.12", "--smp", "1", "--seed", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[1:7] == [f"PASS {name} (1 runs)" for name in ALL_PASS]
    assert main(["check-policy", "strict", "--guest-kernel", "5.4"]) == 2
    assert capsys.readouterr().err == (
        "viommu-sim check-policy: error: --guest-kernel: Linux 5.4 is older than 5.14, the first kernel whose "
        "virtio-iommu driver an x86 (q35) guest can use (ACPI VIOT)\n")
