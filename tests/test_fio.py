"""fio's habits on ``viommu-sim run``: its option syntax (``_job``), job files (``_fio_jobfile``) and
output formats (``_fio_output``), checked as fio's own tools read them."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from models import ConfigError
from viommu_sim._fio_jobfile import parse_jobfile
from viommu_sim._fio_output import PERCENTILES
from viommu_sim._job import job_options, parse_seconds, parse_size
from viommu_sim._options import UsageError
from viommu_sim.cli import main

ACCEPTANCE = ["--rw", "randwrite", "--bs", "64K", "--runtime", "20ms", "--ramp_time", "0", "--size", "1G",
              "--numjobs", "2", "--iodepth", "4", "--output-format=json"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["run", *argv])
    except SystemExit as exc:  # argparse's own one-line errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("text", "value"), [
    ("4096", 4096), ("64k", 65536), ("64K", 65536), ("64kb", 65536), ("1M", 1 << 20), ("1g", 1 << 30),
    ("4KiB", 4000), ("10%", Fraction(1, 10)),
])
def test_sizes_follow_fios_kb_base_1024(text: str, value: int | Fraction) -> None:
    assert parse_size(text, "--size", percent_ok=True) == value


@pytest.mark.parametrize(("text", "seconds"), [
    ("2s", 2.0), ("1", 1.0), ("0.002", 0.002), ("20ms", 0.02), ("500us", 0.0005), ("1m", 60.0), ("0", 0.0),
])
def test_times_follow_fios_suffixes_and_seconds_by_default(text: str, seconds: float) -> None:
    assert parse_seconds(text, "--runtime") == seconds


def test_64K_and_64k_are_the_same_job() -> None:
    assert job_options({"bs": "64K"}) == job_options({"bs": "64k"}) == job_options({"bs": 65536})


@pytest.mark.parametrize("argv", [["--ramp_time", "1s"], ["--ramp-time=1s"], ["--ramp_time=1s"]])
def test_underscores_dashes_and_equals_are_one_option(argv: list[str]) -> None:
    from viommu_sim._cmd_run import scenario_from_args
    from viommu_sim.cli import build_parser
    assert scenario_from_args(build_parser().parse_args(["run", *argv]))["job"]["ramp_time"] == 1.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--runtime", "2x"], "argument --runtime: invalid time '2x' (seconds, or with a suffix us, ms, s, m, h, d: "
                          "20ms, 2s)"),
    (["--bs", "64q"], "argument --bs: invalid size '64q' (e.g. 4096, 4k, 64k, 1M)"),
    (["--size", "10%%"], "argument --size: invalid size '10%%' (e.g. 4096, 4k, 64K, 1M, 10%)"),
    (["--time_based"], "--time-based: needs --runtime (fio's time_based runs for the runtime)"),
])
def test_a_bad_suffix_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                            message: str) -> None:
    code, out, err = _cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == f"viommu-sim run: error: {message}\n"


def test_acceptance_command_prints_fio_schema_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, *ACCEPTANCE)
    assert (code, err) == (0, "")
    d = json.loads(out)
    assert d["fio version"].startswith("fio-3.") and d["timestamp"] == 0 and isinstance(d["time"], str)
    assert d["global options"] == {}
    (job,) = d["jobs"]
    assert (job["jobname"], job["groupid"], job["error"]) == ("job", 0, 0)
    assert job["job options"] == {"rw": "randwrite", "bs": "64K", "runtime": "20ms", "ramp_time": "0",
                                  "size": "1G", "numjobs": "2", "iodepth": "4"}
    w, r = job["write"], job["read"]
    assert r["total_ios"] == 0 and r["io_bytes"] == 0 and r["clat_ns"]["N"] == 0
    assert w["runtime"] == 20 and w["io_bytes"] == w["total_ios"] * 65536 and w["io_kbytes"] == w["io_bytes"] >> 10
    assert w["bw"] == w["bw_bytes"] // 1024 and w["bw_bytes"] == w["io_bytes"] * 50  # 20 ms: x 50 per second
    assert w["iops"] == w["total_ios"] * 50
    for key in ("io_bytes", "io_kbytes", "bw_bytes", "bw", "runtime", "total_ios", "short_ios", "drop_ios"):
        assert isinstance(w[key], int), key
    assert isinstance(w["iops"], float)
    clat = w["clat_ns"]
    assert set(clat) == {"min", "max", "mean", "stddev", "N", "percentile"} and clat["N"] == w["total_ios"]
    assert list(clat["percentile"]) == [f"{p:f}" for p in PERCENTILES] and "99.000000" in clat["percentile"]
    assert clat["min"] <= clat["percentile"]["50.000000"] <= clat["max"]
    assert all(isinstance(v, int) for v in clat["percentile"].values())
    assert w["lat_ns"]["mean"] == clat["mean"] and w["slat_ns"]["N"] == 0
    assert job["viommu_sim"]["cpus"] == [0, 1] and job["viommu_sim"]["size"] == 1 << 30
    top = d["viommu_sim"]
    assert top["requests"]["UNMAP"] > 0 and top["kicks"] > 0 and top["window_s"] == 0.02
    for key in ("host_map_calls", "host_unmap_calls", "iotlb_flushes", "stale_window_us", "invalidation_window_us",
                "utilisation", "machine"):
        assert key in top


def test_json_plus_adds_clat_bins_that_sum_to_N(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--ios", "200", "--output-format", "json+")
    clat = json.loads(out)["jobs"][0]["read"]["clat_ns"]
    assert code == 0 and sum(clat["bins"].values()) == clat["N"] == 200
    assert all(k.isdigit() for k in clat["bins"])


def test_randrw_70_splits_reads_and_writes_about_70_30(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--rw", "randrw", "--rwmixread", "70", "--ios", "2000", "--iodepth", "4",
                        "--output-format=json")
    job = json.loads(out)["jobs"][0]
    reads, writes = job["read"]["total_ios"], job["write"]["total_ios"]
    assert code == 0 and reads + writes == 2000 and abs(reads / 2000 - 0.70) < 0.03
    assert job["read"]["clat_ns"]["N"] == reads and job["write"]["clat_ns"]["N"] == writes


def test_readwrite_is_mixed_sequential_with_number_ios_per_job(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--readwrite=readwrite", "--rwmixread=70", "--number_ios=1000", "--numjobs=2",
                        "--output-format=json")
    job = json.loads(out)["jobs"][0]
    reads, writes = job["read"]["total_ios"], job["write"]["total_ios"]
    assert code == 0 and reads + writes == 2000 and abs(reads / 2000 - 0.70) < 0.03  # number_ios: per job
    assert job["viommu_sim"]["rw"] == "rw"


TWO = """; two sections, both run at once
[global]
bs=4k
runtime=2ms
# the readers
[readers]
rw=randread
iodepth=4

