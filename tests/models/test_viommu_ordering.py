"""The device-side request-ordering policy (models/_viommu_ordering.py): fifo is QEMU's loop exactly,
batch-complete and reverse publish a kick's used entries at its end with one interrupt decision, a
malformed chain still breaks the device, a bad reference is one ConfigError naming --request-order."""

from pathlib import Path

import pytest

from models import ConfigError, MachineConfig
from models._viommu_ordering import RequestBatch, OrderingPlanError, PendingRequest, check_plan, make_ordering
from models._viommu_wire import VIRTIO_RING_F_EVENT_IDX, AttachReq, MapReq, ProbeReq, ReqType, Status
from models._virtq_wire import DeviceStatus
from staging import TransportGuest
from viommu_sim.cli import main

AHCI = 0xFA
PAIRS_FILE = str(Path(__file__).resolve().parents[2] / "examples" / "policies" / "pairs.py")
PAIRS = f"{PAIRS_FILE}:CompleteInPairs"


class Guest(TransportGuest):
    """A driver side without EVENT_IDX (so every interrupt decision the device makes is an interrupt)."""

    def __init__(self, request_order: str) -> None:
        super().__init__(~(1 << VIRTIO_RING_F_EVENT_IDX), event_idx=False, request_order=request_order)

    def post_head(self, request: bytes, writable: int) -> int:
        return self.post(request, writable)[0]

    def post_three(self) -> tuple[int, int, int]:
        """ATTACH, MAP into its domain, PROBE: the MAP succeeds only if the ATTACH was handled first."""
        return (self.post_head(AttachReq(1, AHCI).pack(), 4),
                self.post_head(MapReq(1, 0x1000, 0x1FFF, 0xA000, 3).pack(), 4),
                self.post_head(ProbeReq(AHCI).pack(), 516))

    def used(self) -> list[tuple[int, int]]:
        out = []
        while (u := self.q[0].get_used()) is not None:
            out.append(u)
        return out

    def events(self, *names: str) -> list[str]:
        return [r.event for r in self.sink.records if r.event in names]

    def fills(self) -> list[int]:
        return [r.fields["head"] for r in self.sink.records if r.event == "virtqueue_fill"]


def test_fifo_handles_pushes_and_notifies_each_request_before_popping_the_next():
    g = Guest("fifo")
    h1, h2, h3 = g.post_three()
    g.kick()
    assert g.used() == [(h1, 4), (h2, 4), (h3, 516)]
    assert g.events("virtqueue_pop", "virtio_iommu_request_status", "virtqueue_fill", "virtio_notify") == [
        "virtqueue_pop", "virtio_iommu_request_status", "virtqueue_fill", "virtio_notify"] * 3
    assert g.irqs == [True, True, True]


def test_batch_complete_pops_all_handles_in_ring_order_and_publishes_them_with_one_interrupt():
    g = Guest("batch-complete")
    h1, h2, h3 = g.post_three()
    g.kick()
    assert g.used() == [(h1, 4), (h2, 4), (h3, 516)]
    assert g.events("virtqueue_pop", "virtio_iommu_request_status", "virtqueue_fill", "virtio_notify") == [
        "virtqueue_pop"] * 3 + ["virtio_iommu_request_status"] * 3 + ["virtqueue_fill"] * 3 + ["virtio_notify"]
    assert g.irqs == [True]
    assert g.dev.domain_of(AHCI) == 1  # the MAP after its ATTACH


def test_reverse_publishes_the_used_entries_last_first_with_one_interrupt_and_same_statuses():
    g = Guest("reverse")
    h1, h2, h3 = g.post_three()
    g.kick()
    assert g.used() == [(h3, 516), (h2, 4), (h1, 4)]
    assert g.fills() == [h3, h2, h1]
    assert [r.fields["status"] for r in g.sink.records if r.event == "virtio_iommu_request_status"] == [
        Status.OK, Status.OK, Status.OK]  # handled in ring order: ATTACH, MAP, PROBE
    assert g.irqs == [True]
    cost = MachineConfig().cost
    assert g.sim.now == cost.viommu_notify_ps + 3 * cost.viommu_request_ps  # the same work as fifo


def test_the_example_policy_completes_in_pairs_with_an_interrupt_per_pair():
    g = Guest(PAIRS)
    h1, h2, h3 = g.post_three()
    g.kick()
    assert g.used() == [(h1, 4), (h2, 4), (h3, 516)]
    assert g.events("virtqueue_fill", "virtio_notify") == [
        "virtqueue_fill", "virtqueue_fill", "virtio_notify", "virtqueue_fill", "virtio_notify"]
    assert g.irqs == [True, True]


