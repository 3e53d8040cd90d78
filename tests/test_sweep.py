"""viommu-sim sweep: the matrix, the CSV and chart, resume, Dask, and the CLI's answers to bad input."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from viommu_sim._sweep import (
    CHART_FILE,
    CSV_FILE,
    JOURNAL_FILE,
    Matrix,
    SweepError,
    SweepFailed,
    load_matrix,
    points,
    run_sweep,
)
from viommu_sim._workload import run_scenario
from viommu_sim.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AXES_12 = {"policy": ["lazy", "strict"], "guest_kernel": ["6.7", "6.12"], "iodepth": [2], "seed": [0, 1, 2]}


def tiny_matrix(**changes: Any) -> Matrix:
    """2 policies x 2 kernels x 1 iodepth x 3 seeds of a 4-I/O random read: 12 points."""
    return Matrix(**{**AXES_12, **changes}, job={"ios": 4, "rw": "randread", "bs": "4k"})


class CountingRunner:
    """run_scenario, counting its calls; raises after ``fail_after`` calls (an interrupted sweep)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, str, int, int]] = []
        self.fail_after = fail_after

    def __call__(self, machine: dict[str, Any], job: dict[str, Any], cost: dict[str, Any] | None) -> dict[str, Any]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("host went away")
        self.calls.append((machine["iommu_policy"], machine["guest_kernel"], job["iodepth"], machine["seed"]))
        return run_scenario(machine, job, cost)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 12-point sweep run once on a local pool of two processes."""
    out = tmp_path_factory.mktemp("local")
    run_sweep(tiny_matrix(), out, workers=2, timeout=60)
    return out


def test_points_are_the_axis_product_in_order_with_stable_keys() -> None:
    """points() is policy-major, then kernel, iodepth, seed, each axis in the order given."""
    pts = points(tiny_matrix())
    assert [p.key for p in pts] == [
        "lazy-6.7-qd2-s0", "lazy-6.7-qd2-s1", "lazy-6.7-qd2-s2",
        "lazy-6.12-qd2-s0", "lazy-6.12-qd2-s1", "lazy-6.12-qd2-s2",
        "strict-6.7-qd2-s0", "strict-6.7-qd2-s1", "strict-6.7-qd2-s2",
        "strict-6.12-qd2-s0", "strict-6.12-qd2-s1", "strict-6.12-qd2-s2",
    ]
    assert [p.index for p in pts] == list(range(12))
    assert tiny_matrix().scenario(pts[10]) == (
        {"iommu_policy": "strict", "guest_kernel": "6.12", "seed": 1},
        {"ios": 4, "rw": "randread", "bs": "4k", "iodepth": 2},
        None,
    )


def test_sweep_writes_a_csv_row_per_point(local_sweep: Path) -> None:
    """12 points give 12 CSV rows in point order (axes first, then the flattened metrics) and a PNG."""
    rows = list(csv.reader(io.StringIO((local_sweep / CSV_FILE).read_text())))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["policy", "guest_kernel", "iodepth", "seed"]
    for metric in ("iops", "bandwidth_mib_s", "latency_us.mean", "latency_us.p50", "latency_us.p99",
                   "latency_us.max", "kicks", "requests.MAP", "requests.UNMAP", "host_map_calls",
                   "host_unmap_calls", "iotlb_flushes", "stale_window_us.mean", "stale_window_us.max", "ios"):
        assert metric in header
    assert not any(c.startswith(("machine.", "job.")) for c in header)
    assert [r[:4] for r in body] == [[p.policy, p.guest_kernel, str(p.iodepth), str(p.seed)]
                                    for p in points(tiny_matrix())]
    assert {r[header.index("ios")] for r in body} == {"4"}
    assert len((local_sweep / JOURNAL_FILE).read_text().splitlines()) == 12


def test_sweep_draws_the_chart_as_a_png(local_sweep: Path) -> None:
    """With matplotlib (the plot extra) installed, the sweep writes chart.png."""
    pytest.importorskip("matplotlib")
    assert (local_sweep / CHART_FILE).read_bytes()[:8] == PNG_SIGNATURE


def test_sweep_resumes_without_rerunning_finished_points(tmp_path: Path, local_sweep: Path) -> None:
    """A sweep stopped by a failing point keeps the 5 finished points; the rerun runs only the other 7."""
    first = CountingRunner(fail_after=5)
    with pytest.raises(SweepFailed) as err:
        run_sweep(tiny_matrix(), tmp_path, runner=first, workers=1)
    assert str(err.value) == ("point lazy-6.12-qd2-s2 failed: RuntimeError: host went away "
                              "(5 of 12 points done; rerun to resume)")
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) == 5
    assert len((tmp_path / CSV_FILE).read_text().splitlines()) == 1 + 5

    second = CountingRunner()
    result = run_sweep(tiny_matrix(), tmp_path, runner=second, workers=1)
    assert second.calls == [(p.policy, p.guest_kernel, p.iodepth, p.seed) for p in points(tiny_matrix())[5:]]
    assert (result.total, result.ran, result.skipped) == (12, 7, 5)
    assert (tmp_path / CSV_FILE).read_bytes() == (local_sweep / CSV_FILE).read_bytes()

    third = CountingRunner()
    assert run_sweep(tiny_matrix(), tmp_path, runner=third, workers=1).ran == 0
    assert third.calls == []


def test_sweep_names_the_point_that_failed_in_a_worker_process(tmp_path: Path) -> None:
    """A point raising in a pool process stops the sweep with one line naming the point and the error."""
    matrix = tiny_matrix(policy=["strict"], guest_kernel=["6.7"], seed=[4])
    with pytest.raises(SweepFailed) as err:
        run_sweep(matrix, tmp_path, runner=CountingRunner(fail_after=0), workers=2, timeout=30)
    assert str(err.value) == ("point strict-6.7-qd2-s4 failed: RuntimeError: host went away "
                              "(0 of 1 points done; rerun to resume)")
    assert (tmp_path / CSV_FILE).read_text() == "policy,guest_kernel,iodepth,seed\n"


def test_sweep_drops_a_torn_journal_line_and_reruns_that_point(tmp_path: Path) -> None:
    """A journal line cut short by a crash is discarded and its point run again."""
    matrix = tiny_matrix(policy=["strict"], guest_kernel=["6.12"], seed=[0, 1])
    run_sweep(matrix, tmp_path, workers=1)
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + lines[1][:40])
    runner = CountingRunner()
    run_sweep(matrix, tmp_path, runner=runner, workers=1)
    assert runner.calls == [("strict", "6.12", 2, 1)]
    assert [json.loads(line)["key"] for line in journal.read_text().splitlines()] == [
        "strict-6.12-qd2-s0", "strict-6.12-qd2-s1"]


def test_sweep_on_a_dask_cluster_writes_the_same_csv(tmp_path: Path, local_sweep: Path) -> None:
    """The 12-point sweep on a loopback Dask LocalCluster gives a CSV byte-identical to the local pool's."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = run_sweep(tiny_matrix(), tmp_path, scheduler=cluster.scheduler_address, timeout=60)
    assert (result.ran, result.skipped) == (12, 0)
    assert (tmp_path / CSV_FILE).read_bytes() == (local_sweep / CSV_FILE).read_bytes()


