"""Regressions of issue #17's hostile-input campaign, the CLI and input-file half.

Each case was a traceback, a hang or a silent exit 0 before; each now ends with exactly one
line on stderr and exit status 2 (a sweep's failed write: 1), or with a real result.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from viommu_sim.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "replay" / "nonatomic-unmap.jsonl"
_AXES = '[axes]\npolicy = ["lazy"]\nguest_kernel = ["6.7"]\niodepth = [1]\n'


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``viommu-sim ARGV`` in this process: (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("text", "error"), [
    ("", "no requests (JSON Lines objects, or virtio_iommu_attach/detach/map/unmap lines of a QEMU trace log)"),
    ("\n\n", "no requests (JSON Lines objects, or virtio_iommu_attach/detach/map/unmap lines of a QEMU trace log)"),
    ("hello world\n", "1: neither a JSON Lines request (a line starting with {) nor a QEMU trace log line "
                      "(pid@seconds:event_name arguments)"),
    ('[{"op": "probe"}]\n', "1: a JSON array, not JSON Lines: write one request object per line"),
    ("not json\n{\"op\": \"probe\"}\n", "1: neither a JSON Lines request (a line starting with {) nor a QEMU trace "
                                        "log line (pid@seconds:event_name arguments)"),
    ("virtio_iommu_kick vq=0\n", "no requests (JSON Lines objects, or virtio_iommu_attach/detach/map/unmap lines "
                                 "of a QEMU trace log)"),
    ('{"op": "map", "domain": ' + "9" * 5000 + "}\n",
     "1: not valid JSON: an integer of 5000 digits (at most 40)"),
    ('{"op": "map", "domain": ' + "[" * 100_000 + "\n", "1: line longer than 64 KiB"),
    ('{"op": "map", "domain": ' + "[" * 30_000 + "]" * 30_000 + "}\n", "1: not valid JSON: nested too deeply (more than 64 levels)"),
    ('{"op": "map", "virt_start": "0x' + "f" * 100 + '"}\n',
     "1: virt_start '0xffffffffffffffffffffffffffffffff'... is not an integer (e.g. 42 or \"0xa1000\")"),
])
def test_replay_input_that_is_no_request_stream_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            text: str, error: str) -> None:
    """Empty, arbitrary, array, huge-integer, deep and over-long inputs: one line naming the file, exit 2."""
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    code, out, err = cli(capsys, "replay", str(path))
    sep = ":" if error[0].isdigit() else ": "
    assert (code, out, err) == (2, "", f"viommu-sim replay: error: {path}{sep}{error}\n")


def test_replay_input_with_a_utf8_bom_replays_as_without(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A byte order mark before the first line is dropped: the same statuses as the plain file."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    plain = cli(capsys, "replay", str(EXAMPLE))
    assert cli(capsys, "replay", str(path)) == plain
    assert plain[0] == 0 and [json.loads(ln)["status"] for ln in plain[1].splitlines()] == ["OK", "OK", "OK", "RANGE"]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_replay_refuses_what_is_not_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   kind: str) -> None:
    """A FIFO (would block) or /dev/zero (never ends) is refused before it is read."""
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    else:
        path = "/dev/zero" if kind == "dev-zero" else str(tmp_path)
    reason = "is a directory" if kind == "directory" else "not a regular file (a FIFO or device is not read)"
    assert cli(capsys, "replay", path) == (2, "", f"viommu-sim replay: error: {path}: {reason}\n")


def test_replay_of_stdin_zeros_stops_at_the_line_bound(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Standard input without a newline is cut at 64 KiB, not read until memory runs out."""
    zeros = io.TextIOWrapper(io.BytesIO(bytes(1 << 20)))
    monkeypatch.setattr(sys, "stdin", zeros)
    assert cli(capsys, "replay", "-") == (2, "", "viommu-sim replay: error: -:1: line longer than 64 KiB\n")


@pytest.mark.parametrize("fmt", ["jsonl", "perfetto"])
def test_replay_trace_to_dev_full_is_an_error_not_exit_0(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """A trace path that opens but cannot be written: one line naming it, exit 2."""
    code, _, err = cli(capsys, "replay", "--trace", "/dev/full", "--trace-format", fmt, str(EXAMPLE))
    assert (code, err) == (2, "viommu-sim replay: error: --trace: cannot write /dev/full: No space left on device\n")


def test_boot_trace_to_dev_full_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "boot", "--trace", "/dev/full")
    assert (code, err) == (2, "viommu-sim boot: error: --trace: cannot write /dev/full: No space left on device\n")


