"""The benchmark scripts run: each, at tiny sizes, exits cleanly and prints its last line.

A smoke test only: what the scripts measure is read from their output by people, never asserted
here (non-negotiable 3: speed targets live in benchmarks/, not in timed unit tests).  The scripts
that measure against SimPy need the ``bench`` extra and are skipped without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _last_line(script: str, *argv: str, ok: tuple[int, ...] = (0,)) -> str:
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode in ok, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_speed_quick_prints_the_targets_met() -> None:
    """`benchmarks/speed.py --quick` ends with the count of issue 12's targets met."""
    pytest.importorskip("simpy")
    assert _last_line("speed.py", "--quick").startswith("speed: ")


def test_replay_scaling_prints_the_cost_ratio() -> None:
    """`benchmarks/replay_scaling.py` at two tiny N ends with the per-request cost ratio."""
    pytest.importorskip("simpy")
    assert _last_line("replay_scaling.py", "--small", "20", "--large", "40").startswith("per-request cost ratio 40/20: ")


def test_run_scale_prints_the_memory_growth() -> None:
    """`benchmarks/run_scale.py` at a tiny N ends with the peak-RSS growth from N to 4N."""
    pytest.importorskip("simpy")
    assert _last_line("run_scale.py", "--ios", "20").startswith("peak RSS growth from N to 4N: ")


def test_calibration_prints_its_wall_time_last() -> None:
    """`benchmarks/calibration.py` over a tiny window prints the table, then the wall time and the workers.

    Exit status 1 is allowed: a window this short is no calibration, rows may fall outside the tolerance."""
    last = _last_line("calibration.py", "--runtime", "0.0005", "--ramp-time", "0.0005", "--repetitions", "1",
                      "--workers", "1", ok=(0, 1))
    assert last.startswith("wall: ") and last.endswith("1 worker process")