def test_sweep_refuses_an_out_dir_holding_another_matrix(tmp_path: Path) -> None:
    """A rerun of a different matrix into the same directory is refused, naming what differs."""
    run_sweep(tiny_matrix(policy=["lazy"], guest_kernel=["6.7"], seed=[0]), tmp_path, workers=1)
    with pytest.raises(SweepError) as err:
        run_sweep(tiny_matrix(policy=["lazy"], guest_kernel=["6.7"], seed=[0], iodepth=[4]), tmp_path, workers=1)
    assert str(err.value) == (f"{tmp_path} holds a sweep of a different matrix (axes.iodepth differs); "
                              "use another --out directory")


def test_load_matrix_reads_axes_and_fixed_tables(tmp_path: Path) -> None:
    """A TOML matrix gives the axes (seeds = N is 0..N-1) and the fixed machine, job and cost tables."""
    path = tmp_path / "m.toml"
    path.write_text('[axes]\npolicy = ["strict"]\nguest_kernel = ["6.12", "6.7"]\niodepth = [1, 32]\nseeds = 2\n'
                    '[machine]\nsmp = 2\nnvme = "emulated"\n[job]\nrw = "randwrite"\nios = 8\n'
                    '[cost]\nvfio_map_ioctl_ps = 7000000\n')
    m = load_matrix(path)
    assert (m.policy, m.guest_kernel, m.iodepth, m.seed) == (("strict",), ("6.12", "6.7"), (1, 32), (0, 1))
    assert (m.machine, m.job, m.cost) == ({"smp": 2, "nvme": "emulated"}, {"rw": "randwrite", "ios": 8},
                                          {"vfio_map_ioctl_ps": 7000000})
    assert load_matrix(path, iodepth=[8], policy=None).iodepth == (8,)


