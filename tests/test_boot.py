"""`viommu-sim boot`: the seed's dmesg, its variants, the MAP chain, IOVAs and determinism, from the models up."""

import json
import os
import re
import subprocess
import sys

import pytest

from reference_data import seed_text
from viommu_sim.cli import main

STAMP = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def boot(capsys, *args):
    assert main(["boot", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def messages(dmesg: str) -> list[str]:
    return [STAMP.sub("", line) for line in dmesg.splitlines()]


def seed_messages() -> list[str]:
    lines = seed_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("vm$ dmesg")) + 1
    return [STAMP.sub("", line) for line in lines[start:lines.index("", start)]]


def stamps(dmesg: str) -> list[float]:
    return [float(line[1:line.index("]")]) for line in dmesg.splitlines()]


def test_default_boot_prints_the_seeds_twelve_messages_in_the_seeds_order(capsys):
    """`dmesg | egrep "nvme|iommu|virtio"` of the default machine is the seed's twelve messages, in order."""
    out = boot(capsys)
    got = [m for m in messages(out) if re.search("nvme|iommu|virtio", m)]
    assert len(seed_messages()) == 12
    assert got == seed_messages()
    assert stamps(out) == sorted(stamps(out))


@pytest.mark.parametrize("flags, present, absent", [
    (["--smp", "2"], "nvme nvme0: 2/0/0 default/read/poll queues", "4/0/0"),
    (["--iommu-policy", "strict"], "iommu: DMA domain TLB invalidation policy: strict mode (set via kernel command line)",
     "lazy mode"),
    (["--nvme", "emulated"], "virtio_iommu virtio0: page mask: 0xfffffffffffff000", "0x40201000"),
    (["--aw-bits", "39"], "virtio_iommu virtio0: input address: 39 bits", "64 bits"),
])
def test_boot_output_moves_with_the_machine(capsys, flags, present, absent):
    """Each flag changes the line the real system would change, and only through the models."""
    got = messages(boot(capsys, *flags))
    assert present in got
    assert not any(absent in m for m in got)


def test_boot_without_nvme_has_no_nvme_lines_and_shifted_groups(capsys):
    """With no NVMe, e1000e takes group 1 and agpgart group 2."""
    got = [m for m in messages(boot(capsys, "--nvme", "none")) if "group" in m or "nvme" in m]
    assert got == [
        "ahci 0000:00:1f.2: Adding to iommu group 0",
        "e1000e 0000:00:02.0: Adding to iommu group 1",
        "i801_smbus 0000:00:1f.3: Adding to iommu group 0",
        "agpgart-intel 0000:00:00.0: Adding to iommu group 2",
    ]


def test_emulated_nvme_has_no_shutdown_timeout_line(capsys):
    """QEMU's NVMe reports RTD3E 0, so the driver keeps the 5 s default and prints nothing."""
    got = messages(boot(capsys, "--nvme", "emulated"))
    assert not any("Shutdown timeout" in m for m in got)
    assert "nvme nvme0: pci function 0000:00:04.0" in got


def _trace(tmp_path, capsys, *flags):
    path = tmp_path / "boot.jsonl"
    boot(capsys, "--trace", str(path), *flags)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nvme_maps_walk_the_seed_call_chain_and_descend_from_4g(tmp_path, capsys):
    """Every MAP of the NVMe's domain reaches vfio_iommu_map_notify through the seed's frames; IOVAs start below 4 GiB."""
    recs = _trace(tmp_path, capsys)
    nvme_domain = next(r["domain_id"] for r in recs if r["ev"] == "virtio_iommu_attach" and r["ep_id"] == 0x20)
    maps = [i for i, r in enumerate(recs) if r["ev"] == "virtio_iommu_map" and r["domain_id"] == nvme_domain]
    assert maps
    chain = ["virtio_iommu_notify_map", "memory_region_notify_iommu", "memory_region_notify_iommu_one",
             "vfio_iommu_map_notify"]
    for i in maps:
        handler = max(j for j in range(i) if recs[j]["ev"] == "virtio_iommu_handle_command")
        assert recs[handler + 1]["ev"] == "virtqueue_pop"
        assert [r["ev"] for r in recs[i + 1:i + 5]] == chain
    firsts = [recs[i]["virt_start"] for i in maps[:3]]
    assert firsts == [0xFFFFF000, 0xFFFFE000, 0xFFFFD000]
    assert all(recs[i]["virt_end"] < 1 << 32 for i in maps)


def test_a_nvme_scan_map_is_the_seeds_backtrace_map(tmp_path, capsys):
    """The scan's fresh single-page DMA_FROM_DEVICE maps descend from 0xFFF7F000 through the seed's page."""
    recs = _trace(tmp_path, capsys)
    pages = [(r["virt_start"], r["virt_end"] - r["virt_start"] + 1, r["flags"]) for r in recs
             if r["ev"] == "virtio_iommu_map" and r["domain_id"] == 1]
    scan = [p for p in pages if p[0] < 0xFFF80000]
    assert scan[:6] == [(0xFFF7F000 - k * 0x1000, 0x1000, 2) for k in range(6)]
    assert (0xFFF7B000, 0x1000, 2) in scan  # the backtrace's decimal virt_start=4294422528


def test_boot_trace_is_byte_identical_across_processes(tmp_path):
    """Same flags and seed in two processes with different PYTHONHASHSEED: the same trace bytes."""
    outs = []
    for hashseed in ("0", "1"):
        path = tmp_path / f"t{hashseed}.jsonl"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        subprocess.run([sys.executable, "-m", "viommu_sim.cli", "boot", "--trace", str(path), "--seed", "3"],
                       check=True, env=env, capture_output=True, timeout=300)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 10_000


def test_a_module_binds_after_the_initramfs_inserts_it_and_a_bind_retries_the_deferred_probe(capsys):
    """--modules: the listed drivers wait for the initramfs (insmod_ps, then the script's pause
    after each); the built-in ones (intel-agp, e1000e, i801 here) stay deferred until the
    virtio_iommu module binds, then are retried at once in the order they deferred."""
    out = boot(capsys, "--modules", "virtio_iommu,ahci", "--nvme", "none")
    msgs = messages(out)
    viommu = msgs.index("virtio_iommu virtio0: input address: 64 bits")
    # nothing binds through the IOMMU before its module: every built-in DMA driver deferred
    assert not any("Adding to iommu group" in m for m in msgs[:viommu])
    # the bind retries the deferred list at once, in the order the devices deferred
    assert msgs[viommu + 2] == "agpgart-intel 0000:00:00.0: Adding to iommu group 0"
    groups = [m.split(":")[0].split()[0] for m in msgs if "Adding to iommu group" in m]
    assert groups == ["agpgart-intel", "e1000e", "i801_smbus", "ahci"]
    t = dict(zip(msgs, stamps(out)))
    # ahci's insmod follows virtio_iommu's by the script's pause and one insmod (defaults: 300 + 20 ms)
    ahci = next(m for m in msgs if m.startswith("ahci 0000:00:1f.2: Adding to iommu group"))
    assert 0.320 <= t[ahci] - t["virtio_iommu virtio0: input address: 64 bits"] < 0.330


@pytest.mark.parametrize("value, message", [
    ("virtio_iommu,nope", "--modules: unknown module 'nope' (known: virtio_iommu, scsi_common"),
    ("ahci,ahci", "--modules: module ahci is listed twice"),
])
def test_a_bad_module_list_is_one_line_exit_2(capsys, value, message):
    assert main(["boot", "--modules", value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"viommu-sim boot: error: {message}") and err.count("\n") == 1