[writers]
readwrite=write
bs=64k
numjobs=2
"""


def test_a_two_section_job_file_runs_and_reports_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "two.fio"
    f.write_text(TWO)
    code, out, err = _cli(capsys, str(f), "--output-format=json")
    assert (code, err) == (0, "")
    d = json.loads(out)
    assert d["global options"] == {"bs": "4k", "runtime": "2ms"}
    readers, writers = d["jobs"]
    assert (readers["jobname"], writers["jobname"]) == ("readers", "writers")
    assert readers["job options"] == {"rw": "randread", "iodepth": "4"}
    assert readers["read"]["total_ios"] > 0 and readers["write"]["total_ios"] == 0
    assert writers["write"]["total_ios"] > 0 and writers["read"]["total_ios"] == 0
    assert readers["read"]["runtime"] == writers["write"]["runtime"] == 2
    assert readers["viommu_sim"]["cpus"] == [0] and writers["viommu_sim"]["cpus"] == [1, 2]
    code, terse, _ = _cli(capsys, str(f), "--output-format", "terse")
    lines = terse.splitlines()
    assert code == 0 and [line.split(";")[:5] for line in lines] == [["3", "fio-3.42", "readers", "0", "0"],
                                                                     ["3", "fio-3.42", "writers", "0", "0"]]
    assert all(len(line.split(";")) == 5 + 2 * 41 + 5 + 7 + 10 + 12 for line in lines)


def test_the_command_line_is_the_default_beneath_the_job_file(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "two.fio"
    f.write_text(TWO)
    code, out, _ = _cli(capsys, str(f), "--iodepth", "2", "--runtime", "1ms", "--output-format=json")
    readers, writers = json.loads(out)["jobs"]
    assert code == 0 and readers["latency_depth"] == 4 and writers["latency_depth"] == 2  # the file's wins
    assert readers["read"]["runtime"] == 2  # the file's [global] runtime over the command line's


@pytest.mark.parametrize(("text", "message"), [
    ("bs=4k\n", "j.fio:1: option 'bs' outside of a [section]"),
    ("[a]\ndepth=1\n", "j.fio:2: unknown option 'depth'"),
    ("[global]\nbs=4k\n", "j.fio: no job section (a [name] section besides [global])"),
    ("[a\n", "j.fio:1: invalid section header '[a' (e.g. [global], [job1])"),
])
def test_a_bad_job_file_is_one_line_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_jobfile(text, "j.fio")
    assert str(err.value).startswith(message)


def test_a_bad_value_in_a_job_file_names_its_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "j.fio"
    f.write_text("[fast]\nbs=64q\n")
    assert _cli(capsys, str(f)) == (2, "", f"viommu-sim run: error: {f}: [fast] --bs: invalid size '64q' "
                                           "(e.g. 4096, 4k, 64k, 1M)\n")


def test_json_alias_is_not_fios_schema_and_excludes_output_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(capsys, "--json", "--output-format=json")[0] == 2
    with pytest.raises(ConfigError):
        job_options({"size": "0%"})
