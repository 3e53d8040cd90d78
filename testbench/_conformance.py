"""The invalidation-policy conformance suite: ``check_policy(ref)`` and ``viommu-sim check-policy REF``.

A policy (``"strict"``, ``"lazy"``, or a reference ``PATH.py:Class`` / ``package.module:Class`` to
a ``models.guest.InvalidationPolicy``) is booted on the seed's machine with the emulated NVMe behind
the virtio-iommu, for each guest kernel (6.12; 6.7 only for a policy that does not defer flushes:
6.7's virtio-iommu has no ``flush_iotlb_all``, so Linux turns such a domain strict), vCPU count and
seed.  Each run drives the regressions' workload -- a burst of 4 KiB NVMe writes and reads on every
CPU at once, a pause longer than the policy's declared bound, a second burst that reuses the IOVAs,
a final pause -- with probes through the DMA API and a rogue endpoint, while the testbench's
``DmaSafetyScoreboard`` and ``OrderingScoreboard`` and a trace monitor of the guest's
``viommu_unmap_pages``/``free_iova_fast`` and the device's ``virtio_iommu_unmap_done`` watch.

The properties, one verdict each (the first counterexample names times, IOVA and CPU):

* ``use-after-unmap``: no IOVA is freed for reuse (``free_iova_fast``) or mapped again before the
  device completed its UNMAP, and no device DMA reaches an IOVA after its UNMAP completed;
* ``strict-unmap``: for a policy declaring ``stale_bound_ps == 0``, a DMA right after
  ``dma_unmap_page`` returned faults;
* ``stale-window``: every window from the guest's unmap to the device's UNMAP completion is at most
  the declared bound plus ``INVALIDATION_SLACK_PS`` (one invalidation's round trip), and a DMA after
  that long faults;
* ``lost-completions``: every I/O completes with success and every queued UNMAP completes;
* ``map-ordering``: a MAP completes at the device before DMA to it and before the guest reads OK;
* ``isolation``: another endpoint's DMA to an IOVA mapped in the NVMe's domain faults.

``viommu-sim check-policy REF --guest-kernel K --smp N --seed S`` replays one run.
"""

from __future__ import annotations

from typing import Any

import attrs

from sim import CallbackSink, Simulator, TraceRecord, format_time, ms, us

from ._faults import attempt_dma, endpoint_dma_port
from ._platform import boot_platform
from ._safety import DmaSafetyScoreboard, OrderingScoreboard

PROPERTIES = ("use-after-unmap", "strict-unmap", "stale-window", "lost-completions", "map-ordering", "isolation")
#: what one invalidation (a kick, the device's UNMAPs, the used-ring wait) may add to the declared bound
INVALIDATION_SLACK_PS = us(100)
#: the pause for a policy that declares no bound
UNBOUNDED_PAUSE_PS = ms(100)
#: I/Os per CPU in each burst
BURST = 6
PAGE = 4096
#: the NVMe at 00:04.0 and the AHCI at 00:1f.2 (the rogue endpoint of the isolation probe)
_NVME_BDF = 0x20
_AHCI_BDF = 0xFA
_IO_WRITE, _IO_READ = 0x01, 0x02
_DMA_TO_DEVICE = 1
_PROBE = "conformance-probe"


@attrs.frozen
class RunPoint:
    """One machine of the matrix."""

    guest_kernel: str
    smp: int
    seed: int


@attrs.frozen
class PropertyVerdict:
    """One property over every run: passed, or the first counterexample and the command replaying it."""

    name: str
    ok: bool
    runs: int
    counterexample: str | None = None
    replay: str | None = None
    #: why the property does not apply to this policy (then ``ok`` and ``runs == 0``)
    skipped: str | None = None

    def line(self) -> str:
        if self.skipped is not None:
            return f"SKIP {self.name}: {self.skipped}"
        if self.ok:
            return f"PASS {self.name} ({self.runs} runs)"
        return f"FAIL {self.name}: {self.counterexample}; replay: {self.replay}"


@attrs.frozen
class PolicyReport:
    """``check_policy``'s answer: a verdict per property (in ``PROPERTIES`` order) and what was measured."""

    ref: str
    runs: tuple[RunPoint, ...]
    verdicts: tuple[PropertyVerdict, ...]
    #: the declared bound (``stale_bound_ps``) and the longest device-side stale window measured, in ps
    stale_bound_ps: int | None
    max_stale_window_ps: int
    #: the longest unmap-to-IOVA-release time the policy's own statistics report, in ps
    max_release_ps: int

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def verdict(self, name: str) -> PropertyVerdict:
        return next(v for v in self.verdicts if v.name == name)

    def lines(self) -> list[str]:
        bound = "none" if self.stale_bound_ps is None else _ms(self.stale_bound_ps)
        runs = ", ".join(f"{r.guest_kernel}/smp{r.smp}/seed{r.seed}" for r in self.runs)
        return [f"policy {self.ref}: {len(self.runs)} runs ({runs})",
                *(v.line() for v in self.verdicts),
                f"stale window: declared bound {bound}, max measured {_ms(self.max_stale_window_ps)} (guest "
                f"unmap to device UNMAP completion); IOVA release max {_ms(self.max_release_ps)} (unmap to the "
                "end of its invalidation, the policy's statistics)"]


