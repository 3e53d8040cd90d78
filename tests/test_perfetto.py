"""`--trace-format perfetto`: Chrome trace-event JSON with tracks, request slices, kick slices on the
kicking vCPU and one closed flow per request (viommu_sim/_perfetto.py)."""

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
    assert finishes and finishes == starts
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
    assert [e["name"] for e in events if e["ph"] == "X" and e["cat"] == "request"][:2] == ["PROBE", "ATTACH"]


def _tracks(events: list[dict]) -> dict[tuple[int, int], str]:
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    return {(e["pid"], e["tid"]): f"{procs[e['pid']]}/{e['args']['name']}"
            for e in events if e["ph"] == "M" and e["name"] == "thread_name"}


def test_boot_kick_flows_start_on_the_kicking_vcpu_and_end_on_the_device_every_one_closed(tmp_path, capsys):
    """Each flow id has exactly one start, on a vCPU's kick slice, and one end, on the transport's
    track at the request's completion; every request the device completed has its flow."""
    out = tmp_path / "boot.json"
    assert main(["boot", "--trace", str(out), "--trace-format", "perfetto"]) == 0
    capsys.readouterr()
    events = json.loads(out.read_text())["traceEvents"]
    tracks = _tracks(events)
    starts = [e for e in events if e["ph"] == "s"]
    ends = [e for e in events if e["ph"] == "f"]
    assert sorted(e["id"] for e in starts) == sorted(e["id"] for e in ends) == list(range(1, len(starts) + 1))
    assert {tracks[(e["pid"], e["tid"])] for e in starts} == {"guest/vCPU 0", "guest/vCPU 1"}
    assert {tracks[(e["pid"], e["tid"])] for e in ends} == {"virtio-iommu-pci/virtio-iommu-pci"}
    requests = [e for e in events if e["ph"] == "X" and e["cat"] == "request"]
    assert len(starts) == len(requests) == 52
    kicks = [e for e in events if e["ph"] == "X" and e["cat"] == "kick"]
    assert all(tracks[(k["pid"], k["tid"])].startswith("guest/vCPU ") for k in kicks)
    for s in starts:  # each flow starts where a kick slice starts, on the same track
        assert any(k["ts"] == s["ts"] and (k["pid"], k["tid"]) == (s["pid"], s["tid"]) for k in kicks)
    end_of = {e["id"]: e for e in ends}
    assert all(end_of[s["id"]]["ts"] >= s["ts"] for s in starts)


def test_perfetto_writes_64_bit_and_address_values_as_hex_strings(tmp_path, capsys):
    """JSON viewers read numbers as doubles: nothing above 2^53 is written as a number."""
    out = tmp_path / "boot.json"
    assert main(["boot", "--trace", str(out), "--trace-format", "perfetto"]) == 0
    capsys.readouterr()
    events = json.loads(out.read_text())["traceEvents"]
    numbers = [v for e in events for v in e.get("args", {}).values() if isinstance(v, int) and not isinstance(v, bool)]
    assert max(numbers) <= 2**53 - 1
    config = next(e for e in events if e["name"] == "virtio_iommu_get_config")
    assert (config["args"]["end"], config["args"]["page_size_mask"]) == ("0xffffffffffffffff", "0x40201000")
    vmap = next(e for e in events if e["name"] == "virtio_iommu_map")
    assert vmap["args"]["virt_start"].startswith("0x") and isinstance(vmap["args"]["domain_id"], int)


def test_replay_kicks_without_a_guest_cpu_record_start_on_vcpu_0(tmp_path, capsys):
    """replay's raw driver traces no CPU: its kicks are vCPU 0's, and no flow is left open."""
    log = tmp_path / "reqs.jsonl"
    log.write_text('{"op": "attach", "domain": 1, "endpoint": 16}\n{"op": "probe", "endpoint": 16}\n')
    out = tmp_path / "trace.json"
    assert main(["replay", str(log), "--trace", str(out), "--trace-format", "perfetto"]) == 0
    capsys.readouterr()
    events = json.loads(out.read_text())["traceEvents"]
    tracks = _tracks(events)
    starts = [e for e in events if e["ph"] == "s"]
    assert [tracks[(e["pid"], e["tid"])] for e in starts] == ["guest/vCPU 0", "guest/vCPU 0"]
    assert sorted(e["id"] for e in events if e["ph"] == "f") == [1, 2]
