"""Fuzzing the CLI and its input files (issue #17): argument lists, scenario/matrix TOML, replay inputs.

The promises asserted on every example:

* ``viommu_sim.cli.main(argv)`` (in this process, stdout/stderr captured, SystemExit caught)
  ends with exit 0 and a real result on stdout, or exit 2 with exactly one line on stderr and
  nothing on stdout; no exception escapes (no traceback);
* the replay reader (``_replay_input.requests``, what ``viommu-sim replay`` streams) yields
  requests whose fields fit their widths, or raises ``ReplayInputError`` with a one-line
  problem; ``viommu-sim replay`` of such a text is exit 0 with one status line per request, or
  exit 2 and one line;
* a scenario or matrix TOML text loads and checks (``run``'s loader with MachineConfig, the job
  check and the cost model; ``sweep``'s ``load_matrix``) or is refused in one line.

The simulations run here are small (lspci, demo, replays of a few requests); the default profile
keeps the whole file to a few seconds.  ``VIOMMU_FUZZ=long`` (tests/fuzz/conftest.py) runs 10^5
examples of the parser and TOML properties.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import U32, U64, ConfigError, CostModel, machine_config
from viommu_sim._cmd_run import _load_scenario
from viommu_sim._job import job_options
from viommu_sim._options import UsageError
from viommu_sim._replay_input import ReplayInputError, parse_replay
from viommu_sim._sweep import SweepError, load_matrix
from viommu_sim.cli import main

LONG = os.environ.get("VIOMMU_FUZZ") == "long"
#: the long profile's examples per fast property (VIOMMU_FUZZ_EXAMPLES overrides the nightly 10^5)
LONG_EXAMPLES = int(os.environ.get("VIOMMU_FUZZ_EXAMPLES", "100000"))
_SLOW = settings(max_examples=1000 if LONG else 8, deadline=None, derandomize=not LONG,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_FAST = settings(max_examples=LONG_EXAMPLES if LONG else 100, deadline=None, derandomize=not LONG, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large])


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    out, err = capsys.readouterr()
    return code, out, err


def assert_promise(code: int, out: str, err: str) -> None:
    """Exit 0 with a result, or exit 2 with one line on stderr and nothing on stdout."""
    if code == 0:
        assert out.strip(), "exit 0 with nothing done"
    else:
        assert code == 2, (code, err)
        assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err


# -- replay input ---------------------------------------------------------------------------------

_INT = st.one_of(st.integers(-2, 2**64 + 2), st.integers(), st.sampled_from([0, 1, U32, U64, 2**4000]))
_VALUE = st.one_of(_INT, st.text(max_size=12), st.booleans(), st.none(), st.floats(allow_nan=False),
                   st.sampled_from(["0x1000", "0xfff7b000", "-1", "0x", "1e3"]), st.lists(st.integers(), max_size=2))
_FIELD = st.sampled_from(["op", "domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags", "bogus"])
_OP = st.sampled_from(["attach", "detach", "map", "unmap", "probe", "remap", 3])


@st.composite
def jsonl_line(draw: st.DrawFn) -> str:
    import json

    fields = {"op": draw(_OP), **draw(st.dictionaries(_FIELD, _VALUE, max_size=6))}
    try:
        text = json.dumps(fields)
    except ValueError:  # an int past Python's str conversion limit
        text = '{"op": "map", "domain": ' + "9" * 5000 + "}"
    return draw(st.sampled_from([text, text[: len(text) // 2], "[" + text + "]", " " + text]))


_EVENT = st.sampled_from(["virtio_iommu_attach", "virtio_iommu_detach", "virtio_iommu_map", "virtio_iommu_unmap",
                          "virtio_iommu_kick", "virtio_iommu_translate", "pci_nvme_read"])
_ARG = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["domain", "endpoint", "virt_start", "virt_end",
                                                           "phys_start", "flags", "vq"]),
                 st.one_of(st.integers(-2**33, 2**65).map(str), st.integers(0, 2**64).map(hex),
                           st.text(alphabet="0123456789abcdefxz-", max_size=8)))


@st.composite
def qemu_line(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "16496@1795635730.227783:", "1@2:"]))
    return prefix + draw(_EVENT) + " " + " ".join(draw(st.lists(_ARG, max_size=6)))


replay_text = st.builds(
    lambda bom, lines: ("\ufeff" if bom else "") + "\n".join(lines) + "\n",
    st.booleans(),
    st.one_of(st.lists(jsonl_line(), max_size=6), st.lists(qemu_line(), max_size=6),
              st.lists(st.one_of(jsonl_line(), qemu_line(), st.text(max_size=20)), max_size=6)),
)


def _fits(req: object) -> bool:
    return all(0 <= getattr(req, n) <= (U32 if n in ("domain", "endpoint", "flags") else U64)
               for n in ("domain", "endpoint", "virt_start", "virt_end", "phys_start", "flags"))


@_FAST
@given(replay_text)
def test_replay_reader_yields_fitting_requests_or_one_line(text: str) -> None:
    try:
        reqs = parse_replay(text)
    except ReplayInputError as exc:
        assert exc.line >= 1 and "\n" not in exc.problem and len(exc.problem) < 300
        return
    assert all(_fits(r) for r in reqs)


@_SLOW
@given(replay_text)
def test_replay_command_prints_each_status_or_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                       capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = tmp_path_factory.mktemp("replay") / "in.log"
    path.write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, ["replay", str(path)])
    assert_promise(code, out, err)
    if code == 0:
        assert len(out.splitlines()) == len(parse_replay(text))


# -- scenario and matrix TOML ---------------------------------------------------------------------

_TOML_VALUE = st.one_of(
    st.integers(-5, 300), st.integers(), st.sampled_from(["0", "4k", "64G", "512M", "lazy", "6.12", "vfio", ""]),
    st.text(max_size=8), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 8), max_size=3), st.lists(st.text(max_size=4), max_size=2),
)
_MACHINE_KEYS = st.sampled_from(["smp", "memory", "nvme", "aw_bits", "viommu", "flavor", "guest_kernel",
                                 "initcall_blacklist", "host_iommu_pgsizes", "flush_queue", "map_batching",
                                 "iommu_policy", "seed", "bogus"])
_JOB_KEYS = st.sampled_from(["rw", "bs", "iodepth", "numjobs", "ios", "runtime", "size", "ramp_time",
                             "contig_pages", "rwmixread", "seed", "depth"])
_COST_KEYS = st.sampled_from(["nvme_bandwidth_bytes_per_s", "vmexit_mmio_ps", "vfio_map_ioctl_ps", "bogus_ps"])
_AXIS_VALUE = st.one_of(st.lists(st.sampled_from(["lazy", "strict", "6.7", "6.12", "x"]), max_size=3),
                        st.lists(st.integers(-1, 2**65), max_size=3), _TOML_VALUE)


def toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value) if not isinstance(value, float) else repr(value)
    assert isinstance(value, list)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def toml_table(name: str, body: dict[str, object]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in body.items())


scenario_text = st.builds(
    lambda m, j, c, junk: toml_table("machine", m) + toml_table("job", j) + toml_table("cost", c) + junk,
    st.dictionaries(_MACHINE_KEYS, _TOML_VALUE, max_size=4), st.dictionaries(_JOB_KEYS, _TOML_VALUE, max_size=4),
    st.dictionaries(_COST_KEYS, _TOML_VALUE, max_size=2),
    st.sampled_from(["", "[extra]\n", "x = [[[[1]]]]\n", "broken = \n", "a = " + "[" * 3000 + "]" * 3000 + "\n"]),
)
matrix_text = st.builds(
    lambda axes, m, j: toml_table("axes", axes) + toml_table("machine", m) + toml_table("job", j),
    st.dictionaries(st.sampled_from(["policy", "guest_kernel", "iodepth", "seed", "seeds", "bogus"]), _AXIS_VALUE,
                    max_size=5),
    st.dictionaries(_MACHINE_KEYS, _TOML_VALUE, max_size=2), st.dictionaries(_JOB_KEYS, _TOML_VALUE, max_size=2),
)


def _one_line(message: str) -> None:
    assert message and "\n" not in message and len(message) < 400, message


@_FAST
@given(scenario_text)
def test_scenario_toml_loads_and_checks_or_is_one_line(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("scenario") / "s.toml"
    path.write_text(text)
    try:
        sc = _load_scenario(str(path))
        try:
            cost = CostModel().evolve(**sc["cost"])
        except (ValueError, TypeError) as exc:
            _one_line(str(exc))
            return
        machine_config(sc["machine"], cost=cost)
        job_options(sc["job"])
    except (UsageError, ConfigError) as exc:
        _one_line(str(exc))


@_FAST
@given(matrix_text)
def test_matrix_toml_loads_and_checks_or_is_one_line(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("matrix") / "m.toml"
    path.write_text(text)
    try:
        load_matrix(Path(path))
    except SweepError as exc:
        _one_line(str(exc))


# -- argument lists -------------------------------------------------------------------------------

_FLAG_VALUE = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(
    ["0", "1", "2", "255", "256", "288", "128M", "512M", "64G", "16T", "17T", "0x1000", "0x2000", "0x40201000",
     "lazy", "strict", "6.7", "6.12", "vfio", "emulated", "none", "on", "qemu", "spec", "percpu", "auto",
     "", "-", "x", "9" * 50]), st.text(max_size=6))
_MACHINE_FLAGS = st.sampled_from(["--smp", "--memory", "--nvme", "--aw-bits", "--seed", "--viommu",
                                  "--host-iommu-pgsizes", "--bogus"])


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(["lspci", "demo", "boot", "run", "replay", "sweep", "nope", ""]))
    args: list[str] = [command] if command else []
    if command == "demo":
        args += draw(st.sampled_from([[], ["--requests"], ["--seed"]]))
        if len(args) == 2:
            args.append(draw(st.one_of(st.integers(-2, 30).map(str), st.text(max_size=4))))
        return args
    for _ in range(draw(st.integers(0, 3))):
        args += [draw(_MACHINE_FLAGS), draw(_FLAG_VALUE)]
    if command in ("boot", "run", "replay", "sweep"):
        # these would run a whole simulation: always add a bad token, so each example ends in argparse
        # or the option check (the promise is the one line)
        args += draw(st.sampled_from([["--smp", "0"], ["--memory", "1K"], ["--bogus"], ["--viommu", "x"]]))
    return args


@_SLOW
@given(argv())
def test_any_argument_list_is_a_result_or_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = run_cli(capsys, args)
    if args == [] and code == 2:  # no command: the help on stdout, as argparse prints it
        assert out.startswith("usage:")
        return
    assert_promise(code, out, err)
