"""fio-like workloads through the whole stack: the guest's NVMe driver, dma-iommu, virtio-iommu, VFIO.

``run_scenario(machine, job, cost)`` builds ``MachineConfig(**machine, cost=...)``,
boots the guest on a fresh ``Simulator`` (no trace sinks) and runs a job as fio
would with ``ioengine=libaio direct=1``:

* ``numjobs`` jobs, job *j* on CPU ``j % smp``, each keeping ``iodepth`` I/Os in
  flight (one task per slot: a completion is followed at once by the next
  submission, as libaio's ``io_submit`` after ``io_getevents``);
* ``rw``: read, write, randread, randwrite, randrw (``rwmixread`` percent reads), and
  fio's mixed sequential ``rw`` (alias ``readwrite``: each I/O's direction drawn with
  ``rwmixread``, each direction with its own sequential cursor, as fio keeps a last
  position per data direction); sequential offsets advance a per-job cursor over
  ``size`` bytes (or its percentage of the namespace) and wrap, random offsets are
  ``bs``-aligned (fio's ``blockalign``) draws from ``sim.rng``;
* ``run_jobs`` runs several job sections (a fio job file's) side by side on one machine,
  each with its own options, window and read/write counts (``Direction``: every
  completed I/O counts in its own direction); job clones are numbered across sections;
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
* one seed for everything: the machine's ``--seed`` seeds the simulation, and job *j*'s
  offsets and buffer layout are its streams ``workload.job<j>`` and ``workload.job<j>.buffer``
  (``run --repeat N`` runs seeds ``seed .. seed+N-1``); there is no second, job-level seed;
* ``ios`` I/Os in all, ``number_ios`` per job (fio's), or ``runtime`` simulated
  seconds (whichever ends first when several are given);
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

The rooms: ``_job`` checks the options, ``_histogram`` holds the latencies, ``_results``
reads the models' counters and shapes the result; this module is the engine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import attrs

from models import ConfigError, CostModel, build_machine, machine_config
from models.guest import PAGE_SIZE, boot
from sim import PS_PER_S, Simulator, Task, TraceSink, sleep

from ._histogram import LatencyHistogram
from ._job import MAX_RUN_PAGES, JobOptions, job_options
from ._results import WindowCounters, machine_echo

if TYPE_CHECKING:
    from models import Machine
    from models.guest import GuestKernel, NvmeDriver, PageAllocator

NVME_READ, NVME_WRITE = 0x02, 0x01


def user_buffer_pages(mm: PageAllocator, rng: random.Random, npages: int, contig: int) -> list[int]:
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
    """One fio job (a clone of its section): its CPU, offset cursors, RNG stream, slots and I/O count."""

    def __init__(self, run: _Run, group: _Group, index: int) -> None:
        o = group.opts
        self.opts = o
        self.group = group
        self.index = index
        self.cpu = index % run.kernel.ncpus
        self.rng = run.sim.rng(f"workload.job{index}")
        #: sequential offsets, one per direction (fio keeps a last position per data direction)
        self.cursor = {NVME_READ: 0, NVME_WRITE: 0}
        self.issued = 0
        self.pages_per_io = -(-o.bs // PAGE_SIZE)
        buffer_rng = run.sim.rng(f"workload.job{index}.buffer")
        self.buffer = user_buffer_pages(run.kernel.mm, buffer_rng, o.iodepth * self.pages_per_io, o.contig_pages)

    def slot_pages(self, slot: int) -> list[int]:
        """The pages of slot ``slot``'s buffer, in order."""
        n = self.pages_per_io
        return self.buffer[slot * n:(slot + 1) * n]

    def next_io(self) -> tuple[int, int]:
        """(opcode, byte offset) of this job's next I/O."""
        o = self.opts
        bs, rw = o.bs, o.rw
        slots = self.group.size // bs
        if rw == "rw":  # mixed sequential: the direction first, then that direction's cursor
            opcode = NVME_READ if self.rng.randrange(100) < o.rwmixread else NVME_WRITE
            offset = self.cursor[opcode]
            self.cursor[opcode] = (offset + bs) % (slots * bs)
            return opcode, offset
        if rw.startswith("rand"):
            offset = self.rng.randrange(slots) * bs
        else:
            offset = self.cursor[NVME_READ]
            self.cursor[NVME_READ] = (offset + bs) % (slots * bs)
        if rw == "randrw":
            is_read = self.rng.randrange(100) < o.rwmixread
        else:
            is_read = rw in ("read", "randread")
        return (NVME_READ if is_read else NVME_WRITE), offset


