"""Parameter sweeps: run one workload scenario over a matrix of machines and collect the results.

A ``Matrix`` is the Cartesian product of four axes -- IOMMU policy (kernel command line
``iommu.strict``), guest kernel, fio ``iodepth`` and simulation seed -- over fixed ``[machine]``,
``[job]`` and ``[cost]`` tables.  ``points(matrix)`` lists its points in a deterministic order, each
with a stable key; ``run_sweep`` runs every point through ``run_scenario`` on a local process pool or
on a Dask distributed cluster and writes, into one output directory:

* ``matrix.json``  -- the matrix (a rerun of a different matrix into the directory is refused);
* ``points.jsonl`` -- the journal: one JSON line per finished point, appended and fsync'ed as each
  point finishes, so an interrupted sweep resumes where it stopped;
* ``results.csv``  -- one row per run (the axes, the effective policy, the run's metrics, the
  machine and job options it used), rows in point order, so a local and a Dask run of one matrix
  give byte-identical files (``_sweep_report``);
* ``summary.csv``  -- one row per policy x kernel x iodepth: mean, standard deviation and Student-t
  95 % interval over the seeds of bandwidth, IOPS and mean and p99 latency (``_sweep_report``);
* ``chart.png``    -- bandwidth and mean latency against iodepth with the intervals as error bars,
  one line per policy x kernel (``_sweep_chart``).

The matrix compares values, not spellings: the ``[machine]`` and ``[job]`` values are normalised
when it is built (``bs = "64K"`` and ``"64k"`` are both 65536, ``memory = "64G"`` is 68719476736),
so a rerun that spells a value differently resumes the same sweep.  The seed axis is the machine
seed, the run's one seed (everything random in a run comes from it).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from models import ConfigError, CostModel, MachineConfig, machine_options

from ._job import job_options
from ._options import UsageError, load_toml
from ._sweep_chart import render_chart
from ._sweep_report import render_csv, render_summary
from ._sweep_signals import SweepInterrupted, interruption, recording, worker_signals
from ._workload import run_scenario

Summary = dict[str, Any]
Runner = Callable[[dict[str, Any], dict[str, Any], "dict[str, Any] | None"], Summary]
#: ``progress(done, total, point)``: called once before the first point runs (``point`` None,
#: ``done`` = points already in the journal), then after each point finishes.
Progress = Callable[[int, int, "Point | None"], None]

#: the axes, in CSV column order; the flag that spells each (error messages name it)
AXES = ("policy", "guest_kernel", "iodepth", "seed")
_AXIS_FLAG = {"policy": "--policy", "guest_kernel": "--guest-kernel", "iodepth": "--iodepth", "seed": "--seed-list"}
MATRIX_FILE = "matrix.json"
JOURNAL_FILE = "points.jsonl"
CSV_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
CHART_FILE = "chart.png"
#: the most values one axis may take, and the most points a matrix may have
MAX_AXIS_VALUES = 4096
MAX_POINTS = 100_000
_SEED_MAX = 2**64 - 1


class SweepError(Exception):
    """A bad matrix, a refused output directory or a failed point: one line for the user."""


class SweepFailed(SweepError):
    """A point raised, or the run timed out: the finished points are kept for a rerun."""


class _PointFailed(Exception):
    def __init__(self, point: Point, exc: BaseException) -> None:
        self.point, self.exc = point, exc


def _axis(name: str, values: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes, Mapping)):
        raise SweepError(f"{_AXIS_FLAG[name]}: must be a list of values, not {_shown(values)}")
    values = tuple(values)
    flag = _AXIS_FLAG[name]
    if not values:
        raise SweepError(f"{flag}: needs at least one value")
    if len(values) > MAX_AXIS_VALUES:
        raise SweepError(f"{flag}: {len(values)} values (at most {MAX_AXIS_VALUES})")
    for v in values:  # each value's type first: a list or table in an axis is not hashable
        if name in ("iodepth", "seed"):
            lo, hi = (1, 1024) if name == "iodepth" else (0, _SEED_MAX)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise SweepError(f"{flag}: invalid value {_shown(v)} (an integer from {lo} to {hi})")
        elif not isinstance(v, str):
            raise SweepError(f"{flag}: invalid value {_shown(v)} (a string)")
    if len(set(values)) != len(values):
        listed = ", ".join(map(str, values))
        raise SweepError(f"{flag}: duplicate value in {listed if len(listed) <= 80 else listed[:77] + '...'}")
    return values


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` for a one-line message, at most ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _table(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"[{name}]: must be a table, not {value!r}")
    return dict(value)


# the converters of Matrix's fields (one per field, so that a checker sees each field's type)
def _policy_axis(v: Iterable[str]) -> tuple[str, ...]:
    return _axis("policy", v)


def _kernel_axis(v: Iterable[str]) -> tuple[str, ...]:
    return _axis("guest_kernel", v)


def _iodepth_axis(v: Iterable[int]) -> tuple[int, ...]:
    return _axis("iodepth", v)


def _seed_axis(v: Iterable[int]) -> tuple[int, ...]:
    return _axis("seed", v)


def _machine_table(v: Mapping[str, Any] | None) -> dict[str, Any]:
    return _table("machine", v)


def _job_table(v: Mapping[str, Any] | None) -> dict[str, Any]:
    return _table("job", v)


def _cost_table(v: Mapping[str, Any] | None) -> dict[str, Any]:
    return _table("cost", v)


@attrs.frozen(kw_only=True)
class Point:
    """One run of the sweep: the axis values and its position in ``points(matrix)``."""

    index: int
    policy: str
    guest_kernel: str
    iodepth: int
    seed: int

    @property
    def key(self) -> str:
        """Stable name of the point (journal key, Dask key suffix): e.g. ``strict-6.12-qd16-s2``."""
        return f"{self.policy}-{self.guest_kernel}-qd{self.iodepth}-s{self.seed}"

    def axes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in AXES}


@attrs.frozen(kw_only=True, eq=True, hash=False)
class Matrix:
    """The sweep: four axes (each in the order given) over fixed machine, job and cost tables."""

    policy: tuple[str, ...] = attrs.field(converter=_policy_axis)
    guest_kernel: tuple[str, ...] = attrs.field(converter=_kernel_axis)
    iodepth: tuple[int, ...] = attrs.field(converter=_iodepth_axis)
    seed: tuple[int, ...] = attrs.field(converter=_seed_axis)
    machine: dict[str, Any] = attrs.field(factory=dict, converter=_machine_table)
    job: dict[str, Any] = attrs.field(factory=dict, converter=_job_table)
    cost: dict[str, Any] = attrs.field(factory=dict, converter=_cost_table)
    #: the level of detail the points run at (``MachineConfig.detail``): how, not what, is simulated,
    #: so it is no part of the matrix (not stored, not compared on a rerun); fast by default
    detail: str = attrs.field(default="fast", eq=False)

    def __attrs_post_init__(self) -> None:
        total = len(self.policy) * len(self.guest_kernel) * len(self.iodepth) * len(self.seed)
        if total > MAX_POINTS:
            raise SweepError(f"the matrix has {total} points (at most {MAX_POINTS})")
        try:
            json.dumps(self.to_json())
        except (TypeError, ValueError) as exc:
            raise SweepError(f"--matrix: a value is not a string, number, boolean, list or table: "
                             f"{str(exc)[:80]}") from None
        except RecursionError:
            raise SweepError("--matrix: a value is nested too deeply") from None
        for name in ("iommu_policy", "guest_kernel", "seed"):
            if name in self.machine:
                raise SweepError(f"[machine]: {name} is a sweep axis; set it in [axes]")
        if "detail" in self.machine:
            raise SweepError("[machine]: detail is how the sweep runs, not part of the matrix; give --detail")
        if self.detail not in ("full", "fast"):
            raise SweepError(f"--detail: invalid choice {_shown(self.detail)} (choose from full, fast)")
        unknown = sorted(set(self.machine) - {s.toml_key for s in machine_options()})
        if unknown:
            raise SweepError(f"[machine]: unknown option {unknown[0]!r}")
        if "iodepth" in self.job:
            raise SweepError("[job]: iodepth is a sweep axis; set it in [axes]")
        for depth in self.iodepth:
            try:
                checked = job_options({**self.job, "iodepth": depth})
            except ConfigError as exc:
                raise SweepError(str(exc)) from None
        # the values as the job reads them (bs "64K" -> 65536), so that spellings compare equal
        object.__setattr__(self, "job", {k: _plain(getattr(checked, k, v), v) for k, v in self.job.items()})
        try:
            cost = CostModel().evolve(**self.cost)
        except (ValueError, TypeError) as exc:
            raise SweepError(f"[cost]: {exc}") from None
        for policy, kernel in itertools.product(self.policy, self.guest_kernel):
            try:
                config = MachineConfig(**self.machine, iommu_policy=policy, guest_kernel=kernel, cost=cost)
            except ConfigError as exc:
                flag = {"--iommu-policy": "--policy"}.get(exc.option, exc.option)
                raise SweepError(f"{flag}: {str(exc).split(': ', 1)[1]}") from None
            except TypeError as exc:
                raise SweepError(f"[machine]: {exc}") from None
        # the values as the machine reads them (memory "64G" -> 68719476736)
        object.__setattr__(self, "machine", {k: _plain(getattr(config, k), v) for k, v in self.machine.items()})

    def to_json(self) -> dict[str, Any]:
        """The canonical form stored in ``matrix.json`` (and compared on a rerun)."""
        return {
            "axes": {name: list(getattr(self, name)) for name in AXES},
            "machine": self.machine,
            "job": self.job,
            "cost": self.cost,
        }

    def scenario(self, point: Point) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """The ``run_scenario(machine, job, cost)`` arguments of one point."""
        machine = {**self.machine, "iommu_policy": point.policy, "guest_kernel": point.guest_kernel,
                   "seed": point.seed, "detail": self.detail}
        return machine, {**self.job, "iodepth": point.iodepth}, (dict(self.cost) or None)


def _plain(value: Any, given: Any) -> Any:
    """A checked option value as JSON holds it (a tuple as a list); ``given`` if JSON has no such value."""
    if isinstance(value, tuple):
        value = list(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return value
    return given


def _normalised(doc: Any) -> Any:
    """A stored ``matrix.json`` as this version builds it (values normalised), or as it is if it
    is no matrix this version can build."""
    try:
        return Matrix(**{name: doc["axes"][name] for name in AXES}, machine=doc.get("machine"),
                      job=doc.get("job"), cost=doc.get("cost")).to_json()
    except (SweepError, TypeError, KeyError, AttributeError):
        return doc


def load_matrix(path: str | os.PathLike[str], **axes: Sequence[Any] | None) -> Matrix:
    """Read a TOML matrix file: ``[axes]`` (policy, guest_kernel, iodepth, and seeds = N or
    seed = [...]) and the fixed ``[machine]``, ``[job]``, ``[cost]`` tables.  Keyword axes that
    are not None replace the file's."""
    try:
        doc = load_toml(os.fspath(path), "--matrix: ")
    except UsageError as exc:
        raise SweepError(str(exc)) from None
    unknown = sorted(set(doc) - {"axes", "machine", "job", "cost"})
    if unknown:
        raise SweepError(f"--matrix: {path}: unknown table [{unknown[0]}] (axes, machine, job, cost)")
    table = _table("axes", doc.get("axes"))
    unknown = sorted(set(table) - {"policy", "guest_kernel", "iodepth", "seed", "seeds"})
    if unknown:
        raise SweepError(f"--matrix: {path}: unknown axis {unknown[0]!r} (policy, guest_kernel, iodepth, seeds, seed)")
    if "seeds" in table and "seed" in table:
        raise SweepError(f"--matrix: {path}: give [axes] seeds = N or seed = [...], not both")
    if "seeds" in table:
        n = table.pop("seeds")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SweepError(f"--matrix: {path}: [axes] seeds must be a positive integer, not {_shown(n)}")
        if n > MAX_AXIS_VALUES:
            raise SweepError(f"--matrix: {path}: [axes] seeds = {n} (at most {MAX_AXIS_VALUES})")
        table["seed"] = list(range(n))
    for name in AXES:
        if axes.get(name) is not None:
            table[name] = axes[name]
        elif name not in table:
            raise SweepError(f"--matrix: {path}: [axes] has no {name}")
        elif not isinstance(table[name], list):
            raise SweepError(f"--matrix: {path}: [axes] {name} must be a list")
    return Matrix(**{name: table[name] for name in AXES}, machine=doc.get("machine"), job=doc.get("job"),
                  cost=doc.get("cost"))