@pytest.mark.parametrize("order", ["fifo", "batch-complete", "reverse"])
def test_a_malformed_chain_breaks_the_device_whatever_the_order(order):
    """The second chain has no writable tail: virtio_error when its turn comes; nothing after it is handled."""
    g = Guest(order)
    g.post(AttachReq(1, AHCI).pack(), 4)
    g.post(AttachReq(2, 0xFB).pack(), 0)
    g.post(AttachReq(3, 0x20).pack(), 4)
    g.kick()
    assert g.t.broken and g.t.status & DeviceStatus.NEEDS_RESET
    assert [r.fields["reason"] for r in g.sink.records if r.event == "virtio_error"] == [
        "virtio-iommu bad head/tail size"]
    assert sorted(g.dev.endpoints) == [AHCI]  # the first handled, the third never
    assert len(g.used()) == (1 if order == "fifo" else 0)  # a batch's entries are not published once broken


class _WindowOfTwo:
    api_version = 1
    lookahead = 2

    def plan(self, requests):
        order = tuple(r.index for r in requests)
        return [RequestBatch(order, order)]


def test_a_lookahead_of_two_pops_plans_and_completes_two_chains_at_a_time():
    g = Guest("fifo")
    g.dev.ordering = _WindowOfTwo()
    heads = [g.post_head(AttachReq(1, AHCI).pack(), 4) for _ in range(4)]  # the 8-entry table's capacity
    g.kick()
    assert [h for h, _ in g.used()] == heads
    assert g.events("virtqueue_pop", "virtqueue_fill", "virtio_notify") == [
        "virtqueue_pop", "virtqueue_pop", "virtqueue_fill", "virtqueue_fill", "virtio_notify"] * 2
    assert g.irqs == [True, True]


def test_a_plan_that_skips_a_request_or_never_notifies_is_refused():
    with pytest.raises(OrderingPlanError, match=r"never publishes request\(s\) \[2\] of 3"):
        check_plan([RequestBatch((0, 1, 2), (0, 1))], 3)
    with pytest.raises(OrderingPlanError, match="publishes request 1 .before it is handled"):
        check_plan([RequestBatch((0,), (0, 1)), RequestBatch((1, 2), (2,))], 3)
    with pytest.raises(OrderingPlanError, match="last batch does not notify"):
        check_plan([RequestBatch((0,), (0,), notify=False)], 1)


def test_builtins_plan_a_kick_of_three():
    reqs = [PendingRequest(0, int(ReqType.ATTACH), 5), PendingRequest(1, int(ReqType.MAP), 6),
            PendingRequest(2, int(ReqType.PROBE), 7)]
    assert list(make_ordering("fifo").plan(reqs)) == [RequestBatch((0,), (0,)), RequestBatch((1,), (1,)), RequestBatch((2,), (2,))]
    assert list(make_ordering("batch-complete").plan(reqs)) == [RequestBatch((0, 1, 2), (0, 1, 2))]
    assert list(make_ordering("reverse").plan(reqs)) == [RequestBatch((0, 1, 2), (2, 1, 0))]


@pytest.mark.parametrize(("value", "message"), [
    ("lifo", "--request-order: invalid value 'lifo' (choose from fifo, batch-complete, reverse)"),
    ("nowhere.py:Fifo", "--request-order: policy 'nowhere.py:Fifo': no such file 'nowhere.py'"),
    ("models._viommu_ordering:Nope", "--request-order: policy 'models._viommu_ordering:Nope': no class 'Nope' "
     "in models._viommu_ordering"),
    ("models._viommu_ordering:PendingRequest", "--request-order: policy 'models._viommu_ordering:PendingRequest': "
     "PendingRequest does not implement the request-ordering protocol (no plan)"),
])
def test_a_bad_request_order_is_one_config_error_naming_the_option(value, message):
    with pytest.raises(ConfigError) as exc:
        MachineConfig(request_order=value)
    assert str(exc.value) == message


def test_a_bad_request_order_on_the_command_line_is_one_line_and_exit_2(capsys):
    assert main(["boot", "--request-order", f"{PAIRS_FILE}:Nope"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"viommu-sim boot: error: --request-order: policy '{PAIRS_FILE}:Nope': no class 'Nope' in {PAIRS_FILE}"]


@pytest.mark.parametrize("order", ["batch-complete", "reverse"])
def test_a_boot_under_another_order_prints_the_same_dmesg(order, capsys):
    """The guest driver takes used entries by head, so every request still completes (6.12: batched MAPs)."""
    assert main(["boot", "--guest-kernel", "6.12"]) == 0
    fifo = capsys.readouterr().out
    assert main(["boot", "--guest-kernel", "6.12", "--request-order", order]) == 0
    assert capsys.readouterr().out == fifo
