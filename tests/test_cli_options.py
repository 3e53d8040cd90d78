"""One source of truth for the options: MachineConfig's table and the job table spell every flag,
TOML key, ``platform()`` keyword and help text, and a bad value reads the same in each spelling."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
import pytest

from models._config import ConfigError, MachineConfig, machine_options
from models._cost import CostModel
from sim import Simulator
from testbench._platform import boot_platform
from viommu_sim._cmd_run import scenario_from_args
from viommu_sim._job import JOB_OPTIONS, job_options
from viommu_sim._options import config_from_args
from viommu_sim.cli import build_parser, main


def _run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def _run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["run"]
    return parser


def test_every_machine_field_has_a_flag_and_a_toml_key(tmp_path: Path) -> None:
    """Each MachineConfig field but ``cost`` is a ``run`` flag and a [machine] key; each CostModel field a [cost] key."""
    fields = [a.name for a in attrs.fields(MachineConfig) if a.name != "cost"]
    specs = {s.name: s for s in machine_options()}
    assert sorted(specs) == sorted(fields)
    flags = {opt: a.dest for a in _run_parser()._actions for opt in a.option_strings}
    for spec in specs.values():
        assert flags[spec.flag] == spec.name
    toml = "".join(f"{s.toml_key} = {s.default!r}\n".replace("()", "[]") for s in specs.values())
    cost = "".join(f"{a.name} = {a.default}\n" for a in attrs.fields(CostModel))
    f = tmp_path / "all.toml"
    f.write_text(f"[machine]\n{toml}[cost]\n{cost}")
    sc = scenario_from_args(_run_args("--scenario", str(f)))
    assert sorted(sc["machine"]) == sorted(fields)
    assert sorted(sc["cost"]) == sorted(a.name for a in attrs.fields(CostModel))


@pytest.mark.parametrize("spec", machine_options(), ids=lambda s: s.flag)
def test_machine_help_shows_the_real_default(spec: object) -> None:
    """The help text's default is the field's default: given on the command line it changes nothing."""
    assert spec.help.endswith(")") and f"(default {spec.default_text}" in spec.help  # type: ignore[attr-defined]
    argv = [] if spec.default_text == "none" else [spec.flag, spec.default_text]  # type: ignore[attr-defined]
    assert config_from_args(_run_args(*argv)) == MachineConfig()


@pytest.mark.parametrize("option", [o for o in JOB_OPTIONS if o.cli and o.default_text], ids=lambda o: o.flag)
def test_job_help_shows_the_real_default(option: object) -> None:
    """Each job flag's help default, given on the command line, is the job's default."""
    argv = [option.flag, option.default_text]  # type: ignore[attr-defined]
    assert f"(default {option.default_text})" in option.full_help  # type: ignore[attr-defined]
    assert job_options(scenario_from_args(_run_args(*argv))["job"]) == job_options({})


@pytest.mark.parametrize(("name", "flag_value", "toml_value", "message"), [
    ("smp", "0", "0", "--smp: invalid value 0 (an integer from 1 to 255)"),
    ("nvme", "nvmf", "'nvmf'", "--nvme: invalid value 'nvmf' (choose from vfio, emulated, none)"),
    ("memory", "12x", "'12x'", "--memory: invalid size '12x' (e.g. 64G, 2048M)"),
    ("flavor", "linux", "'linux'", "--flavor: invalid value 'linux' (choose from qemu, spec, cloud-hypervisor, crosvm)"),
])
def test_a_bad_value_reads_the_same_from_cli_toml_and_platform(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, flag_value: str, toml_value: str,
        message: str) -> None:
    """CLI flag, TOML key and platform() keyword: one line naming the flag, the same words."""
    flag = next(s.flag for s in machine_options() if s.name == name)
    assert main(["run", flag, flag_value]) == 2
    assert capsys.readouterr().err == f"viommu-sim run: error: {message}\n"
    f = tmp_path / "bad.toml"
    f.write_text(f"[machine]\n{name} = {toml_value}\n")
    assert main(["run", "--scenario", str(f)]) == 2
    assert capsys.readouterr().err == f"viommu-sim run: error: {message}\n"
    value = int(flag_value) if flag_value.isdigit() else flag_value
    coro = boot_platform({name: value}, Simulator(seed=0))
    with pytest.raises(ConfigError) as err:
        coro.send(None)
    assert str(err.value) == message


def test_platform_refuses_an_unknown_keyword_naming_it() -> None:
    """platform(smpp=2) is a ConfigError naming smpp, not a TypeError."""
    coro = boot_platform({"smpp": 2}, Simulator(seed=0))
    with pytest.raises(ConfigError, match=r"^smpp: unknown machine option \(known: smp, memory, "):
        coro.send(None)