_AXES_TOML = '[axes]\npolicy = ["lazy"]\nguest_kernel = ["6.7"]\niodepth = [1]\nseeds = 1\n'


@pytest.mark.parametrize(("text", "message"), [
    ('[axes]\npolicy = "lazy"\n', "[axes] policy must be a list"),
    (_AXES_TOML + "[machine]\nsmp = 0\n", "--smp: invalid value 0 (an integer from 1 to 255)"),
    (_AXES_TOML + "[machine]\niommu_policy = 'strict'\n", "[machine]: iommu_policy is a sweep axis; set it in [axes]"),
    (_AXES_TOML + "[machine]\nwhat = 1\n", "[machine]: unknown option 'what'"),
    (_AXES_TOML + "[cost]\nfoo = 1\n", "[cost]: unknown cost parameter 'foo'"),
    (_AXES_TOML + "[job]\nrw = 'trim'\n",
     "--rw: invalid value 'trim' (choose from read, write, randread, randwrite, randrw)"),
])
def test_load_matrix_rejects_a_bad_file_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    """A bad matrix file is refused with one line naming the table or option."""
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(SweepError) as err:
        load_matrix(path)
    assert str(err.value).removeprefix(f"--matrix: {path}: ") == message


def test_cli_sweep_runs_and_prints_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command runs a 2-point sweep, reports progress on stderr and prints the files it wrote."""
    out = tmp_path / "out"
    assert main(["sweep", "--out", str(out), "--policy", "strict", "--guest-kernel", "6.12", "--iodepth", "1",
                 "--seed-list", "3,5", "--ios", "4", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(out / CSV_FILE)
    assert captured.err.splitlines()[:3] == ["sweep: 2 points, 0 already done", "sweep: [1/2] strict-6.12-qd1-s3",
                                         "sweep: [2/2] strict-6.12-qd1-s5"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--iodepth", "0"], "argument --iodepth: invalid value '0' (a positive integer)"),
    (["--policy", "lazy,eager"], "--policy: invalid value 'eager' (choose from lazy, strict)"),
    (["--guest-kernel", "5.15"], "--guest-kernel: invalid value '5.15' (choose from 6.7, 6.12)"),
    (["--seed-list", "1,1"], "--seed-list: duplicate value in 1, 1"),
    (["--bs", "3x"], "--bs: invalid size '3x' (e.g. 4096, 4k, 64k, 1M)"),
    (["--seeds", "2", "--seed-list", "1"], "argument --seed-list: not allowed with argument --seeds"),
    (["--matrix", "/nonexistent/m.toml"], "--matrix: cannot read /nonexistent/m.toml: No such file or directory"),
])
def test_cli_sweep_bad_flag_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  flags: list[str], message: str) -> None:
    """A bad value gets one line naming the flag and exit status 2, and runs nothing."""
    assert cli_status(["sweep", "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err == f"viommu-sim sweep: error: {message}\n"
    assert not (tmp_path / "out").exists()


def cli_status(argv: list[str]) -> int:
    """The exit status of ``viommu-sim ARGV`` (argparse's errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
