"""Selecting an invalidation policy by reference: ``--iommu-policy PATH.py:Class`` / ``package.module:Class``.

A bad reference is one line naming ``--iommu-policy`` and the problem, exit 2, from the flag, a
scenario file's ``[machine] iommu_policy`` and ``platform(iommu_policy=...)``; a good one stays a
string in a frozen, hashable MachineConfig.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from models import ConfigError, MachineConfig
from viommu_sim.cli import main

GOOD = textwrap.dedent("""
    from models.guest import POLICY_API_VERSION, FreeIova, IotlbSync, InvalidationCounters

    class Sync:
        api_version = POLICY_API_VERSION
        stale_bound_ps = 0
        deferred_flush = False

        def __init__(self, ctx):
            self.pending = {}
            self.c = InvalidationCounters()

        def unmap(self, cpu, pfn, pages, now_ps):
            token = len(self.pending) + self.c.finished + 1
            self.pending[token] = (cpu, pfn, pages)
            return [IotlbSync(token)]

        def timer_expired(self, now_ps):
            return []

        def flush_done(self, token, now_ps):
            self.c.finished += 1
            return [FreeIova(*self.pending.pop(token))]

        def statistics(self):
            return self.c.snapshot()
""")


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _bad_references(tmp_path: Path) -> list[tuple[str, str]]:
    good = _write(tmp_path, "good.py", GOOD)
    return [
        (f"{tmp_path}/missing.py:Sync", f"no such file '{tmp_path}/missing.py'"),
        (_write(tmp_path, "syntax.py", "class Sync(:\n") + ":Sync", f"syntax error in {tmp_path}/syntax.py line 1: "
         "invalid syntax"),
        (f"{good}:Nope", f"no class 'Nope' in {good}"),
        (_write(tmp_path, "half.py", "class Half:\n    api_version = 1\n    def unmap(self): ...\n") + ":Half",
         "Half does not implement the invalidation-policy protocol (no timer_expired, flush_done, statistics)"),
        (_write(tmp_path, "old.py", GOOD.replace("api_version = POLICY_API_VERSION", "api_version = 0")) + ":Sync",
         "Sync is written for policy API version 0, this simulator implements version 1"),
        (_write(tmp_path, "notclass.py", "Sync = 3\n") + ":Sync", "Sync is not a class"),
        ("no_such_package.policies:Sync", "no module named 'no_such_package'"),
        ("not a module:Sync", "expected PATH.py:Class or package.module:Class"),
    ]


def test_every_bad_reference_is_one_line_naming_the_problem_and_exit_2(tmp_path, capsys):
    for ref, problem in _bad_references(tmp_path):
        assert main(["run", "--iommu-policy", ref]) == 2, ref
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"viommu-sim run: error: --iommu-policy: policy {ref!r}: {problem}\n"


def test_a_bad_name_without_a_colon_lists_the_built_ins_and_the_help_the_reference_forms(capsys):
    assert main(["boot", "--iommu-policy", "deferred"]) == 2
    assert capsys.readouterr().err == (
        "viommu-sim boot: error: --iommu-policy: invalid value 'deferred' (choose from lazy, strict)\n")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "or a policy class: PATH.py:Class or package.module:Class" in " ".join(capsys.readouterr().out.split())


def test_a_scenario_file_and_the_config_refuse_a_bad_reference_with_the_same_message(tmp_path, capsys):
    ref = f"{tmp_path}/missing.py:Sync"
    scenario = _write(tmp_path, "s.toml", f'[machine]\niommu_policy = "{ref}"\n')
    assert main(["run", "--scenario", scenario]) == 2
    assert capsys.readouterr().err == (
        f"viommu-sim run: error: --iommu-policy: policy {ref!r}: no such file '{tmp_path}/missing.py'\n")
    with pytest.raises(ConfigError, match="no such file") as err:
        MachineConfig(iommu_policy=ref)
    assert err.value.option == "--iommu-policy"


def test_a_good_reference_stays_a_string_in_a_frozen_hashable_config(tmp_path):
    ref = _write(tmp_path, "good.py", GOOD) + ":Sync"
    a, b = MachineConfig(iommu_policy=ref), MachineConfig(iommu_policy=ref)
    assert a.iommu_policy == ref and a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1


def test_a_package_module_reference_runs_like_a_file_reference(tmp_path, monkeypatch, capsys):
    package = tmp_path / "site_policies"
    package.mkdir()
    (package / "__init__.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["run", "--json", "--guest-kernel", "6.12", "--ios", "20", "--iommu-policy", "site_policies:Sync"]) == 0
    mine = capsys.readouterr().out
    assert main(["run", "--json", "--guest-kernel", "6.12", "--ios", "20", "--iommu-policy", "strict"]) == 0
    assert mine.replace("site_policies:Sync", "strict") == capsys.readouterr().out


def test_a_reference_runs_through_the_whole_stack_and_is_echoed(tmp_path, capsys):
    """A user's strict-like policy class: every unmap synced, the run's figures those of the built-in strict."""
    ref = _write(tmp_path, "good.py", GOOD) + ":Sync"
    assert main(["run", "--json", "--guest-kernel", "6.12", "--ios", "50", "--iommu-policy", ref]) == 0
    mine = capsys.readouterr().out
    assert main(["run", "--json", "--guest-kernel", "6.12", "--ios", "50", "--iommu-policy", "strict"]) == 0
    strict = capsys.readouterr().out
    assert mine.replace(ref, "strict") == strict


@pytest.mark.trio
async def test_platform_takes_a_reference_and_refuses_a_bad_one(tmp_path):
    from sim import Simulator
    from testbench._platform import boot_platform

    with pytest.raises(ConfigError, match=r"^--iommu-policy: policy .*: no such file"):
        await boot_platform({"iommu_policy": f"{tmp_path}/missing.py:Sync"}, Simulator(seed=0))
