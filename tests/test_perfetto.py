"""`--trace-format perfetto`: Chrome trace-event JSON with tracks, request slices and kick flows."""

import json

from viommu_sim.cli import main


def test_replay_perfetto_trace_has_request_slices_and_kick_flows(tmp_path, capsys):
    """Each request is one X slice named after its type; every flow that starts at a kick finishes."""
    log = tmp_path / "reqs.jsonl"
    log.write_text(
        '{"op": "attach", "domain": 1, "endpoint": 16}\n'
        '{"op": "map", "domain": 1, "virt_start": "0x1000", "virt_end": "0x1fff", "phys_start": "0x200000", "flags": 3}\n'
        '{"op": "unmap", "domain": 1, "virt_start": "0x1000", "virt_end": "0x1fff"}\n'
        '{"op": "probe", "endpoint": 16}\n'
    )
    out = tmp_path / "trace.json"
    assert main(["replay", str(log), "--trace", str(out), "--trace-format", "perfetto"]) == 0
    capsys.readouterr()
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    assert doc["displayTimeUnit"] == "ns"
    slices = [e["name"] for e in events if e["ph"] == "X" and e["cat"] == "request"]
    assert slices == ["ATTACH", "MAP", "UNMAP", "PROBE"]
    starts = {e["id"] for e in events if e["ph"] == "s"}
    finishes = {e["id"] for e in events if e["ph"] == "f"}
    assert finishes and finishes <= starts
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"virtio-iommu", "virtio-iommu-pci", "pci"} <= names
    assert all(e["ts"] >= 0 for e in events if "ts" in e)


def test_boot_perfetto_trace_has_one_track_per_vcpu_and_device(tmp_path, capsys):
    """Guest work lands on vCPU tracks of the guest process; devices get their own processes."""
    out = tmp_path / "boot.json"
    assert main(["boot", "--trace", str(out), "--trace-format", "perfetto"]) == 0
    capsys.readouterr()
    events = json.loads(out.read_text())["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(procs[e["pid"]], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {("guest", "vCPU 0"), ("guest", "vCPU 1")} <= threads
    assert {"virtio-iommu", "virtio-iommu-pci", "nvme", "vfio"} <= set(procs.values())
    assert [e["name"] for e in events if e["ph"] == "X"][:2] == ["PROBE", "ATTACH"]
