"""fio-like workloads through the whole stack: the guest's NVMe driver, dma-iommu, virtio-iommu, VFIO.

``run_scenario(machine, job, cost)`` builds ``MachineConfig(**machine, cost=...)``,
boots the guest on a fresh ``Simulator`` (no trace sinks) and runs a job as fio
would with ``ioengine=libaio direct=1``:

* ``numjobs`` jobs, job *j* on CPU ``j % smp``, each keeping ``iodepth`` I/Os in
  flight (one task per slot: a completion is followed at once by the next
  submission, as libaio's ``io_submit`` after ``io_getevents``);
* ``rw``: read, write, randread, randwrite, randrw (``rwmixread`` percent reads);
  sequential offsets advance a per-job cursor over ``size`` bytes and wrap, random
  offsets are ``bs``-aligned (fio's ``blockalign``) draws from ``sim.rng``;
* each job owns one buffer of ``iodepth * bs`` bytes and slot *s* always uses
  bytes ``[s*bs, (s+1)*bs)`` of it, as fio lays out its io_u buffers; the buffer
  is user memory (direct I/O), so its pages are physically contiguous only in
  runs: every 4 KiB page boundary breaks the run with probability
  ``1/contig_pages`` (``contig_pages=1``: every page on its own; a 64 KiB I/O
  then maps as 16 segments, since ``iommu_map_sg`` sends one MAP per physically
  contiguous run).  Runs are naturally aligned blocks of the guest page
  allocator placed in an order shuffled with ``sim.rng``.  An I/O larger than the
  driver's ``max_hw_bytes`` is split into requests issued together, as the block
  layer splits a bio;
* ``ios`` I/Os in all, or ``runtime`` simulated seconds (whichever ends first
  when both are given);
* ``ramp_time`` (fio's option): the job runs this many simulated seconds before
  anything is measured.  Results cover the window after it: the I/Os that
  complete in the window, counters as differences across it.  With ``runtime``
  the window ends at the deadline (slots stop issuing then; I/Os still in flight
  are completed but not counted), so bandwidth is bytes in the window over
  exactly ``runtime``; with ``ios`` it ends at the last completion.

Everything measured comes from counters of the models (no trace sinks): the
virtio-iommu driver's kicks and requests by type, the VFIO container's map and
unmap ioctls, the NVMe domain's invalidation statistics (``iotlb_flushes``: syncs
when strict, ``flush_iotlb_all`` calls when lazy) and the virtio-iommu driver's
stale-window counters (``stale_window_us``: from ``viommu_unmap_pages`` to the sync
that sees the device complete that UNMAP; UNMAPs still queued at the end are not
counted).  All counters are
taken as differences from the moment the job starts, so the boot is excluded.

Memory does not grow with the run length: latencies go into a ``LatencyHistogram``
(log-linear buckets), and the namespace store holds at most ``size`` bytes.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import attrs

from models._config import ConfigError, MachineConfig
from models._cost import CostModel
from models._machine import build_machine
from models.guest._boot import boot
from sim import PS_PER_S, Simulator, Task, sleep

PAGE_SIZE = 4096
SECTOR = 512
#: the bytes the job addresses when ``size`` is not given (fio's ``size=``): bounds the namespace store
DEFAULT_SIZE = 16 << 20
DEFAULT_IOS = 1000
NVME_READ, NVME_WRITE = 0x02, 0x01
RW_MODES = ("read", "write", "randread", "randwrite", "randrw")
JOB_KEYS = ("rw", "bs", "iodepth", "numjobs", "rwmixread", "ios", "runtime", "seed", "size", "contig_pages",
            "ramp_time")
#: mean physically contiguous run of a job's user buffer, in pages: fitted by benchmarks/calibration.py
#: (the published measurement does not report its buffers' layout; see ARCHITECTURE.md, "Calibration")
DEFAULT_CONTIG_PAGES = 16
#: a run lies in one allocator block of at most MAX_ORDER's 1024 pages, with room to spare
MAX_RUN_PAGES = 1023
REQUEST_TYPES = ("ATTACH", "DETACH", "MAP", "UNMAP", "PROBE")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_bytes(value: object, option: str) -> int:
    """fio's size syntax: a byte count with optional k/m/g/t suffix (powers of 1024): 4096, 4k, 64K, 1M."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise ConfigError(option, f"invalid size {value!r} (e.g. 4096, 4k, 64k, 1M)")
        n = int(m.group(1)) << _SHIFT[m.group(2).lower()]
    if n <= 0:
        raise ConfigError(option, f"size must be positive, not {value!r}")
    return n