def _ms(ps: int) -> str:
    return f"{ps / 1e9:.4f} ms"


def replay_command(ref: str, point: RunPoint) -> str:
    return f"viommu-sim check-policy {ref} --guest-kernel {point.guest_kernel} --smp {point.smp} --seed {point.seed}"


def _defers(ref: str) -> bool:
    """Does the policy defer flushes (a DMA-FQ domain, which 6.7's virtio-iommu cannot have)?"""
    if ref in ("lazy", "strict"):
        return ref == "lazy"
    from models.guest import dma_domain_policy

    return dma_domain_policy("6.12", ref).type == "DMA-FQ"


def default_points(ref: str, guest_kernels: tuple[str, ...] | None = None, smps: tuple[int, ...] = (1, 4),
                   seeds: tuple[int, ...] = (0, 1)) -> tuple[RunPoint, ...]:
    kernels = guest_kernels or (("6.12",) if _defers(ref) else ("6.12", "6.7"))
    return tuple(RunPoint(k, n, s) for k in kernels for n in smps for s in seeds)


class _Watch:
    """The trace monitor of one run: guest unmaps, device UNMAP completions and IOVA frees, by page."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.pending: dict[tuple[int, int], tuple[int, int]] = {}  # (domain, page) -> (unmap time, cpu)
        self.unmap_cpu: dict[tuple[int, int, int], int] = {}  # (domain, iova, time) -> cpu
        self.problems: dict[str, list[str]] = {p: [] for p in PROPERTIES}
        sim.add_sink(CallbackSink(self._on))

    def _on(self, rec: TraceRecord) -> None:
        f = rec.fields
        if rec.event == "viommu_unmap_pages" and f["unmapped"]:
            self.unmap_cpu[(f["domain"], f["iova"], rec.time)] = f["cpu"]
            for page in range(f["iova"] // PAGE, (f["iova"] + f["unmapped"] - 1) // PAGE + 1):
                self.pending[(f["domain"], page)] = (rec.time, f["cpu"])
        elif rec.event == "virtio_iommu_unmap_done":
            for page in range(f["virt_start"] // PAGE, f["virt_end"] // PAGE + 1):
                self.pending.pop((f["domain_id"], page), None)
        elif rec.event == "free_iova_fast":
            for page in range(f["iova"] // PAGE, f["iova"] // PAGE + f["pages"]):
                hit = self.pending.get((f["domain"], page))
                if hit is not None:
                    queued, cpu = hit
                    self.problems["use-after-unmap"].append(
                        f"IOVA 0x{page * PAGE:x} in domain {f['domain']} freed for reuse on CPU {f['cpu']} at "
                        f"t={format_time(rec.time)} while its UNMAP (queued on CPU {cpu} at "
                        f"t={format_time(queued)}) had not completed at the device")
                    break


async def _io(p: Any, cpu: int, buf: int, count: int, failures: list[str]) -> None:
    for i in range(count):
        status = await p.nvme_driver.submit_io(cpu, _IO_READ if i % 2 else _IO_WRITE, 1, 8 * cpu, 8, buf)
        if status:
            failures.append(f"I/O {i} on CPU {cpu} at t={format_time(p.sim.now)} completed with status {status:#x}")


async def _burst(p: Any, bufs: list[int], failures: list[str]) -> None:
    tasks = [p.sim.spawn(_io(p, cpu, buf, BURST, failures), name=f"conformance.io{cpu}")
             for cpu, buf in enumerate(bufs)]
    for task in tasks:
        await task


def _run(ref: str, point: RunPoint) -> tuple[dict[str, list[str]], int | None, int, int]:
    """One machine: the problems found per property, the declared bound, the max stale windows."""
    from sim import Timer

    sim = Simulator(seed=point.seed)
    safety = DmaSafetyScoreboard(sim)
    ordering = OrderingScoreboard(sim)
    watch = _Watch(sim)
    out: dict[str, Any] = {}

    async def scenario() -> None:
        p = await boot_platform({"iommu_policy": ref, "guest_kernel": point.guest_kernel, "smp": point.smp,
                                 "seed": point.seed, "nvme": "emulated"}, sim)
        dma = p.nvme_driver.dma
        policy = dma.cookie.invalidation
        bound: int | None = policy.stale_bound_ps
        out["bound"] = bound
        pause = UNBOUNDED_PAUSE_PS if bound is None else bound + INVALIDATION_SLACK_PS
        bufs = [p.kernel.mm.alloc_pages(0) for _ in range(point.smp)]
        failures: list[str] = []
        probe = endpoint_dma_port(p.machine, _NVME_BDF, name=_PROBE)
        await _burst(p, bufs, failures)
        # a mapping of our own: reachable while mapped, then (strict) unreachable once unmapped
        iova = await dma.map_page(0, bufs[0], PAGE, _DMA_TO_DEVICE)
        if not attempt_dma(probe, iova, read=8).ok:
            watch.problems["map-ordering"].append(f"a DMA to IOVA 0x{iova:x}, mapped at t={format_time(sim.now)} "
                                                  "on CPU 0, faulted")
        rogue = attempt_dma(endpoint_dma_port(p.machine, _AHCI_BDF, name=_PROBE), iova, read=8)
        if rogue.ok:
            watch.problems["isolation"].append(f"00:1f.2 read IOVA 0x{iova:x} of the NVMe's domain at "
                                               f"t={format_time(sim.now)} (mapped on CPU 0)")
        await dma.unmap_page(0, iova, PAGE, _DMA_TO_DEVICE)
        if bound == 0 and attempt_dma(probe, iova, read=8).ok:
            watch.problems["strict-unmap"].append(f"a DMA to IOVA 0x{iova:x} at t={format_time(sim.now)}, right "
                                                  "after dma_unmap_page returned on CPU 0, was not blocked")
        unmapped_at = sim.now
        await Timer(pause)
        if bound is not None and attempt_dma(probe, iova, read=8).ok:
            watch.problems["stale-window"].append(
                f"IOVA 0x{iova:x}, unmapped on CPU 0 at t={format_time(unmapped_at)}, still reachable at "
                f"t={format_time(sim.now)}, beyond the declared {format_time(bound)} + slack")
        await _burst(p, bufs, failures)
        await Timer(pause)
        watch.problems["lost-completions"] += failures
        for (domain, page), (queued, cpu) in sorted(watch.pending.items())[:1]:
            watch.problems["lost-completions"].append(
                f"the UNMAP of IOVA 0x{page * PAGE:x} in domain {domain}, queued on CPU {cpu} at "
                f"t={format_time(queued)}, had not completed at t={format_time(sim.now)}")
        out["release"] = policy.statistics().stale_max_ps

    task = sim.spawn(scenario(), name="conformance")
    sim.run_sync(until=task)
    task.result()
    problems = watch.problems
    problems["use-after-unmap"] += [e for e in safety.violations if _PROBE not in e]
    problems["use-after-unmap"] += [e for e in ordering.errors if e.startswith("IOVA reused")]
    ordering.check = lambda: None  # type: ignore[method-assign]  # its reuse verdict is taken above
    problems["map-ordering"] += [e for e in ordering.errors if not e.startswith("IOVA reused")]
    bound = out["bound"]
    worst = 0
    for domain, iova, queued, done in safety.stale_windows:
        worst = max(worst, done - queued)
        if bound is not None and done - queued > bound + INVALIDATION_SLACK_PS:
            cpu = watch.unmap_cpu.get((domain, iova, queued), "?")
            problems["stale-window"].append(
                f"IOVA 0x{iova:x} in domain {domain}: unmapped on CPU {cpu} at t={format_time(queued)}, UNMAP "
                f"completed at t={format_time(done)}, {format_time(done - queued)} > declared "
                f"{format_time(bound)} + {format_time(INVALIDATION_SLACK_PS)}")
    return problems, bound, worst, out["release"]


def check_policy(ref: str, *, guest_kernels: tuple[str, ...] | None = None, smps: tuple[int, ...] = (1, 4),
                 seeds: tuple[int, ...] = (0, 1)) -> PolicyReport:
    """Run the conformance suite against the policy ``ref`` (a built-in name or a class reference).

    A bad reference raises ``models.ConfigError`` naming ``--iommu-policy``, as the CLI does."""
    from models import MachineConfig

    MachineConfig(iommu_policy=ref)  # a bad reference: one ConfigError before anything runs
    points = default_points(ref, guest_kernels, smps, seeds)
    first: dict[str, tuple[str, RunPoint]] = {}
    bound: int | None = None
    worst = release = 0
    for point in points:
        problems, bound, run_worst, run_release = _run(ref, point)
        worst, release = max(worst, run_worst), max(release, run_release)
        for name in PROPERTIES:
            if problems[name] and name not in first:
                first[name] = (problems[name][0], point)
    skip = {"strict-unmap": f"the policy declares a stale bound of {_ms(bound)}, not 0"} if bound else {}
    if bound is None:
        skip["stale-window"] = "the policy declares no bound"
    verdicts = tuple(
        PropertyVerdict(name, True, 0, skipped=skip[name]) if name in skip
        else PropertyVerdict(name, True, len(points)) if name not in first
        else PropertyVerdict(name, False, len(points), first[name][0], replay_command(ref, first[name][1]))
        for name in PROPERTIES)
    return PolicyReport(ref, points, verdicts, bound, worst, release)