@attrs.define
class Direction:
    """What completed in one data direction of a job section inside its window (fio's ``read``/``write``)."""

    ios: int = 0
    errors: int = 0
    #: bytes of the I/Os that completed without error
    bytes: int = 0
    latency: LatencyHistogram = attrs.Factory(LatencyHistogram)


class _Group:
    """One job section (fio's job, with its ``numjobs`` clones): its options, window and results."""

    def __init__(self, opts: JobOptions, first_index: int, size: int) -> None:
        self.opts = opts
        self.first_index = first_index
        #: bytes addressed (``size``, or its percentage of the namespace resolved)
        self.size = size
        self.latency = LatencyHistogram()
        self.directions = {NVME_READ: Direction(), NVME_WRITE: Direction()}
        self.issued = 0
        self.completed = 0
        self.errors = 0
        self.bytes = 0
        self.start_ps = 0
        self.end_ps = 0
        self.deadline_ps: int | None = None
        self.jobs: list[_Job] = []

    def take(self, job: _Job, now: int) -> bool:
        """May a slot of ``job`` issue another I/O?"""
        o = self.opts
        if o.ios is not None and self.issued >= o.ios:
            return False
        if o.number_ios is not None and job.issued >= o.number_ios:
            return False
        if self.deadline_ps is not None and now >= self.deadline_ps:
            return False
        self.issued += 1
        job.issued += 1
        return True

    def total(self) -> int:
        """The progress bar's total: I/Os, or simulated us of ``runtime``."""
        o = self.opts
        if o.ios is not None:
            return o.ios
        if o.number_ios is not None and o.runtime is None:
            return o.number_ios * o.numjobs
        return round((o.runtime or 0) * 1e6)

    def summary(self) -> dict[str, Any]:
        """The section's figures in ``run --json``'s shape (without the machine's counters)."""
        secs = self.window_ps() / PS_PER_S
        return {
            "ios": self.completed,
            "errors": self.errors,
            "sim_time_s": round(secs, 9),
            "iops": round(self.completed / secs, 1) if secs else 0.0,
            "bandwidth_mib_s": round(self.bytes / secs / (1 << 20), 3) if secs else 0.0,
            "latency_us": self.latency.summary_us(),
        }

    def window_ps(self) -> int:
        return max(self.end_ps - self.start_ps, 0)


@attrs.frozen(kw_only=True)
class JobReport:
    """One job section's results: its options, figures, window and read/write detail."""

    opts: JobOptions
    #: bytes addressed (a ``size`` percentage resolved)
    size: int
    summary: dict[str, Any]
    window_ps: int
    read: Direction
    write: Direction
    #: the vCPU of each of its jobs
    cpus: tuple[int, ...]


@attrs.frozen(kw_only=True)
class RunReport:
    """Every section's report, the machine's counters across the run's window, the options echoed."""

    jobs: tuple[JobReport, ...]
    counters: dict[str, Any]
    machine: dict[str, Any]
    #: the machine window (the earliest section's ramp end to the latest section's end), ps
    window_ps: int


