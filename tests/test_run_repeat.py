"""``run --repeat N``: N seeds, each figure's mean, sample standard deviation and Student-t 95 % interval."""

from __future__ import annotations

import json
import math

import pytest

from viommu_sim._stats import mean_ci, t_quantile
from viommu_sim.cli import main

JOB = ["--ios", "300", "--rw", "randrw", "--iodepth", "8", "--numjobs", "4", "--guest-kernel", "6.12"]


def test_mean_ci_is_the_student_t_interval_of_the_mean() -> None:
    mean, sd, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977934 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert (mean, sd) == (3.0, pytest.approx(math.sqrt(2.5)))
    assert (lo, hi) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert t_quantile(0.95, 4) == pytest.approx(2.7764451051977934)


def test_one_run_has_no_interval() -> None:
    assert mean_ci([7.5]) == (7.5, 0.0, 7.5, 7.5)


def test_repeat_json_has_each_seeds_run_and_an_interval_that_brackets_the_mean(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *JOB, "--repeat", "3", "--seed", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["repeat"], out["seeds"]) == (3, [5, 6, 7])
    runs = out["runs"]
    assert [r["machine"]["seed"] for r in runs] == [5, 6, 7]
    iops = [r["iops"] for r in runs]
    assert len(set(iops)) > 1  # the seeds really draw other offsets
    assert out["mean"]["iops"] == pytest.approx(sum(iops) / 3, abs=1e-4)
    for path in (("iops",), ("bandwidth_mib_s",), ("latency_us", "p99")):
        lo, hi = out["ci95"][path[0]] if len(path) == 1 else out["ci95"][path[0]][path[1]]
        mean = out["mean"][path[0]] if len(path) == 1 else out["mean"][path[0]][path[1]]
        assert lo < mean < hi
    assert "seed" not in out["machine"] and "seed" not in out["job"]


def test_repeat_runs_are_the_single_runs_of_those_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *JOB, "--repeat", "2", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    for seed, run in zip((0, 1), runs):
        assert main(["run", *JOB, "--seed", str(seed), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == run


def test_repeat_text_summary_names_the_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *JOB, "--repeat", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 runs, seeds 0..1: mean, [95% confidence interval] (Student t), stddev" in text
    assert text.count("\n") == 2 + 17


@pytest.mark.parametrize("bad", ["0", "1001", "x"])
def test_a_bad_repeat_is_one_line_and_exit_2(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--repeat", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument --repeat: invalid value {bad!r} (an integer from 1 to 1000)")
