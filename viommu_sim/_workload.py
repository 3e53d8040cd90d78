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
* one seed for everything: the machine's ``--seed`` seeds the simulation, and job *j*'s
  offsets and buffer layout are its streams ``workload.job<j>`` and ``workload.job<j>.buffer``
  (``run --repeat N`` runs seeds ``seed .. seed+N-1``); there is no second, job-level seed;
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

The rooms: ``_job`` checks the options, ``_histogram`` holds the latencies, ``_results``
reads the models' counters and shapes the result; this module is the engine.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable

import attrs

from models import ConfigError, CostModel, build_machine, machine_config
from models.guest import PAGE_SIZE, boot
from sim import PS_PER_S, Simulator, Task, sleep

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
    """One fio job: its CPU, offset cursor, RNG stream and slots."""

    def __init__(self, run: _Run, index: int) -> None:
        o = run.opts
        self.opts = o
        self.index = index
        self.cpu = index % run.kernel.ncpus
        self.rng = run.sim.rng(f"workload.job{index}")
        self.cursor = 0
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
        slots = o.size // bs
        if rw.startswith("rand"):
            offset = self.rng.randrange(slots) * bs
        else:
            offset = self.cursor
            self.cursor = (self.cursor + bs) % (slots * bs)
        if rw == "randrw":
            is_read = self.rng.randrange(100) < o.rwmixread
        else:
            is_read = rw in ("read", "randread")
        return (NVME_READ if is_read else NVME_WRITE), offset


class _Run:
    """The job's state while it runs inside the simulation."""

    def __init__(self, sim: Simulator, kernel: GuestKernel, machine: Machine, opts: JobOptions,
                 progress: Callable[[int, int], None] | None) -> None:
        self.sim = sim
        self.kernel = kernel
        self.opts = opts
        driver: NvmeDriver | None = kernel.boot.nvme
        if driver is None or not driver.namespaces:
            raise ConfigError("--nvme", "the guest has no NVMe namespace to run the job on")
        self.driver = driver
        self.nsid = min(driver.namespaces)
        ns = driver.namespaces[self.nsid]
        self.block_size: int = ns.block_size
        if opts.bs % self.block_size:
            raise ConfigError("--bs", f"{opts.bs} bytes is not a multiple of the namespace's "
                              f"{self.block_size}-byte blocks")
        if opts.size > ns.nsze * self.block_size:
            raise ConfigError("--size", f"{opts.size} bytes is larger than the namespace "
                              f"({ns.nsze * self.block_size} bytes)")
        self.chunk = min(opts.bs, driver.max_hw_bytes // PAGE_SIZE * PAGE_SIZE)
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
        self.counters: WindowCounters | None = None

    async def main(self) -> None:
        sim, o = self.sim, self.opts
        self.start_ps = self.end_ps = sim.now + round(o.ramp_time * PS_PER_S)
        if o.runtime is not None:
            self.deadline_ps = self.start_ps + round(o.runtime * PS_PER_S)
        sim.spawn(self._window(), name="fio.window")
        total = o.ios if o.ios is not None else round((o.runtime or 0) * 1e6)
        self._report_step = max(1, total // 200)
        tasks: list[Task[None]] = []
        for j in range(o.numjobs):
            job = _Job(self, j)
            for slot in range(o.iodepth):
                tasks.append(sim.spawn(self._slot(job, job.slot_pages(slot)), name=f"fio.job{j}.{slot}"))
        for task in tasks:
            await task
        if self.counters is None:  # every I/O finished inside the ramp
            self.counters = WindowCounters(self.kernel, self.machine)
        self.counters.stop()

    async def _window(self) -> None:
        """Read the counters when the ramp ends, and again at the deadline."""
        await sleep(self.start_ps - self.sim.now)
        self.counters = WindowCounters(self.kernel, self.machine)
        if self.deadline_ps is not None:
            await sleep(self.deadline_ps - self.sim.now)
            self.counters.stop()
            self.end_ps = self.deadline_ps

    def _take(self) -> bool:
        """May a slot issue another I/O?"""
        o = self.opts
        if o.ios is not None and self.issued >= o.ios:
            return False
        if self.deadline_ps is not None and self.sim.now >= self.deadline_ps:
            return False
        self.issued += 1
        return True

    async def _slot(self, job: _Job, pages: list[int]) -> None:
        sim, bs = self.sim, self.opts.bs
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
        bs, chunk, blk = self.opts.bs, self.chunk, self.block_size
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
        o = self.opts
        if o.ios is not None:
            self.progress(self.completed, o.ios)
        else:
            self.progress((self.sim.now - self.start_ps) // 1_000_000, round((o.runtime or 0) * 1e6))

    def result(self) -> dict[str, Any]:
        elapsed_ps = max(self.end_ps - self.start_ps, 0)
        secs = elapsed_ps / PS_PER_S
        out: dict[str, Any] = {
            "ios": self.completed,
            "errors": self.errors,
            "sim_time_s": round(secs, 9),
            "iops": round(self.completed / secs, 1) if secs else 0.0,
            "bandwidth_mib_s": round(self.bytes / secs / (1 << 20), 3) if secs else 0.0,
            "latency_us": self.latency.summary_us(),
        }
        assert self.counters is not None
        out.update(self.counters.delta())
        return out


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
    config = machine_config(machine, cost=_cost_model(cost))
    opts = job_options(job)
    if config.nvme == "none":
        raise ConfigError("--nvme", "the job needs an NVMe (nvme=vfio or emulated), not 'none'")
    buffers = opts.numjobs * opts.iodepth * opts.bs
    if buffers > config.memory // 4:  # each contiguous run gets its own allocator block of up to twice its size
        raise ConfigError("--bs", f"the jobs' buffers (numjobs x iodepth x bs = {buffers} bytes) need more than a "
                          f"quarter of the guest RAM ({config.memory} bytes): give the guest more --memory")
    sim = Simulator(seed=config.seed)
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
    return {**runs[0].result(), "machine": machine_echo(config, cost), "job": attrs.asdict(opts)}
