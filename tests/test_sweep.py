"""viommu-sim sweep: the matrix, the CSVs and chart, resume, Dask, signals, and the CLI's answers to bad input."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from viommu_sim._cmd_sweep import DEFAULT_AXES
from viommu_sim._stats import mean_ci
from viommu_sim._sweep import (
    CHART_FILE,
    CSV_FILE,
    JOURNAL_FILE,
    MATRIX_FILE,
    SUMMARY_FILE,
    Matrix,
    SweepError,
    SweepFailed,
    load_matrix,
    points,
    run_sweep,
)
from viommu_sim._sweep_report import effective_policy, job_title, point_policies
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
        {"iommu_policy": "strict", "guest_kernel": "6.12", "seed": 1, "detail": "fast"},
        {"ios": 4, "rw": "randread", "bs": 4096, "iodepth": 2},
        None,
    )


FALLBACK_6_7 = "lazy -> strict (Linux 6.7's virtio-iommu has no deferred flush, 6.8+ has)"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def test_sweep_writes_a_csv_row_per_point(local_sweep: Path) -> None:
    """12 runs give 12 CSV rows in point order: the axes, the effective policy, the flattened metrics,
    then every machine and job option the run used."""
    header, body = read_csv(local_sweep / CSV_FILE)
    assert header[:6] == ["policy", "guest_kernel", "iodepth", "seed", "effective_policy", "fallback"]
    for metric in ("iops", "bandwidth_mib_s", "latency_us.mean", "latency_us.p50", "latency_us.p99",
                   "latency_us.max", "kicks", "requests.MAP", "requests.UNMAP", "host_map_calls",
                   "host_unmap_calls", "iotlb_flushes", "stale_window_us.mean", "stale_window_us.max", "ios"):
        assert metric in header
    for option in ("machine.smp", "machine.memory", "machine.nvme", "machine.flavor", "machine.flush_queue",
                   "machine.map_batching", "job.rw", "job.bs", "job.numjobs", "job.ios", "job.size",
                   "job.contig_pages"):
        assert option in header
    assert header.index("ios") < header.index("machine.smp") < header.index("job.rw")
    assert not {"machine.iommu_policy", "machine.guest_kernel", "machine.seed", "job.iodepth"} & set(header)
    assert [[r["policy"], r["guest_kernel"], r["iodepth"], r["seed"]] for r in body] == [
        [p.policy, p.guest_kernel, str(p.iodepth), str(p.seed)] for p in points(tiny_matrix())]
    assert {(r["ios"], r["job.rw"], r["job.bs"], r["machine.smp"]) for r in body} == {("4", "randread", "4096", "4")}
    assert len((local_sweep / JOURNAL_FILE).read_text().splitlines()) == 12


def test_sweep_marks_lazy_on_6_7_as_falling_back_to_strict(local_sweep: Path) -> None:
    """Lazy on guest 6.7 (no deferred flush) runs strict: its rows say so; lazy on 6.12 stays lazy."""
    for name in (CSV_FILE, SUMMARY_FILE):
        _, body = read_csv(local_sweep / name)
        marks = {(r["policy"], r["guest_kernel"], r["effective_policy"], r["fallback"]) for r in body}
        assert marks == {("lazy", "6.7", "strict", FALLBACK_6_7), ("lazy", "6.12", "lazy", ""),
                         ("strict", "6.7", "strict", ""), ("strict", "6.12", "strict", "")}


def test_effective_policy_follows_the_guest_kernel_version() -> None:
    """Any 6.8+ kernel defers flushes (lazy stays lazy); 6.7 and older fall back; an explicit flush
    queue gives any kernel deferred flushes."""
    assert effective_policy("lazy", "6.9") == ("lazy", "")
    assert effective_policy("lazy", "7.0") == ("lazy", "")
    assert effective_policy("lazy", "5.15") == ("strict", "lazy -> strict (Linux 5.15's virtio-iommu has no "
                                                "deferred flush, 6.8+ has)")
    assert effective_policy("lazy", "6.7", flush_queue="percpu") == ("lazy", "")
    assert effective_policy("strict", "6.7") == ("strict", "")


def test_sweep_summary_has_mean_stddev_and_student_t_interval_per_point(local_sweep: Path) -> None:
    """summary.csv: one row per policy x kernel x iodepth, each figure's mean, sample standard deviation
    and 95 % Student-t interval over the point's three seeds, computed from results.csv's values."""
    header, summary = read_csv(local_sweep / SUMMARY_FILE)
    figures = ("bandwidth_mib_s", "iops", "latency_us.mean", "latency_us.p99")
    assert header == ["policy", "guest_kernel", "iodepth", "effective_policy", "fallback", "runs",
                      *(f"{f}.{s}" for f in figures for s in ("mean", "stddev", "ci95_lo", "ci95_hi"))]
    assert [(r["policy"], r["guest_kernel"], r["iodepth"], r["runs"]) for r in summary] == [
        ("lazy", "6.7", "2", "3"), ("lazy", "6.12", "2", "3"), ("strict", "6.7", "2", "3"), ("strict", "6.12", "2", "3")]
    _, runs = read_csv(local_sweep / CSV_FILE)
    for row in summary:
        for f in figures:
            values = [float(r[f]) for r in runs if (r["policy"], r["guest_kernel"]) == (row["policy"], row["guest_kernel"])]
            want = [round(v, 4) for v in mean_ci(values)]
            got = [float(row[f"{f}.{s}"]) for s in ("mean", "stddev", "ci95_lo", "ci95_hi")]
            assert got == want
            assert got[2] <= got[0] <= got[3]


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
    assert (tmp_path / CSV_FILE).read_text() == "policy,guest_kernel,iodepth,seed,effective_policy,fallback\n"
    assert (tmp_path / SUMMARY_FILE).read_text().splitlines()[1:] == []


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
    assert (tmp_path / SUMMARY_FILE).read_bytes() == (local_sweep / SUMMARY_FILE).read_bytes()


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
     "--rw: invalid value 'trim' (choose from read, write, randread, randwrite, randrw, rw)"),
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
    assert captured.out.splitlines()[:2] == [str(out / CSV_FILE), str(out / SUMMARY_FILE)]
    assert captured.err.splitlines()[:3] == ["sweep: 2 points, 0 already done", "sweep: [1/2] strict-6.12-qd1-s3",
                                         "sweep: [2/2] strict-6.12-qd1-s5"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--iodepth", "0"], "argument --iodepth: invalid value '0' (a positive integer)"),
    (["--policy", "lazy,eager"], "--policy: invalid value 'eager' (choose from lazy, strict)"),
    (["--guest-kernel", "6.12,6.x"], "--guest-kernel: invalid value '6.x' (a Linux version MAJOR.MINOR, e.g. 6.7, "
     "6.12 or 7.0)"),
    (["--guest-kernel", "5.4"], "--guest-kernel: Linux 5.4 is older than 5.14, the first kernel whose virtio-iommu "
     "driver an x86 (q35) guest can use (ACPI VIOT)"),
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


def test_default_sweep_compares_lazy_and_strict_on_6_12_over_three_seeds() -> None:
    """With no axis given the sweep compares policies that differ (6.12: lazy has its flush queue),
    with three seeds per point so that each has an interval."""
    assert DEFAULT_AXES == {"policy": ["lazy", "strict"], "guest_kernel": ["6.12"], "iodepth": [1, 4, 16, 64],
                            "seed": [0, 1, 2]}
    matrix = Matrix(**DEFAULT_AXES)
    assert point_policies(matrix) == {("lazy", "6.12"): ("lazy", ""), ("strict", "6.12"): ("strict", "")}


def test_matrix_compares_parsed_values_not_spellings(tmp_path: Path) -> None:
    """bs 64K and 64k, memory 64G and 65536M are one matrix: values are normalised when it is built,
    so a rerun spelling them differently resumes the sweep instead of refusing the directory."""
    one = tiny_matrix(policy=["strict"], guest_kernel=["6.12"], seed=[0])
    spelt = {"policy": ["strict"], "guest_kernel": ["6.12"], "iodepth": [2], "seed": [0]}
    a = Matrix(**spelt, machine={"memory": "64G"}, job={"ios": 4, "bs": "64K"})
    b = Matrix(**spelt, machine={"memory": "65536M"}, job={"ios": 4, "bs": "64k"})
    assert a == b and a.to_json() == b.to_json()
    assert (a.job, a.machine) == ({"ios": 4, "bs": 65536}, {"memory": 68719476736})
    run_sweep(a, tmp_path, workers=1)
    assert run_sweep(b, tmp_path, workers=1).ran == 0
    assert one.job["bs"] == 4096


def test_sweep_resumes_a_directory_whose_matrix_json_spells_values_as_given(tmp_path: Path) -> None:
    """An output directory written before values were normalised (bs = "4k" in matrix.json) is the
    same matrix: the rerun resumes it."""
    matrix = tiny_matrix(policy=["strict"], guest_kernel=["6.12"], seed=[0])
    run_sweep(matrix, tmp_path, workers=1)
    stored = json.loads((tmp_path / MATRIX_FILE).read_text())
    stored["job"]["bs"] = "4k"
    (tmp_path / MATRIX_FILE).write_text(json.dumps(stored))
    assert run_sweep(matrix, tmp_path, workers=1).ran == 0


def test_chart_title_names_the_job_and_machine(local_sweep: Path) -> None:
    """The chart's title says what ran: rw, bs, numjobs, the length, and the machine."""
    pts = points(tiny_matrix())
    done = {json.loads(line)["key"]: json.loads(line)["summary"]
            for line in (local_sweep / JOURNAL_FILE).read_text().splitlines()}
    assert job_title(done, pts) == "randread bs=4k numjobs=1 ios=4, smp=4 nvme=vfio"
    assert job_title({}, pts) == ""


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sweep_stopped_by_a_signal_leaves_no_process_and_a_journal_that_resumes(
        tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM or SIGHUP to a sweep on a local pool stops it as Ctrl-C does: exit 130 with one line,
    no worker process left, a journal of whole lines of finished points, and the rerun runs the rest."""
    out = tmp_path / "out"
    argv = ["sweep", "--out", str(out), "--policy", "strict", "--guest-kernel", "6.12", "--iodepth", "1",
            "--seeds", "6", "--ios", "3000", "--workers", "2"]
    with subprocess.Popen([sys.executable, "-c", "import sys; from viommu_sim.cli import main; sys.exit(main())",
                           *argv], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None
        try:
            lines = []
            deadline = time.monotonic() + 60
            while not any(line.startswith("sweep: [1/6]") for line in lines):
                assert time.monotonic() < deadline and proc.poll() is None, lines
                lines.append(proc.stderr.readline())
            workers = _children(proc.pid)
            assert len(workers) >= 2
            os.kill(proc.pid, signum)
            status = proc.wait(timeout=30)
            rest = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert status == 130
    last = rest.splitlines()[-1]
    assert last.startswith(f"viommu-sim sweep: interrupted by {signum.name}: ") and last.endswith(
        " of 6 points done; rerun to resume"), rest
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]
    journal = (out / JOURNAL_FILE).read_bytes()
    assert journal.endswith(b"\n")
    keys = [json.loads(line)["key"] for line in journal.splitlines()]
    assert 1 <= len(keys) < 6 and len(set(keys)) == len(keys)
    assert int(last.split(": ")[2].split()[0]) == len(keys)
    assert len((out / CSV_FILE).read_text().splitlines()) == 1 + len(keys)

    matrix = Matrix(policy=["strict"], guest_kernel=["6.12"], iodepth=[1], seed=range(6), job={"ios": 3000})
    runner = FewIos()
    result = run_sweep(matrix, out, runner=runner, workers=1)
    assert (result.ran, result.skipped) == (6 - len(keys), len(keys))
    assert sorted(runner.seeds) == sorted(set(range(6)) - {int(k.rsplit("-s", 1)[1]) for k in keys})


class FewIos:
    """run_scenario with 4 I/Os whatever the job says (a quick resume), recording the seeds it ran."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, machine: dict[str, Any], job: dict[str, Any], cost: dict[str, Any] | None) -> dict[str, Any]:
        self.seeds.append(machine["seed"])
        return run_scenario(machine, {**job, "ios": 4}, cost)
