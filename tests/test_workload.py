"""fio-like workloads through the whole stack (viommu_sim._workload) and ``viommu-sim run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models._config import ConfigError, MachineConfig
from models.guest._flush_queue import IOVA_SINGLE_FQ_SIZE, dma_domain_policy
from sim import Simulator
from models.guest._mm import PageAllocator
from viommu_sim._workload import LatencyHistogram, run_scenario, user_buffer_pages
from viommu_sim.cli import main

RESULT_KEYS = {"iops", "bandwidth_mib_s", "latency_us", "kicks", "requests", "host_map_calls", "host_unmap_calls",
               "iotlb_flushes", "stale_window_us", "invalidation_window_us", "utilisation", "ios", "errors",
               "sim_time_s", "machine", "job"}
#: every buffer page on its own (contig_pages=1): a 64 KiB I/O is 16 scatterlist segments
RUN_64K = {"ios": 50, "bs": "64k", "rw": "randwrite", "contig_pages": 1}


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    """``viommu-sim run ARGV`` in this process: (exit status, stdout, stderr); argparse's errors exit."""
    try:
        rc: int | str | None = main(["run", *argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_json_has_the_issue_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """`viommu-sim run --json` prints one JSON object with every key issue 8 lists."""
    rc, out, _ = _run_cli(capsys, "--ios", "200", "--json")
    assert rc == 0
    result = json.loads(out)
    assert set(result) == RESULT_KEYS
    assert set(result["latency_us"]) == {"mean", "p50", "p99", "max"}
    assert set(result["stale_window_us"]) == {"mean", "p50", "p99", "max"}
    assert set(result["invalidation_window_us"]) == {"mean", "p50", "p99", "max"}
    assert list(result["requests"]) == ["ATTACH", "DETACH", "MAP", "UNMAP", "PROBE"]
    assert result["ios"] == 200 and result["errors"] == 0
    assert result["job"]["bs"] == 4096 and result["job"]["rw"] == "randread"
    # 6.7 (strict fallback), 4 KiB: one synchronous MAP and one UNMAP + sync per I/O
    assert (result["kicks"], result["requests"]["MAP"], result["requests"]["UNMAP"]) == (400, 200, 200)
    assert (result["host_map_calls"], result["host_unmap_calls"], result["iotlb_flushes"]) == (200, 200, 200)
    lat = result["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert result["iops"] == pytest.approx(result["ios"] / result["sim_time_s"], rel=1e-3)


def test_run_scenario_same_seed_gives_the_same_result() -> None:
    """Two runs of one scenario return equal dicts; another machine seed lays the buffers out
    otherwise (other contiguous runs, so another number of MAPs)."""
    machine = {"guest_kernel": "6.12", "smp": 2}
    job = {"ios": 200, "rw": "randrw", "numjobs": 2, "iodepth": 4, "bs": "64k", "contig_pages": 4}
    first = run_scenario(machine, job)
    assert run_scenario(machine, job) == first
    other = run_scenario({**machine, "seed": 1}, job)
    assert other["requests"]["MAP"] != first["requests"]["MAP"]


def test_a_job_has_no_seed_of_its_own() -> None:
    """One seed for everything: the job's streams come from the machine's seed; a job seed is refused."""
    with pytest.raises(ConfigError, match=r"^job\.seed: unknown job option"):
        run_scenario({}, {"ios": 10, "seed": 1})


def test_run_json_is_identical_under_another_hash_seed(capsys: pytest.CaptureFixture[str]) -> None:
    """A subprocess with another PYTHONHASHSEED prints byte-identical JSON."""
    argv = ["--ios", "200", "--rw", "randrw", "--numjobs", "2", "--iodepth", "4", "--guest-kernel", "6.12", "--json"]
    _, here, _ = _run_cli(capsys, *argv)
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    proc = subprocess.run([sys.executable, "-m", "viommu_sim.cli", "run", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}, cwd=Path(__file__).parent.parent, check=True)
    assert proc.stdout == here


def test_lazy_612_kicks_less_per_io_than_strict_67() -> None:
    """6.12 lazy queues UNMAPs behind the next MAP's sync; 6.7 (lazy falls back to strict) kicks twice."""
    job = {"ios": 200, "iodepth": 1}
    strict = run_scenario({"guest_kernel": "6.7"}, job)
    lazy = run_scenario({"guest_kernel": "6.12"}, job)
    assert strict["kicks"] / strict["ios"] == 2.0
    assert lazy["kicks"] / lazy["ios"] <= 1.01
    assert lazy["stale_window_us"]["mean"] > strict["stale_window_us"]["mean"]


def test_map_batching_cuts_kicks_by_the_segment_count() -> None:
    """A 64 KiB I/O of scattered pages maps 16 segments: 16 kicks without batching, 1 with."""
    off = run_scenario({"guest_kernel": "6.12", "map_batching": "off"}, RUN_64K)
    on = run_scenario({"guest_kernel": "6.12", "map_batching": "on"}, RUN_64K)
    assert off["requests"]["MAP"] == on["requests"]["MAP"] == 50 * 16 + 1  # + one PRP-list pool page
    assert (off["kicks"], on["kicks"]) == (801, 51)
    assert 15 <= off["kicks"] / on["kicks"] <= 16


def test_strict_67_64k_maps_each_page_and_syncs_each_unmap() -> None:
    """6.7 strict, 64 KiB: 16 synchronous MAPs + one UNMAP sync per I/O; VFIO unmaps each host mapping."""
    r = run_scenario({"guest_kernel": "6.7", "iommu_policy": "strict"}, RUN_64K)
    assert (r["kicks"], r["requests"]["UNMAP"], r["iotlb_flushes"]) == (851, 50, 50)
    assert (r["host_map_calls"], r["host_unmap_calls"]) == (801, 800)


def test_no_viommu_has_no_kicks_and_no_host_maps() -> None:
    """Without a vIOMMU the NVMe DMAs to guest-physical addresses: nothing to map, nothing to kick."""
    r = run_scenario({"viommu": "none"}, {"ios": 100, "rw": "randrw", "iodepth": 4})
    assert (r["kicks"], r["host_map_calls"], r["host_unmap_calls"], r["iotlb_flushes"]) == (0, 0, 0, 0)
    assert sum(r["requests"].values()) == 0 and r["ios"] == 100


def test_single_flush_queue_waits_for_its_1000_ms_timer() -> None:
    """Over 30 ms, per-CPU queues flush on their 10 ms timer; the single 32768-entry queue never does."""
    job = {"runtime": 0.03}
    percpu = run_scenario({"guest_kernel": "6.12", "flush_queue": "percpu"}, job)
    single = run_scenario({"guest_kernel": "6.12", "flush_queue": "single"}, job)
    assert percpu["iotlb_flushes"] >= 2
    assert single["iotlb_flushes"] == 0
    policy = dma_domain_policy("6.7", "lazy", flush_queue="single")
    assert policy.type == "DMA-FQ" and policy.fq_options is not None
    assert (policy.fq_options.single_queue, policy.fq_options.size) == (True, IOVA_SINGLE_FQ_SIZE)
    assert dma_domain_policy("6.7", "lazy").type == "DMA"  # auto: 6.7 has no deferred flush


def test_runtime_job_stops_issuing_at_the_deadline() -> None:
    """A runtime job issues I/Os until the simulated deadline and reports the time it took."""
    r = run_scenario({"smp": 2}, {"runtime": 0.002, "bs": "8k", "rw": "write"})
    assert 0.002 <= r["sim_time_s"] < 0.0021 and r["ios"] > 10
    assert r["bandwidth_mib_s"] == pytest.approx(r["ios"] * 8192 / r["sim_time_s"] / 2**20, rel=1e-3)


def test_latency_histogram_percentiles_within_bucket_precision() -> None:
    """Exact below 512 ns; above, a percentile lies within 1/256 of the sample; count and max exact."""
    h = LatencyHistogram()
    for ns in [100] * 50 + [31_625] * 49 + [1_000_000]:
        h.add(ns)
    assert (h.count, h.max, h.percentile(50)) == (100, 1_000_000, 100)
    assert abs(h.percentile(99) - 31_625) <= 31_625 / 256
    assert h.percentile(100) == 1_000_000
    assert len(h.buckets) == 3


def test_config_rejects_bad_policy_switches() -> None:
    """flush_queue and map_batching take only their values; the error names the flag."""
    with pytest.raises(ConfigError, match="^--flush-queue: invalid value 'lazy'"):
        MachineConfig(flush_queue="lazy")
    with pytest.raises(ConfigError, match="^--map-batching: invalid value 'yes'"):
        MachineConfig(map_batching="yes")


def test_scenario_file_with_flags_on_top(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[machine], [job] and [cost] come from the file; a command-line flag overrides its key."""
    f = tmp_path / "s.toml"
    f.write_text('[machine]\nsmp = 2\nguest_kernel = "6.12"\n[job]\nbs = "64k"\nios = 500\nrw = "randwrite"\n'
                 '[cost]\nvfio_map_ioctl_ps = 1000000\n')
    rc, out, _ = _run_cli(capsys, "--scenario", str(f), "--smp", "3", "--ios", "20", "--json")
    r = json.loads(out)
    assert rc == 0 and r["ios"] == 20 and r["job"]["bs"] == 65536
    assert (r["machine"]["smp"], r["machine"]["guest_kernel"]) == (3, "6.12")
    assert r["machine"]["cost"] == {"vfio_map_ioctl_ps": 1000000}


@pytest.mark.parametrize(("body", "argv", "message"), [
    ("[machine]\nsmp = 2\nfoo = 1\n", [], "unknown key machine.foo"),
    ("[job]\nbs = 4096\ndepth = 1\n", [], "unknown key job.depth"),
    ("[cost]\nbogus_ps = 1\n", [], "unknown key cost.bogus_ps"),
    ("[workload]\nios = 1\n", [], "unknown key 'workload'"),
    ("[job]\nbs = 100\n", [], "--bs: 100 bytes is not a multiple of 512"),
    ("", ["--rw", "sideways"], "--rw: invalid value 'sideways'"),
    ("", ["--bs", "3x"], "argument --bs: invalid size '3x'"),
    ("", ["--flush-queue", "lazy"], "--flush-queue: invalid value 'lazy'"),
    ("", ["--nvme", "none"], "--nvme: the job needs an NVMe"),
    ("", ["--ios", "5", "--runtime", "1"], "argument --runtime: not allowed with argument --ios"),
])
def test_run_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                             argv: list[str], message: str) -> None:
    """A bad scenario key or flag value: exit status 2 and one line on stderr naming it."""
    f = tmp_path / "bad.toml"
    f.write_text(body)
    rc, out, err = _run_cli(capsys, "--scenario", str(f), *argv)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err


def test_io_above_max_hw_bytes_is_split_into_requests() -> None:
    """A 256 KiB I/O behind the vIOMMU (128 KiB per request) goes out as two requests of 32 pages each."""
    r = run_scenario({"guest_kernel": "6.12", "nvme": "emulated"}, {"ios": 20, "bs": "256k", "rw": "read", "contig_pages": 1})
    assert (r["ios"], r["errors"], r["requests"]["UNMAP"]) == (20, 0, 40)
    assert 20 * 64 < r["requests"]["MAP"] <= 20 * 64 + 2  # one MAP per page, + the PRP-list pool's page(s)
    assert r["host_map_calls"] == 0  # QEMU's own NVMe: no VFIO container


def _buffer_runs(contig: int, npages: int = 4096) -> list[int]:
    """The lengths of the physically contiguous runs of one job's buffer (``npages`` pages)."""
    mm = PageAllocator(1 << 32, 1 << 36)
    pages = user_buffer_pages(mm, Simulator(seed=3).rng("buffer"), npages, contig)
    assert len(set(pages)) == npages
    runs = [1]
    for a, b in zip(pages, pages[1:]):
        if b == a + 4096:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def test_buffer_runs_have_the_requested_mean_length() -> None:
    """contig_pages=1 scatters every page; contig_pages=16 gives runs of 16 pages on average."""
    assert _buffer_runs(1) == [1] * 4096
    runs = _buffer_runs(16)
    assert 14 <= sum(runs) / len(runs) <= 18


def test_contiguous_buffers_need_fewer_maps_per_io() -> None:
    """iommu_map_sg sends one MAP per contiguous run: 16 per 64 KiB I/O when scattered, about 2 at 16."""
    job = {**RUN_64K, "ios": 256, "iodepth": 16, "numjobs": 4}  # 64 slot buffers
    scattered = run_scenario({"guest_kernel": "6.12", "map_batching": "off"}, job)
    runs16 = run_scenario({"guest_kernel": "6.12", "map_batching": "off"}, {**job, "contig_pages": 16})
    assert 256 * 16 < scattered["requests"]["MAP"] <= 256 * 16 + 8  # + the PRP-list pool pages
    assert 256 * 1.6 <= runs16["requests"]["MAP"] - 1 <= 256 * 2.4  # 1 + 15/16 expected


def test_ramp_time_excludes_the_start_from_the_figures() -> None:
    """With ramp_time the counters and I/Os cover only the window after it; bandwidth is over exactly runtime."""
    job = {"rw": "randread", "iodepth": 4, "numjobs": 2, "runtime": 0.002}
    plain = run_scenario({"guest_kernel": "6.12"}, job)
    ramped = run_scenario({"guest_kernel": "6.12"}, {**job, "ramp_time": 0.001})
    assert plain["sim_time_s"] == ramped["sim_time_s"] == 0.002
    assert ramped["bandwidth_mib_s"] == pytest.approx(ramped["ios"] * 4096 / 0.002 / 2**20, abs=1e-3)
    # in the window, each I/O is one MAP and (lazy) one UNMAP, give or take those in flight at its edges
    assert abs(ramped["requests"]["MAP"] - ramped["ios"]) <= 8
    assert ramped["ios"] > 0 and ramped["job"]["ramp_time"] == 0.001


def test_bad_ramp_time_and_contig_pages_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in ((["--ramp-time", "-1"], "--ramp-time"), (["--contig-pages", "0"], "--contig-pages"),
                          (["--contig-pages", "1024"], "--contig-pages")):
        rc, out, err = _run_cli(capsys, *argv)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1 and message in err, (argv, err)


def test_the_invalidation_window_is_the_policys_wait_and_the_stale_window_the_devices() -> None:
    """Strict: both end with the unmap's own sync.  Lazy (6.12, per-CPU queues): the UNMAP rides the
    next request's kick (stale window of one I/O), but its IOVA waits for the 10 ms flush timer."""
    job = {"ios": 1500, "rw": "randread"}
    strict = run_scenario({"guest_kernel": "6.12", "iommu_policy": "strict"}, job)
    lazy = run_scenario({"guest_kernel": "6.12", "iommu_policy": "lazy"}, job)
    assert strict["invalidation_window_us"]["max"] < 20 and strict["stale_window_us"]["max"] < 20
    assert lazy["stale_window_us"]["max"] < 20
    assert 10_000 <= lazy["invalidation_window_us"]["max"] < 10_100  # the 10 ms timer, plus one flush
    # the distribution: an IOVA queued right after a flush waits the whole 10 ms, one queued just before
    # it almost nothing, so the windows spread over the timer's period
    iw = lazy["invalidation_window_us"]
    assert 0 < iw["p50"] < iw["p99"] <= iw["max"] and 3_000 < iw["p50"] < 7_000


def test_the_result_names_the_saturated_resource() -> None:
    """64 KiB writes without a vIOMMU fill the NVMe's link; 6.12 lazy 4 KiB reads at QD16 x 4 jobs
    spin on the virtio-iommu driver's request_lock (every vCPU busy spinning); QD1 saturates nothing."""
    link = run_scenario({"viommu": "none"}, {"ios": 2000, "iodepth": 16, "numjobs": 4, "bs": "64k",
                                             "rw": "randwrite"})["utilisation"]
    assert link["bottleneck"] == "nvme_link" and link["nvme_link"] >= 0.99 and link["vcpu_max"] < 0.1
    lock = run_scenario({"guest_kernel": "6.12"}, {"ios": 3000, "iodepth": 16, "numjobs": 4})["utilisation"]
    assert lock["bottleneck"] == "request_lock" and lock["request_lock"] >= 0.9 and lock["vmm"] < 0.9
    idle = run_scenario({}, {"ios": 300})["utilisation"]
    assert idle["bottleneck"] == "none"
    assert set(idle) == {"vcpu_max", "vcpu_mean", "request_lock", "vmm", "nvme_link", "bottleneck"}
