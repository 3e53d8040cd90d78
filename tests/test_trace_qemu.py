"""``--trace-format qemu``: QEMU's log trace backend, read back by ``replay``, and ``--trace-events``.

The formats are hw/virtio/trace-events' and hw/vfio/trace-events'; the line is
``PID@SECONDS.MICROS:name args`` (scripts/tracetool/backend/log.py); the pattern rules are
trace/control.c's.  See viommu_sim/_qemu_trace.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sim import TraceRecord
from viommu_sim._qemu_trace import QEMU_TRACE_PID, EventFilter, QemuLogSink, qemu_timestamp
from viommu_sim._replay_input import requests
from viommu_sim.cli import main


def _lines(*records: TraceRecord) -> list[str]:
    out = io.StringIO()
    sink = QemuLogSink(out)
    for rec in records:
        sink.emit(rec)
    return out.getvalue().splitlines()


def _rec(time: int, source: str, event: str, **fields: object) -> TraceRecord:
    return TraceRecord(time, 0, source, event, dict(fields))


def test_qemu_lines_use_the_trace_events_formats_pid_and_simulated_time() -> None:
    """Each QEMU event is its trace-events printf text; %d of a u32 prints signed as C does."""
    lines = _lines(
        _rec(1_090_262_900_000, "virtio-iommu", "virtio_iommu_map", domain_id=1, virt_start=0xFFFFF000,
             virt_end=0xFFFFFFFF, phys_start=0x1155AE000, flags=2),
        _rec(1_090_262_900_000, "virtio-iommu", "virtio_iommu_attach", domain_id=0, ep_id=250),
        _rec(2_000_000, "virtio-iommu", "virtio_iommu_get_config", page_size_mask=0x40201000, start=0,
             end=2**64 - 1, domain_start=0, domain_end=0xFFFFFFFF, probe_size=512, bypass=1),
        _rec(0, "virtio-iommu", "virtio_iommu_switch_address_space", bus=0, slot=0x1F, fn=2, on=True),
        _rec(0, "virtio-iommu", "virtio_iommu_translate_out", virt_addr=0xFFFE0400, phys_addr=0x3D70400, sid=250),
        _rec(0, "virtio-iommu", "virtio_iommu_fill_resv_property", devid=0, subtype=1, start=0xFEE00000,
             end=0xFEEFFFFF),
        _rec(0, "vfio", "vfio_iommu_map_notify", op="MAP", iova_start=0xFFFFF000, iova_end=0xFFFFFFFF),
        _rec(0, "guest/virtio_iommu", "viommu_add_req", cpu=0, type="MAP", head=0, outstanding=1),
    )
    assert lines == [
        f"{QEMU_TRACE_PID}@1.090262:virtio_iommu_map domain=1 virt_start=0xfffff000 virt_end=0xffffffff "
        "phys_start=0x1155ae000 flags=2",
        "4242@1.090262:virtio_iommu_attach domain=0 endpoint=250",
        "4242@0.000002:virtio_iommu_get_config page_size_mask=0x40201000 input range start=0x0 input range "
        "end=0xffffffffffffffff domain range start=0 domain range end=-1 probe_size=0x200 bypass=0x1",
        "4242@0.000000:virtio_iommu_switch_address_space Device 00:1f.2 switching address space (iommu enabled=1)",
        "4242@0.000000:virtio_iommu_translate_out 0xfffe0400 -> 0x3d70400 for sid=250",
        "4242@0.000000:virtio_iommu_fill_resv_property dev= 0, type=1 start=0xfee00000 end=0xfeefffff",
        "4242@0.000000:vfio_iommu_map_notify iommu MAP @ 0xfffff000 - 0xffffffff",
    ]


def test_qemu_pop_and_fill_of_one_request_share_its_elem_pointer() -> None:
    """%p arguments are fixed numbers naming the device, queue and head (documented in _qemu_trace)."""
    lines = _lines(
        _rec(0, "virtio-iommu-pci", "virtio_queue_notify", queue=0),
        _rec(0, "virtio-iommu-pci", "virtqueue_pop", queue=0, head=3, in_num=1, out_num=1, avail_idx=4),
        _rec(0, "virtio-iommu-pci", "virtqueue_fill", queue=0, head=3, len=4, idx=0),
        _rec(0, "virtio-iommu-pci", "virtqueue_flush", queue=0, count=1, used_idx=4),
    )
    assert [line.split(":", 1)[1] for line in lines] == [
        "virtio_queue_notify vdev 0x555555000000 n 0 vq 0x555555001000",
        "virtqueue_pop vq 0x555555001000 elem 0x555555001030 in_num 1 out_num 1",
        "virtqueue_fill vq 0x555555001000 elem 0x555555001030 len 4 idx 0",
        "virtqueue_flush vq 0x555555001000 count 1",
    ]


def test_qemu_timestamp_is_simulated_seconds_and_truncated_microseconds() -> None:
    assert [qemu_timestamp(t) for t in (0, 999_999, 1_000_000, 1_090_262_999_999, 12 * 10**12)] == [
        "0.000000", "0.000000", "0.000001", "1.090262", "12.000000"]


@pytest.mark.parametrize(("patterns", "kept"), [
    ([], ["virtio_iommu_map", "virtio_iommu_translate", "virtio_iommu_translate_out", "virtqueue_pop", "dma_access"]),
    (["virtio_iommu_*"], ["virtio_iommu_map", "virtio_iommu_translate", "virtio_iommu_translate_out"]),
    (["virtio_iommu_*", "-virtio_iommu_translate*"], ["virtio_iommu_map"]),
    (["-virtio_iommu_translate*"], ["virtio_iommu_map", "virtqueue_pop", "dma_access"]),
    (["-virtio_iommu_*", "virtio_iommu_translate"], ["virtio_iommu_translate", "virtqueue_pop", "dma_access"]),
    (["virtqueue_po?"], ["virtqueue_pop"]),
    (["virtio_iommu_map"], ["virtio_iommu_map"]),
    (["virtio_iommu_[m]ap"], []),  # no character classes in g_pattern_match_simple
    (["*map"], ["virtio_iommu_map"]),
])
def test_trace_events_patterns_follow_qemus_rules_in_order(patterns: list[str], kept: list[str]) -> None:
    events = ["virtio_iommu_map", "virtio_iommu_translate", "virtio_iommu_translate_out", "virtqueue_pop",
              "dma_access"]
    keep = EventFilter(patterns)
    assert [e for e in events if keep(e)] == kept


@pytest.fixture(scope="module")
def boot_traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One boot traced as JSONL and one (the same run: same seed, byte-identical records) as a QEMU log."""
    d = tmp_path_factory.mktemp("boot")
    jsonl, qemu = d / "boot.jsonl", d / "boot.log"
    assert main(["boot", "--trace", str(jsonl)]) == 0
    assert main(["boot", "--trace", str(qemu), "--trace-format", "qemu"]) == 0
    return jsonl, qemu