class _Run:
    """The job sections' state while they run inside the simulation, side by side on one machine."""

    def __init__(self, sim: Simulator, kernel: GuestKernel, machine: Machine, opts: list[JobOptions],
                 progress: Callable[[int, int], None] | None) -> None:
        self.sim = sim
        self.kernel = kernel
        driver: NvmeDriver | None = kernel.boot.nvme
        if driver is None or not driver.namespaces:
            raise ConfigError("--nvme", "the guest has no NVMe namespace to run the job on")
        self.driver = driver
        self.nsid = min(driver.namespaces)
        ns = driver.namespaces[self.nsid]
        self.block_size: int = ns.block_size
        ns_bytes = ns.nsze * self.block_size
        self.groups: list[_Group] = []
        first = 0
        for o in opts:
            if o.bs % self.block_size:
                raise ConfigError("--bs", f"{o.bs} bytes is not a multiple of the namespace's "
                                  f"{self.block_size}-byte blocks")
            if o.size_fraction is not None:  # fio's size=N%: of the device, whole blocks of bs
                size = int(ns_bytes * o.size_fraction) // o.bs * o.bs
                if size < o.bs:
                    raise ConfigError("--size", f"{o.size_fraction * 100}% of the namespace ({ns_bytes} bytes) "
                                      f"is smaller than one block of {o.bs}")
            else:
                size = o.size
            if size > ns_bytes:
                raise ConfigError("--size", f"{size} bytes is larger than the namespace ({ns_bytes} bytes)")
            self.groups.append(_Group(o, first, size))
            first += o.numjobs
        self.max_chunk = driver.max_hw_bytes // PAGE_SIZE * PAGE_SIZE
        self.progress = progress
        self.start_ps = 0
        self.end_ps = 0
        self._done = 0
        self._next_report = 0
        self._report_step = 1
        self._by_ios = all(g.opts.runtime is None for g in self.groups)
        self._total = sum(g.total() for g in self.groups) if self._by_ios else max(g.total() for g in self.groups)
        self.machine = machine
        self.counters: WindowCounters | None = None

    async def main(self) -> None:
        sim = self.sim
        for g in self.groups:
            g.start_ps = g.end_ps = sim.now + round(g.opts.ramp_time * PS_PER_S)
            if g.opts.runtime is not None:
                g.deadline_ps = g.start_ps + round(g.opts.runtime * PS_PER_S)
        self.start_ps = self.end_ps = min(g.start_ps for g in self.groups)
        deadlines = [g.deadline_ps for g in self.groups]
        stop_ps = max(d for d in deadlines if d is not None) if None not in deadlines else None
        sim.spawn(self._window(stop_ps), name="fio.window")
        self._report_step = max(1, self._total // 200)
        tasks: list[Task[None]] = []
        for g in self.groups:
            for j in range(g.first_index, g.first_index + g.opts.numjobs):
                job = _Job(self, g, j)
                g.jobs.append(job)
                for slot in range(g.opts.iodepth):
                    tasks.append(sim.spawn(self._slot(job, job.slot_pages(slot)), name=f"fio.job{j}.{slot}"))
        for task in tasks:
            await task
        if self.counters is None:  # every I/O finished inside the ramp
            self.counters = WindowCounters(self.kernel, self.machine)
        self.counters.stop()
        for g in self.groups:  # a section that ran to its deadline is measured over exactly its runtime
            if g.deadline_ps is not None and sim.now >= g.deadline_ps:
                g.end_ps = g.deadline_ps
        if stop_ps is None or sim.now < stop_ps:
            self.end_ps = max(g.end_ps for g in self.groups)

    async def _window(self, stop_ps: int | None) -> None:
        """Read the counters when the first ramp ends, and again at the last deadline (if all have one)."""
        await sleep(self.start_ps - self.sim.now)
        self.counters = WindowCounters(self.kernel, self.machine)
        if stop_ps is not None:
            await sleep(stop_ps - self.sim.now)
            self.counters.stop()
            self.end_ps = stop_ps

    async def _slot(self, job: _Job, pages: list[int]) -> None:
        sim, g = self.sim, job.group
        bs = g.opts.bs
        while g.take(job, sim.now):
            opcode, offset = job.next_io()
            t0 = sim.now
            status = await self._io(job.cpu, bs, opcode, offset, pages)
            now = sim.now
            if now < g.start_ps or (g.deadline_ps is not None and now > g.deadline_ps):
                continue  # outside the measured window
            ns = (now - t0) // 1000
            g.latency.add(ns)
            d = g.directions[opcode]
            d.latency.add(ns)
            d.ios += 1
            g.completed += 1
            g.end_ps = now
            if status:
                g.errors += 1
                d.errors += 1
            else:
                g.bytes += bs
                d.bytes += bs
            self._report()

    async def _io(self, cpu: int, bs: int, opcode: int, offset: int, pages: list[int]) -> int:
        """One I/O: one request, or (above ``max_hw_bytes``) requests issued together; the worst status."""
        chunk, blk = min(bs, self.max_chunk), self.block_size
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
        self._done += 1
        if self.progress is None or self._done < self._next_report:
            return
        self._next_report = self._done + self._report_step
        if self._by_ios:
            self.progress(self._done, self._total)
        else:
            self.progress((self.sim.now - self.start_ps) // 1_000_000, self._total)

    def report(self, machine: dict[str, Any]) -> RunReport:
        assert self.counters is not None
        jobs = tuple(JobReport(opts=g.opts, size=g.size, summary=g.summary(), window_ps=g.window_ps(),
                               read=g.directions[NVME_READ], write=g.directions[NVME_WRITE],
                               cpus=tuple(job.cpu for job in g.jobs)) for g in self.groups)
        return RunReport(jobs=jobs, counters=self.counters.delta(), machine=machine,
                         window_ps=max(self.end_ps - self.start_ps, 0))


def _cost_model(cost: dict[str, Any]) -> CostModel:
    """``CostModel().evolve(**cost)``; a bad name or value raises ConfigError naming ``cost.<key>``."""
    try:
        model = CostModel().evolve(**cost)
    except (ValueError, TypeError) as exc:
        key = next((k for k in cost if not hasattr(CostModel(), k)), None)
        raise ConfigError(f"cost.{key}" if key else "cost", str(exc)) from None
    for key, value in cost.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"cost.{key}", f"invalid value {value!r} (a non-negative integer)")
    return model


def run_jobs(machine: dict[str, Any], jobs: Sequence[dict[str, Any]], cost: dict[str, Any] | None = None, *,
             progress: Callable[[int, int], None] | None = None, sinks: Sequence[TraceSink] = ()) -> RunReport:
    """Boot ``MachineConfig(**machine)`` (timing from ``CostModel().evolve(**cost)``) and run the job
    sections ``jobs`` side by side, each with its own options (fio's job file: every section starts at
    once unless told otherwise).  Job clones are numbered across the sections (the second section's
    first job is ``numjobs`` of the first), which names their RNG streams and their vCPUs.  The
    machine's counters cover the run's window: from the earliest section's ramp end to the last
    section's deadline (every section has a ``runtime``) or last completion.
    Bad options raise ``ConfigError`` naming the option.
    """
    if not jobs:
        raise ConfigError("job", "no job to run")
    cost = dict(cost or {})
    config = machine_config(machine, cost=_cost_model(cost))
    opts = [job_options(job) for job in jobs]
    if config.nvme == "none":
        raise ConfigError("--nvme", "the job needs an NVMe (nvme=vfio or emulated), not 'none'")
    buffers = sum(o.numjobs * o.iodepth * o.bs for o in opts)
    if buffers > config.memory // 4:  # each contiguous run gets its own allocator block of up to twice its size
        raise ConfigError("--bs", f"the jobs' buffers (numjobs x iodepth x bs = {buffers} bytes) need more than a "
                          f"quarter of the guest RAM ({config.memory} bytes): give the guest more --memory")
    sim = Simulator(seed=config.seed, sinks=list(sinks))  # sinks: run --trace
    hw = build_machine(config, sim)
    runs: list[_Run] = []

    async def scenario() -> None:
        kernel = await boot(hw)
        run = _Run(sim, kernel, hw, opts, progress)
        runs.append(run)
        await run.main()

    task = sim.spawn(scenario(), name="workload")
    sim.run_sync(until=task)
    task.result()
    return runs[0].report(machine_echo(config, cost))


def legacy_result(report: RunReport, index: int = 0) -> dict[str, Any]:
    """``run --json``'s object for section ``index``: its figures, the machine's counters, the options echoed."""
    job = report.jobs[index]
    return {**job.summary, **report.counters, "machine": report.machine,
            "job": {**job.opts.echo(), "size": job.size}}


def run_scenario(machine: dict[str, Any], job: dict[str, Any], cost: dict[str, Any] | None = None, *,
                 progress: Callable[[int, int], None] | None = None, sinks: Sequence[TraceSink] = ()
                 ) -> dict[str, Any]:
    """Boot ``MachineConfig(**machine)`` (timing from ``CostModel().evolve(**cost)``) and run ``job``.

    Returns the issue's result keys (iops, bandwidth_mib_s, latency_us{mean,p50,p99,max}, kicks,
    requests{by type}, host_map_calls, host_unmap_calls, iotlb_flushes, stale_window_us{mean,max}),
    ios, errors, sim_time_s, and the options echoed (``machine``, ``job``).  ``progress(done, total)``
    is called about 200 times: completed I/Os of ``ios``, or simulated us of ``runtime``.
    Bad options raise ``ConfigError`` naming the option.
    """
    return legacy_result(run_jobs(machine, [job], cost, progress=progress, sinks=sinks))
