"""Per-test seeds: base + stable_hash(node id), reported with a replay command that reproduces them."""

import os
import re
import subprocess

import pytest

import testbench
from sim import stable_hash

SOURCE = """
import testbench

@testbench.test
async def test_a(sim):
    assert False, f"SEED={sim.seed} CURRENT={testbench.current_seed()} DRAW={sim.rng('stimulus').getrandbits(32)}"

@testbench.test
@testbench.parametrize(policy=["lazy", "strict"])
async def test_b(sim, policy):
    assert False, f"SEED={sim.seed} CURRENT={testbench.current_seed()} DRAW={sim.rng('stimulus').getrandbits(32)}"

def test_plain_sync():
    assert False, f"SEED={testbench.current_seed()} CURRENT={testbench.current_seed()} DRAW=0"

def test_plain_without_seed():
    assert False, "no seed used"
"""


def seeds(output: str) -> dict[str, tuple[int, int, int]]:
    """node id -> (SEED, CURRENT, DRAW) from the failure blocks of a run (not the short summary,
    which repeats the messages when pytest runs with CI set)."""
    found = {}
    failures = output.split("short test summary info")[0]
    for block in re.split(r"\n_{3,} ", failures)[1:]:
        m = re.search(r"SEED=(\d+) CURRENT=(\d+) DRAW=(\d+)", block)
        if m:
            found[block.split(" ", 1)[0]] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return found


def test_seed_is_the_base_plus_the_stable_hash_of_the_node_id(pytester):
    """Each test's Simulator, and current_seed(), get base + stable_hash(node id); tests differ from each other."""
    pytester.makepyfile(test_seeded=SOURCE)
    out = pytester.runpytest("-p", "no:cacheprovider", "--viommu-seed", "1000").stdout.str()
    got = seeds(out)
    names = ["test_a", "test_b[policy=lazy]", "test_b[policy=strict]", "test_plain_sync"]
    assert sorted(got) == sorted(names)
    for name in names:
        expected = 1000 + stable_hash(f"test_seeded.py::{name}")
        assert got[name][:2] == (expected, expected), name
    assert len({s for s, _, _ in got.values()}) == 4


def test_seed_of_a_test_does_not_depend_on_which_tests_run(pytester):
    """Selecting one test alone gives it the same seed and the same random draws as the full run."""
    pytester.makepyfile(test_seeded=SOURCE)
    full = seeds(pytester.runpytest("-p", "no:cacheprovider").stdout.str())
    alone = seeds(pytester.runpytest("-p", "no:cacheprovider", "test_seeded.py::test_b[policy=strict]").stdout.str())
    assert alone == {"test_b[policy=strict]": full["test_b[policy=strict]"]}
    assert full["test_a"][0] == stable_hash("test_seeded.py::test_a")  # default base seed is 0


def test_failure_prints_a_replay_command_that_reproduces_the_seed(pytester):
    """Pasting the printed line into a shell (other directory, other PYTHONHASHSEED) reruns that one test with the same seed."""
    pytester.makepyfile(test_seeded=SOURCE)
    first = pytester.runpytest("-p", "no:cacheprovider", "--viommu-seed", "41").stdout.str()
    block = re.search(r"- viommu-sim seed -+\n(test seed .*)\nreplay: (.*test_b\[policy=lazy\].*)\n", first)
    assert block is not None, first
    seed_line, command = block.groups()
    expected = 41 + stable_hash("test_seeded.py::test_b[policy=lazy]")
    assert seed_line == (
        f"test seed {expected} = base seed 41 (--viommu-seed) + stable_hash('test_seeded.py::test_b[policy=lazy]')"
    )
    assert command.endswith(" -m pytest 'test_seeded.py::test_b[policy=lazy]' --viommu-seed 41")

    env = dict(os.environ, PYTHONHASHSEED="12345")
    replay = subprocess.run(command, shell=True, cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert "1 failed" in replay.stdout, replay.stdout + replay.stderr
    assert seeds(replay.stdout) == {"test_b[policy=lazy]": seeds(first)["test_b[policy=lazy]"]}
    assert seed_line in replay.stdout


def test_seed_block_is_printed_only_for_tests_that_used_the_seed(pytester):
    """A failing plain test that never touched the seed gets no seed block."""
    pytester.makepyfile(test_seeded=SOURCE)
    out = pytester.runpytest("-p", "no:cacheprovider", "test_seeded.py::test_plain_without_seed").stdout.str()
    assert "no seed used" in out
    assert "viommu-sim seed" not in out


def test_current_seed_outside_a_test_is_refused(monkeypatch):
    """current_seed() with no test running says where it can be used."""
    monkeypatch.setattr(testbench._seed, "_active", None)
    with pytest.raises(RuntimeError, match="only available while a pytest test runs"):
        testbench.current_seed()