def points(matrix: Matrix) -> list[Point]:
    """Every point of the matrix: policy-major, then kernel, iodepth, seed, each axis in its given order."""
    product = itertools.product(matrix.policy, matrix.guest_kernel, matrix.iodepth, matrix.seed)
    return [Point(index=i, policy=p, guest_kernel=k, iodepth=q, seed=s) for i, (p, k, q, s) in enumerate(product)]


@attrs.frozen(kw_only=True)
class SweepResult:
    """What ``run_sweep`` did: points in all, run now, found done; the files it wrote."""

    total: int
    ran: int
    skipped: int
    csv: Path
    summary: Path
    chart: Path | None


#: the simulation kernel keeps its running-simulator stack in a module global, so two simulations
#: must not run in threads of one process at once (a Dask worker's threads): they take turns
_ONE_SIMULATION = threading.Lock()


def run_point(runner: Runner, machine: dict[str, Any], job: dict[str, Any], cost: dict[str, Any] | None) -> Summary:
    """Run one point (in a pool process or a Dask worker thread); the summary must survive JSON."""
    with _ONE_SIMULATION:
        summary: Summary = json.loads(json.dumps(runner(machine, job, cost)))
        return summary


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_or_fail(path: Path, data: bytes) -> None:
    """``_write_atomic``; a failed write (a full disk) is a one-line SweepFailed naming the file."""
    try:
        _write_atomic(path, data)
    except OSError as exc:
        raise SweepFailed(f"--out: cannot write {path}: {exc.strerror}") from None


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    for section in ("axes", "machine", "job", "cost"):
        a, b = old.get(section, {}), new.get(section, {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                return f"{section}.{name}"
    return "format"


def _claim(out: Path, matrix: Matrix) -> None:
    """Record the matrix in ``out``, or refuse if ``out`` already holds another one (or is no directory)."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out: {out} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--out: cannot create {out}: {exc.strerror}") from None
    want = matrix.to_json()
    path = out / MATRIX_FILE
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (ValueError, OSError):
            have = {}
        if have != want and _normalised(have) != want:
            raise SweepError(f"{out} holds a sweep of a different matrix ({_diff(have, want)} differs); "
                             "use another --out directory")
        return
    if (out / JOURNAL_FILE).exists():
        raise SweepError(f"{out} has a {JOURNAL_FILE} but no {MATRIX_FILE}; use another --out directory")
    _write_or_fail(path, (json.dumps(want, indent=2) + "\n").encode())


def _load_journal(out: Path, by_key: Mapping[str, Point]) -> dict[str, Summary]:
    """Finished points from the journal; a torn last line (a crash mid-write) is dropped."""
    path = out / JOURNAL_FILE
    if not path.exists():
        return {}
    done: dict[str, Summary] = {}
    lines = path.read_bytes().splitlines(keepends=True)
    good: list[bytes] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not line.endswith(b"\n") or not isinstance(entry, dict) or entry.get("key") not in by_key:
            continue
        done[entry["key"]] = entry["summary"]
        good.append(line)
    if len(good) != len(lines):
        _write_atomic(path, b"".join(good))
    return done


def _run_local(runner: Runner, matrix: Matrix, todo: list[Point], workers: int,
               timeout: float | None) -> Iterable[tuple[Point, Summary]]:
    if workers <= 1:  # in this process, one after another
        for p in todo:
            try:
                summary = run_point(runner, *matrix.scenario(p))
            except Exception as exc:
                raise _PointFailed(p, exc) from exc
            yield p, summary
        return
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, initializer=worker_signals)
    finished = False
    try:
        futures = {pool.submit(run_point, runner, *matrix.scenario(p)): p for p in todo}
        for fut in concurrent.futures.as_completed(futures, timeout=timeout):
            error = fut.exception()
            if error is not None:
                raise _PointFailed(futures[fut], error) from error
            yield futures[fut], fut.result()
        finished = True
    finally:
        if not finished:  # a failed point, a timeout or ^C: do not wait for the points still running
            for proc in list(getattr(pool, "_processes", {}).values()):  # 3.14: pool.terminate_workers()
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(runner: Runner, matrix: Matrix, todo: list[Point], scheduler: str,
              timeout: float | None, connect_timeout: float) -> Iterable[tuple[Point, Summary]]:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SweepError("--scheduler: needs dask.distributed (pip install 'viommu-sim[dask]')") from None
    try:
        # dask.distributed's Client.__init__ has no annotations
        client = Client(scheduler, timeout=connect_timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"--scheduler: cannot connect to {scheduler}: {exc}") from None
    return _dask_results(client, as_completed, runner, matrix, todo, timeout)


def _dask_results(client: Any, as_completed: Any, runner: Runner, matrix: Matrix, todo: list[Point],
                  timeout: float | None) -> Iterable[tuple[Point, Summary]]:
    try:
        # task keys name the matrix too, so two sweeps on one cluster never share a result
        tag = hashlib.sha256(json.dumps(matrix.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        scenarios = [matrix.scenario(p) for p in todo]
        futures = client.map(run_point, [runner] * len(todo), *zip(*scenarios),
                             key=[f"viommu-sweep-{tag}-{p.key}" for p in todo])
        by_future = dict(zip((f.key for f in futures), todo))
        try:
            for fut in as_completed(futures, loop=client.loop, timeout=timeout):
                if fut.status == "error":
                    raise _PointFailed(by_future[fut.key], fut.exception())
                yield by_future[fut.key], fut.result()
        finally:
            client.cancel(futures)
    finally:
        client.close()


def run_sweep(matrix: Matrix, out_dir: str | os.PathLike[str], *, runner: Runner = run_scenario,
              workers: int | None = None, scheduler: str | None = None, progress: Progress | None = None,
              timeout: float | None = None, connect_timeout: float = 30) -> SweepResult:
    """Run every point of ``matrix`` not yet in ``out_dir``'s journal and write the CSV and chart.

    ``runner`` is called as ``runner(machine, job, cost)``; it must be picklable by reference (a
    module-level function or an instance of a module-level class: it goes to the pool processes
    or Dask workers).  ``workers`` (default: CPU count) sizes the local process
    pool; 1 runs the points in this process.  ``scheduler`` (a Dask scheduler address) runs them on
    that cluster instead (``connect_timeout`` seconds to connect).  ``timeout`` (seconds) bounds the
    whole run.  A point that raises stops
    the sweep with a ``SweepError`` naming it; the points finished so far stay in the journal.
    Ctrl-C (and SIGTERM or SIGHUP under ``stop_on_signals``) while points run raises
    ``SweepInterrupted`` (a KeyboardInterrupt) with the count of points in the journal.
    """
    out = Path(out_dir)
    _claim(out, matrix)
    pts = points(matrix)
    done = _load_journal(out, {p.key: p for p in pts})
    todo = [p for p in pts if p.key not in done]
    skipped = len(pts) - len(todo)
    if not todo:
        results: Iterable[tuple[Point, Summary]] = ()
    elif scheduler:
        results = _run_dask(runner, matrix, todo, scheduler, timeout, connect_timeout)
    else:
        results = _run_local(runner, matrix, todo, workers or os.cpu_count() or 1, timeout)
    if progress:
        progress(skipped, len(pts), None)
    try:
        with open(out / JOURNAL_FILE, "ab") as journal:
            for point, summary in results:
                line = json.dumps({"key": point.key, **point.axes(), "summary": summary}) + "\n"
                with recording():  # a stop signal waits until the point is in the journal and counted
                    journal.write(line.encode())
                    journal.flush()
                    os.fsync(journal.fileno())
                    done[point.key] = summary
                if progress:
                    progress(len(done), len(pts), point)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP under stop_on_signals
        raise SweepInterrupted(interruption(exc), len(done), len(pts)) from None
    except (TimeoutError, concurrent.futures.TimeoutError):
        raise SweepFailed(f"timed out after {timeout} s with {len(done)} of {len(pts)} points done; "
                         "rerun to resume") from None
    except OSError as exc:  # the journal: a full disk, a directory made read-only
        raise SweepFailed(f"--out: cannot write {out / JOURNAL_FILE}: {exc.strerror} ({len(done)} of {len(pts)} "
                         "points done; rerun to resume)") from None
    except _PointFailed as failed:
        msg = (str(failed.exc).splitlines() or [""])[0]
        raise SweepFailed(f"point {failed.point.key} failed: {type(failed.exc).__name__}: {msg} "
                         f"({len(done)} of {len(pts)} points done; rerun to resume)") from failed.exc
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # an interruption between two points: stop the workers now, not at exit
            close()
        _write_or_fail(out / CSV_FILE, render_csv(matrix, pts, done, AXES).encode())
        _write_or_fail(out / SUMMARY_FILE, render_summary(matrix, pts, done).encode())
    png = render_chart(matrix, pts, done)
    if png is not None:
        _write_or_fail(out / CHART_FILE, png)
    return SweepResult(total=len(pts), ran=len(todo), skipped=skipped, csv=out / CSV_FILE,
                       summary=out / SUMMARY_FILE, chart=out / CHART_FILE if png is not None else None)