def _int_option(job: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = job.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("--" + key.replace("_", "-"), f"invalid value {value!r} (an integer from {lo} to {hi})")
    return value


def _seconds_option(job: dict[str, Any], key: str, default: float | None, *, zero_ok: bool) -> Any:
    """A simulated duration in seconds: a number up to 3600, above 0 (or at least 0 with ``zero_ok``)."""
    value = job.get(key, default)
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (0 <= value if zero_ok else 0 < value) or value > 3600:
        rel = "<=" if zero_ok else "<"
        raise ConfigError("--" + key.replace("_", "-"),
                          f"invalid value {value!r} (simulated seconds, 0 {rel} {key} <= 3600)")
    return value


def job_options(job: dict[str, Any]) -> dict[str, Any]:
    """The job's options with defaults filled in and checked (ConfigError names the bad one)."""
    unknown = [k for k in job if k not in JOB_KEYS]
    if unknown:
        raise ConfigError(f"job.{unknown[0]}", f"unknown job option (known: {', '.join(JOB_KEYS)})")
    rw = job.get("rw", "randread")
    if rw not in RW_MODES:
        raise ConfigError("--rw", f"invalid value {rw!r} (choose from {', '.join(RW_MODES)})")
    bs = parse_bytes(job.get("bs", 4096), "--bs")
    if bs % SECTOR:
        raise ConfigError("--bs", f"{bs} bytes is not a multiple of {SECTOR}")
    size = parse_bytes(job.get("size", DEFAULT_SIZE), "--size")
    if size < bs:
        raise ConfigError("--size", f"{size} bytes is smaller than one block of {bs}")
    runtime = _seconds_option(job, "runtime", None, zero_ok=False)
    ios = _int_option(job, "ios", None if runtime is not None else DEFAULT_IOS, 1, 10**9)
    ramp = _seconds_option(job, "ramp_time", 0, zero_ok=True)
    return {
        "rw": rw,
        "bs": bs,
        "iodepth": _int_option(job, "iodepth", 1, 1, 1024),
        "numjobs": _int_option(job, "numjobs", 1, 1, 256),
        "rwmixread": _int_option(job, "rwmixread", 50, 0, 100),
        "ios": ios,
        "runtime": runtime,
        "seed": _int_option(job, "seed", 0, 0, 2**64 - 1),
        "size": size,
        "ramp_time": ramp,
        "contig_pages": _int_option(job, "contig_pages", DEFAULT_CONTIG_PAGES, 1, MAX_RUN_PAGES),
    }


class LatencyHistogram:
    """Latencies in ns, in log-linear buckets: exact below 512 ns, else 256 buckets per power of two
    (a reported percentile is the middle of its bucket: within 0.2 % of the true value).  Count, sum
    and max are exact.  Bounded: at most ~14,000 buckets whatever the number of samples."""

    SUB_BITS = 8

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.total += ns
        if ns > self.max:
            self.max = ns
        shift = max(ns.bit_length() - self.SUB_BITS - 1, 0)
        key = (ns >> shift) << shift  # the bucket's lower bound
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def percentile(self, pct: float) -> float:
        """The value at percentile ``pct`` (fio's rank: the smallest with at least pct % at or below)."""
        if not self.count:
            return 0.0
        rank = max(1, -(-self.count * pct // 100))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                width = 1 << max(key.bit_length() - self.SUB_BITS - 1, 0)
                return min(key + (width - 1) / 2, self.max)
        return float(self.max)  # pragma: no cover (rank <= count)


class _Counters:
    """The model counters a run reports, read at the job's start and end."""

    _NAMES = ("kicks", "host_map_calls", "host_unmap_calls", "iotlb_flushes", "unmaps", "stale_total_ps")

    def __init__(self, kernel: Any, machine: Any) -> None:
        self.viommu = kernel.boot.viommu
        nvme_fn = machine.nvme_pci
        self.container = machine.host.containers.get(nvme_fn.bdf) if machine.host is not None else None
        cookie = getattr(getattr(kernel.devices[nvme_fn.bdf], "dma", None), "cookie", None)
        self.invalidation = cookie.invalidation if cookie is not None else None
        if self.viommu is not None:
            self.viommu.unmap_stale_max_ps = 0  # the job's own maximum
        self.start = self._read()
        self.end: dict[str, int] | None = None

    def stop(self) -> None:
        """Take the end snapshot now (the window closed)."""
        if self.end is None:
            self.end = self._read()

    def _read(self) -> dict[str, int]:
        v, c, inv = self.viommu, self.container, self.invalidation
        out = dict.fromkeys(self._NAMES + REQUEST_TYPES, 0)
        if v is not None:
            out.update(kicks=v.kicks, unmaps=v.unmaps_completed, stale_total_ps=v.unmap_stale_total_ps)
            out.update({t: v.requests_by_type.get(t, 0) for t in REQUEST_TYPES})
        if c is not None:
            out.update(host_map_calls=c.map_calls, host_unmap_calls=c.unmap_calls)
        if inv is not None:
            out["iotlb_flushes"] = inv.stats().invalidations_finished
        return out

    def delta(self) -> dict[str, Any]:
        end = self.end if self.end is not None else self._read()
        d = {k: end[k] - self.start[k] for k in end}
        unmaps = d["unmaps"]
        return {
            "kicks": d["kicks"],
            "requests": {t: d[t] for t in REQUEST_TYPES},
            "host_map_calls": d["host_map_calls"],
            "host_unmap_calls": d["host_unmap_calls"],
            "iotlb_flushes": d["iotlb_flushes"],
            "stale_window_us": {
                "mean": round(d["stale_total_ps"] / unmaps / 1e6, 3) if unmaps else 0.0,
                "max": round(self.viommu.unmap_stale_max_ps / 1e6, 3) if self.viommu is not None else 0.0,
            },
        }


def user_buffer_pages(mm: Any, rng: Any, npages: int, contig: int) -> list[int]:
    """The physical pages behind a job's buffer of ``npages`` pages: runs of contiguous pages (a run
    ends at each page boundary with probability 1/``contig``), each run at the start of its own block
    of the guest allocator ``mm``, larger than the run so that no two runs touch; the runs in an
    order shuffled with ``rng``."""
    lengths = [1]
    for _ in range(npages - 1):  # each boundary: the run goes on with probability 1 - 1/contig
        if contig > 1 and lengths[-1] < MAX_RUN_PAGES and rng.randrange(contig):
            lengths[-1] += 1
        else:
            lengths.append(1)
    blocks = []
    for length in lengths:
        base = mm.alloc_pages(length.bit_length())  # room to spare: a run never ends where the next begins
        blocks.append([base + i * PAGE_SIZE for i in range(length)])
    rng.shuffle(blocks)
    return [page for block in blocks for page in block]


class _Job:
    """One fio job: its CPU, offset cursor, RNG stream and slots."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        self.cpu = index % run.kernel.ncpus
        self.rng = run.sim.rng(f"workload.seed{run.opts['seed']}.job{index}")
        self.cursor = 0
        self.pages_per_io = -(-run.opts["bs"] // PAGE_SIZE)
        buffer_rng = run.sim.rng(f"workload.seed{run.opts['seed']}.job{index}.buffer")
        self.buffer = user_buffer_pages(run.kernel.mm, buffer_rng, run.opts["iodepth"] * self.pages_per_io,
                                        run.opts["contig_pages"])

    def slot_pages(self, slot: int) -> list[int]:
        """The pages of slot ``slot``'s buffer, in order."""
        n = self.pages_per_io
        return self.buffer[slot * n:(slot + 1) * n]

    def next_io(self) -> tuple[int, int]:
        """(opcode, byte offset) of this job's next I/O."""
        o = self.run.opts
        bs, rw = o["bs"], o["rw"]
        slots = o["size"] // bs
        if rw.startswith("rand"):
            offset = self.rng.randrange(slots) * bs
        else:
            offset = self.cursor
            self.cursor = (self.cursor + bs) % (slots * bs)
        if rw == "randrw":
            is_read = self.rng.randrange(100) < o["rwmixread"]
        else:
            is_read = rw in ("read", "randread")
        return (NVME_READ if is_read else NVME_WRITE), offset


class _Run:
    """The job's state while it runs inside the simulation."""

    def __init__(self, sim: Simulator, kernel: Any, machine: Any, opts: dict[str, Any],
                 progress: Callable[[int, int], None] | None) -> None:
        self.sim = sim
        self.kernel = kernel
        self.opts = opts
        self.driver = kernel.boot.nvme
        if self.driver is None or not self.driver.namespaces:
            raise ConfigError("--nvme", "the guest has no NVMe namespace to run the job on")
        self.nsid = min(self.driver.namespaces)
        ns = self.driver.namespaces[self.nsid]
        self.block_size = ns.block_size
        if opts["bs"] % self.block_size:
            raise ConfigError("--bs", f"{opts['bs']} bytes is not a multiple of the namespace's "
                              f"{self.block_size}-byte blocks")
        if opts["size"] > ns.nsze * self.block_size:
            raise ConfigError("--size", f"{opts['size']} bytes is larger than the namespace "
                              f"({ns.nsze * self.block_size} bytes)")
        self.chunk = min(opts["bs"], self.driver.max_hw_bytes // PAGE_SIZE * PAGE_SIZE)
        self.progress = progress
        self.latency = LatencyHistogram()
        self.issued = 0
        self.completed = 0
        self.errors = 0
        self.bytes = 0
        self.start_ps = 0
        self.end_ps = 0
        self.deadline_ps: int | None = None
        self._next_report = 0
        self._report_step = 1
        self.machine = machine
        self.counters: _Counters | None = None

    async def main(self) -> None:
        sim, o = self.sim, self.opts
        self.start_ps = self.end_ps = sim.now + round(o["ramp_time"] * PS_PER_S)
        if o["runtime"] is not None:
            self.deadline_ps = self.start_ps + round(o["runtime"] * PS_PER_S)
        sim.spawn(self._window(), name="fio.window")
        total = o["ios"] if o["ios"] is not None else round(o["runtime"] * 1e6)
        self._report_step = max(1, total // 200)
        tasks: list[Task[None]] = []
        for j in range(o["numjobs"]):
            job = _Job(self, j)
            for slot in range(o["iodepth"]):
                tasks.append(sim.spawn(self._slot(job, job.slot_pages(slot)), name=f"fio.job{j}.{slot}"))
        for task in tasks:
            await task
        if self.counters is None:  # every I/O finished inside the ramp
            self.counters = _Counters(self.kernel, self.machine)
        self.counters.stop()

    async def _window(self) -> None:
        """Read the counters when the ramp ends, and again at the deadline."""
        await sleep(self.start_ps - self.sim.now)
        self.counters = _Counters(self.kernel, self.machine)
        if self.deadline_ps is not None:
            await sleep(self.deadline_ps - self.sim.now)
            self.counters.stop()
            self.end_ps = self.deadline_ps

    def _take(self) -> bool:
        """May a slot issue another I/O?"""
        o = self.opts
        if o["ios"] is not None and self.issued >= o["ios"]:
            return False
        if self.deadline_ps is not None and self.sim.now >= self.deadline_ps:
            return False
        self.issued += 1
        return True

    async def _slot(self, job: _Job, pages: list[int]) -> None:
        sim, bs = self.sim, self.opts["bs"]
        while self._take():
            opcode, offset = job.next_io()
            t0 = sim.now
            status = await self._io(job.cpu, opcode, offset, pages)
            now = sim.now
            if now < self.start_ps or (self.deadline_ps is not None and now > self.deadline_ps):
                continue  # outside the measured window
            self.latency.add((now - t0) // 1000)
            self.completed += 1
            self.end_ps = now
            if status:
                self.errors += 1
            else:
                self.bytes += bs
            self._report()

    async def _io(self, cpu: int, opcode: int, offset: int, pages: list[int]) -> int:
        """One I/O: one request, or (above ``max_hw_bytes``) requests issued together; the worst status."""
        bs, chunk, blk = self.opts["bs"], self.chunk, self.block_size
        lba = offset // blk
        if bs <= chunk:
            return int(await self.driver.submit_io_sg(cpu, opcode, self.nsid, lba, bs // blk, pages))
        per = chunk // PAGE_SIZE
        parts = [self.sim.spawn(self.driver.submit_io_sg(cpu, opcode, self.nsid, lba + i // blk,
                                                         min(chunk, bs - i) // blk,
                                                         pages[i // PAGE_SIZE:i // PAGE_SIZE + per]),
                                name="fio.split")
                 for i in range(0, bs, chunk)]
        statuses = [int(await p) for p in parts]
        return next((s for s in statuses if s), 0)

    def _report(self) -> None:
        if self.progress is None or self.completed < self._next_report:
            return
        self._next_report = self.completed + self._report_step
        if self.opts["ios"] is not None:
            self.progress(self.completed, self.opts["ios"])
        else:
            self.progress((self.sim.now - self.start_ps) // 1_000_000, round(self.opts["runtime"] * 1e6))

    def result(self) -> dict[str, Any]:
        elapsed_ps = max(self.end_ps - self.start_ps, 0)
        secs = elapsed_ps / PS_PER_S
        lat = self.latency
        out: dict[str, Any] = {
            "ios": self.completed,
            "errors": self.errors,
            "sim_time_s": round(secs, 9),
            "iops": round(self.completed / secs, 1) if secs else 0.0,
            "bandwidth_mib_s": round(self.bytes / secs / (1 << 20), 3) if secs else 0.0,
            "latency_us": {
                "mean": round(lat.total / lat.count / 1000, 3) if lat.count else 0.0,
                "p50": round(lat.percentile(50) / 1000, 3),
                "p99": round(lat.percentile(99) / 1000, 3),
                "max": round(lat.max / 1000, 3),
            },
        }
        assert self.counters is not None
        out.update(self.counters.delta())
        return out


def _machine_echo(config: MachineConfig, cost: dict[str, Any]) -> dict[str, Any]:
    fields = ("smp", "memory", "nvme", "aw_bits", "seed", "viommu", "flavor", "iommu_policy", "guest_kernel",
              "flush_queue", "map_batching", "initcall_blacklist", "host_iommu_pgsizes")
    echo = {name: getattr(config, name) for name in fields}
    echo["initcall_blacklist"] = list(config.initcall_blacklist)
    echo["cost"] = dict(sorted(cost.items()))
    return echo


def run_scenario(machine: dict[str, Any], job: dict[str, Any], cost: dict[str, Any] | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Boot ``MachineConfig(**machine)`` (timing from ``CostModel().evolve(**cost)``) and run ``job``.

    Returns the issue's result keys (iops, bandwidth_mib_s, latency_us{mean,p50,p99,max}, kicks,
    requests{by type}, host_map_calls, host_unmap_calls, iotlb_flushes, stale_window_us{mean,max}),
    ios, errors, sim_time_s, and the options echoed (``machine``, ``job``).  ``progress(done, total)``
    is called about 200 times: completed I/Os of ``ios``, or simulated us of ``runtime``.
    Bad options raise ``ConfigError`` naming the option.
    """
    cost = dict(cost or {})
    try:
        cost_model = CostModel().evolve(**cost)
    except (ValueError, TypeError) as exc:
        key = next((k for k in cost if not hasattr(CostModel(), k)), None)
        raise ConfigError(f"cost.{key}" if key else "cost", str(exc)) from None
    for key, value in cost.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"cost.{key}", f"invalid value {value!r} (a non-negative integer)")
    fields = [a.name for a in attrs.fields(MachineConfig) if a.name != "cost"]
    unknown = [k for k in machine if k not in fields]
    if unknown:
        raise ConfigError(f"machine.{unknown[0]}", f"unknown machine option (known: {', '.join(fields)})")
    config = MachineConfig(**machine, cost=cost_model)
    opts = job_options(job)
    if config.nvme == "none":
        raise ConfigError("--nvme", "the job needs an NVMe (nvme=vfio or emulated), not 'none'")
    sim = Simulator(seed=config.seed)
    hw = build_machine(config, sim)
    state: dict[str, Any] = {}

    async def scenario() -> None:
        kernel = await boot(hw)
        run = _Run(sim, kernel, hw, opts, progress)
        state["run"] = run
        await run.main()

    task = sim.spawn(scenario(), name="workload")
    sim.run_sync(until=task)
    task.result()
    result = state["run"].result()
    job_echo = dict(opts)
    return {**result, "machine": _machine_echo(config, cost), "job": job_echo}
