"""``--trace``'s arguments: ``-`` is standard output (the command's output goes to standard error),
an event pattern or an unusable path is one line and exit 2 with no file made, ``run --trace``
(viommu_sim/_tracing.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from viommu_sim.cli import main


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_glob_as_trace_path_is_one_line_and_makes_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "boot", "--trace", "virtio_iommu_*")
    assert (code, out, err) == (2, "", "viommu-sim boot: error: --trace virtio_iommu_*: an event pattern, not a "
                                "file (QEMU's -trace PATTERN): give the events with --trace-events "
                                "'virtio_iommu_*' and the file with --trace PATH\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("path", "reason"), [("{dir}", "Is a directory"),
                                              ("{dir}/missing/trace.log", "No such file or directory")])
def test_an_unwritable_trace_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str,
                                              reason: str) -> None:
    where = path.format(dir=tmp_path)
    code, out, err = _cli(capsys, "boot", "--trace", where, "--trace-format", "qemu")
    assert (code, out, err) == (2, "", f"viommu-sim boot: error: --trace: cannot write {where}: {reason}\n")


def test_trace_dash_is_standard_output_and_dmesg_goes_to_standard_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "boot", "--trace", "-", "--trace-events", "virtio_iommu_attach")
    assert code == 0
    assert [json.loads(line)["ev"] for line in out.splitlines()] == ["virtio_iommu_attach"] * 5
    assert err.startswith("[    0.540000] iommu: Default domain type: Translated\n") and "Adding to iommu group" in err


def test_replay_trace_dash_sends_statuses_and_state_to_standard_error(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "reqs.jsonl"
    log.write_text('{"op": "attach", "domain": 1, "endpoint": 16}\n')
    code, out, err = _cli(capsys, "replay", str(log), "--dump-state", "--trace", "-", "--trace-format", "qemu",
                          "--trace-events", "virtio_iommu_attach")
    assert code == 0 and re.fullmatch(r"4242@0\.\d{6}:virtio_iommu_attach domain=1 endpoint=16\n", out)
    assert [json.loads(line).get("status", "state") for line in err.splitlines()] == ["OK", "state"]


def test_trace_events_without_trace_or_naming_nothing_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(capsys, "boot", "--trace-events", "virtio_*") == (
        2, "", "viommu-sim boot: error: --trace-events needs --trace PATH (the file the selected events go to)\n")
    assert _cli(capsys, "boot", "--trace", "-", "--trace-events", "-") == (
        2, "", "viommu-sim boot: error: --trace-events: '-' names no event (a name, or a pattern with * and ?)\n")


def test_run_writes_a_trace_of_its_boot_and_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.log"
    code, stdout, _ = _cli(capsys, "run", "--ios", "16", "--json", "--trace", str(out), "--trace-format", "qemu",
                           "--trace-events", "virtio_iommu_map", "--trace-events", "virtio_iommu_unmap")
    assert code == 0 and json.loads(stdout)["ios"] == 16
    events = [line.split(":", 1)[1].split(" ", 1)[0] for line in out.read_text().splitlines()]
    assert set(events) == {"virtio_iommu_map", "virtio_iommu_unmap"}
    assert events.count("virtio_iommu_unmap") >= 16  # strict: every I/O's buffer is unmapped


def test_run_trace_with_repeat_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(capsys, "run", "--ios", "4", "--repeat", "2", "--trace", "-") == (
        2, "", "viommu-sim run: error: --trace with --repeat 2: a trace records one run (drop --repeat)\n")