_REQUEST_EVENTS = {"virtio_iommu_attach": ("attach", {"domain_id": "domain", "ep_id": "endpoint"}),
                   "virtio_iommu_detach": ("detach", {"domain_id": "domain", "ep_id": "endpoint"}),
                   "virtio_iommu_map": ("map", {"domain_id": "domain", "virt_start": "virt_start",
                                                "virt_end": "virt_end", "phys_start": "phys_start",
                                                "flags": "flags"}),
                   "virtio_iommu_unmap": ("unmap", {"domain_id": "domain", "virt_start": "virt_start",
                                                    "virt_end": "virt_end"})}


def _request(op: str, domain: int = 0, endpoint: int = 0, virt_start: int = 0, virt_end: int = 0,
             phys_start: int = 0, flags: int = 0) -> tuple[str, int, int, int, int, int, int]:
    return (op, domain, endpoint, virt_start, virt_end, phys_start, flags)


def test_a_boots_qemu_log_gives_the_request_sequence_of_its_jsonl_trace(boot_traces: tuple[Path, Path],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The QEMU log's ATTACH/DETACH/MAP/UNMAP requests are the JSONL trace's, in order; only PROBEs
    (which QEMU traces no event for) are missing, and every request the device handled is there."""
    capsys.readouterr()
    jsonl, qemu = boot_traces
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    expected = []
    for r in records:
        spec = _REQUEST_EVENTS.get(r["ev"])
        if spec is not None:
            op, names = spec
            expected.append(_request(op, **{names[k]: v for k, v in r.items() if k in names}))
    with qemu.open("rb") as f:
        got = [_request(q.op, q.domain, q.endpoint, q.virt_start, q.virt_end, q.phys_start, q.flags)
               for q in requests(f)]
    assert got == expected
    handled = [r["ev"] for r in records if r["ev"].startswith("virtio_iommu_handle_") and r["ev"] != "virtio_iommu_handle_command"]
    assert len(got) == len(handled) - handled.count("virtio_iommu_handle_probe")
    assert [op for op, *_ in got].count("map") == 29 and [op for op, *_ in got].count("unmap") == 13


def test_a_boots_qemu_log_replays_with_every_request_ok(boot_traces: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["replay", str(boot_traces[1])]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 47
    assert {r["status"] for r in out} == {"OK"}


def test_trace_events_filters_a_jsonl_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "maps.jsonl"
    assert main(["boot", "--trace", str(out), "--trace-events", "virtio_iommu_map",
                 "--trace-events", "virtio_iommu_unmap*"]) == 0
    capsys.readouterr()
    events = [json.loads(line)["ev"] for line in out.read_text().splitlines()]
    assert (events.count("virtio_iommu_map"), events.count("virtio_iommu_unmap"),
            events.count("virtio_iommu_unmap_done"), len(events)) == (29, 13, 13, 55)