def test_replay_to_a_full_stdout_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Standard output on a full device: one line on stderr, exit 2 (not exit 0 with partial output)."""
    full = open("/dev/full", "w")  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", full)
    try:
        code = main(["replay", str(EXAMPLE)])
    finally:
        monkeypatch.undo()
        try:
            full.close()
        except OSError:
            pass
    assert (code, capsys.readouterr().err) == (
        2, "viommu-sim replay: error: cannot write standard output: No space left on device\n")


@pytest.mark.parametrize(("argv", "error"), [
    (["boot", "--smp", "260"], "--smp: invalid value 260 (an integer from 1 to 255)"),
    (["boot", "--memory", "272M"], "--memory: 285212672 bytes is too small for the guest (at least 512M)"),
    (["lspci", "--memory", "9" * 5000], "--memory: invalid size '999999999999999999999999999999999999... "
                                        "(e.g. 64G, 2048M)"),
    (["boot", "--host-iommu-pgsizes", "0x2000"],
     "--host-iommu-pgsizes: 0x2000 has no 4 KiB page size (bit 12, 0x1000): the guest maps 4 KiB pages"),
    (["run", "--memory", "1G", "--bs", "128M", "--iodepth", "4", "--size", "1G"],
     "--bs: the jobs' buffers (numjobs x iodepth x bs = 536870912 bytes) need more than a quarter of the guest "
     "RAM (1073741824 bytes): give the guest more --memory"),
])
def test_values_the_validators_accepted_and_then_crashed_are_one_line(capsys: pytest.CaptureFixture[str],
                                                                      argv: list[str], error: str) -> None:
    code, out, err = cli(capsys, *argv)
    assert (code, out, err) == (2, "", f"viommu-sim {argv[0]}: error: {error}\n")


@pytest.mark.parametrize(("body", "error"), [
    (b"[cost]\nnvme_bandwidth_bytes_per_s = 0\n",
     "cost: nvme_bandwidth_bytes_per_s: invalid value 0 (an integer from 1 to 1125899906842624 bytes/s)"),
    (b"[cost]\nvmexit_mmio_ps = -1\n",
     "cost: vmexit_mmio_ps: invalid value -1 (an integer from 0 to 3600000000000000 ps)"),
    (b'[machine]\nhost_iommu_pgsizes = "0x1000"\n',
     "--host-iommu-pgsizes: invalid value '0x1000' (an integer from 1 to 18446744073709551615)"),
    (b"[machine]\nhost_iommu_pgsizes = 0\n",
     "--host-iommu-pgsizes: invalid value 0 (an integer from 1 to 18446744073709551615)"),
    (b"[machine]\ninitcall_blacklist = 5\n",
     "--initcall-blacklist: invalid value 5 (initcall names: a list of strings or NAME[,NAME])"),
    (b"\xff\xfe[machine]\n", "{path}: not a UTF-8 text file (byte 0)"),
    (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "{path}: invalid TOML: nested too deeply (more than 64 levels)"),
    (b"[machine]\nsmp = " + b"9" * 5000 + b"\n", "{path}: invalid TOML: an integer with too many digits"),
    (b"[workload]\n", "{path}: unknown key 'workload' (tables: machine, job, cost)"),
])
def test_scenario_file_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes,
                                           error: str) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(body)
    code, out, err = cli(capsys, "run", "--scenario", str(path), "--ios", "2")
    assert (code, out, err) == (2, "", f"viommu-sim run: error: {error.format(path=path)}\n")


def test_scenario_file_that_is_a_fifo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    os.mkfifo(path)
    assert cli(capsys, "run", "--scenario", str(path)) == (
        2, "", f"viommu-sim run: error: cannot read {path}: not a regular file\n")


@pytest.mark.parametrize(("extra", "matrix", "error"), [
    (["--out", "{tmp}/file"], None, "--out: {tmp}/file is not a directory"),
    (["--out", "/dev/null"], None, "--out: /dev/null is not a directory"),
    (["--scheduler", "junk"], None,
     "argument --scheduler: invalid address 'junk' (PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.1:8786)"),
    (["--workers", "100000"], None, f"argument --workers: invalid value '100000' (at most {4 * (os.cpu_count() or 1)}"
                                    ": four per CPU)"),
    ([], _AXES.replace('["lazy"]', '[["lazy"]]') + "seeds = 1\n", "--policy: invalid value ['lazy'] (a string)"),
    ([], _AXES + "seed = [18446744073709551616]\n",
     "--seed-list: invalid value 18446744073709551616 (an integer from 0 to 18446744073709551615)"),
    ([], _AXES + "seeds = 100000000\n", "--matrix: {tmp}/m.toml: [axes] seeds = 100000000 (at most 4096)"),
    ([], _AXES + "seed = [" + "1" * 5000 + "]\n", "--matrix: {tmp}/m.toml: invalid TOML: an integer with too many "
                                                  "digits"),
])
def test_sweep_bad_values_are_found_up_front_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         extra: list[str], matrix: str | None, error: str) -> None:
    """Nothing runs: one line, exit 2, and no output directory is made."""
    (tmp_path / "file").write_text("")
    argv: list[Any] = ["sweep", "--ios", "2"]
    if matrix is not None:
        (tmp_path / "m.toml").write_text(matrix)
        argv += ["--matrix", str(tmp_path / "m.toml")]
    argv += [a.format(tmp=tmp_path) for a in extra] if extra else ["--out", str(tmp_path / "out")]
    code, out, err = cli(capsys, *argv)
    assert (code, out, err) == (2, "", f"viommu-sim sweep: error: {error.format(tmp=tmp_path)}\n")
    assert not (tmp_path / "out").exists()
