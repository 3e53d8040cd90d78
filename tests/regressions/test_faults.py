"""Fault injection (testbench._faults) gives the outcome QEMU and Linux give for each failure."""

from __future__ import annotations

import re
from typing import Any

import pytest

import testbench
from models import MachineConfig
from models._dma import DMA_WRITE
from models._machine import build_machine
from models._nvme_wire import IO_READ
from models._viommu_wire import FAULT_F_ADDRESS, FAULT_R_MAPPING, FaultEvent
from models._virtq_wire import ISR_QUEUE, VIRTIO_RING_F_EVENT_IDX
from models.guest._boot import boot
from models.guest._raw_requests import ReplayRequest, encode_request
from models.guest._raw_viommu import LINUX_FEATURES, MAX_POLLS
from models.guest._viommu_driver import SOFT_LOCKUP_PS
from sim import Simulator
from testbench import Monitor, ms, seconds, us
from staging import raw_machine, raw_send, run_task

BOOT = seconds(2)  # a boot takes about 1.2 s of simulated time
from testbench._faults import (
    UsedIrqFault,
    attempt_dma,
    enable_bus_master,
    endpoint_dma_port,
    fail_host_maps,
    reset_device,
)

NVME = 0x20  # 00:04.0
E1000E = 0x10  # 00:02.0
PAGE = 4096
NO_EVENT_IDX = LINUX_FEATURES & ~(1 << VIRTIO_RING_F_EVENT_IDX)


def map_req(domain: int, iova: int, paddr: int, pages: int = 1, flags: int = 3) -> dict[str, int]:
    return {"domain": domain, "virt_start": iova, "virt_end": iova + pages * PAGE - 1, "phys_start": paddr,
            "flags": flags}


# -- used-buffer interrupts ------------------------------------------------------------------------------------


def _boot_with(drop: bool) -> tuple[Simulator, Any, UsedIrqFault | None]:
    sim = Simulator(seed=5)
    machine = build_machine(MachineConfig(nvme="emulated", seed=5), sim)
    fault = UsedIrqFault(sim, machine.transport, mode="drop", queues=(0,)) if drop else None
    return sim, run_task(sim, boot(machine), name="boot"), fault


def test_dropped_request_queue_interrupts_leave_the_linux_boot_unchanged() -> None:
    """Linux polls the request queue, so a boot whose request-queue interrupts are all lost is the same boot."""
    sim, kernel, fault = _boot_with(drop=True)
    ref_sim, ref_kernel, _ = _boot_with(drop=False)
    assert fault is not None and fault.dropped == len(fault.raised) == 1  # EVENT_IDX: the first decision only
    assert kernel.printk.dmesg() == ref_kernel.printk.dmesg()
    assert kernel.boot.viommu.statistics().requests_sent == ref_kernel.boot.viommu.statistics().requests_sent > 50
    assert sim.now == ref_sim.now


@testbench.test(timeout=ms(10))
@testbench.parametrize(event_idx=[True, False])
async def test_dropped_used_interrupts_hide_no_completion_from_a_polling_driver(sim, event_idx):
    """With callbacks enabled every completion interrupts; all of them are dropped and every request is still OK."""
    machine, driver = await raw_machine(sim, LINUX_FEATURES if event_idx else NO_EVENT_IDX, nvme="emulated")
    assert driver.requestq is not None
    driver.requestq.enable_cb()
    with UsedIrqFault(sim, machine.transport, mode="drop") as fault:
        done = [await raw_send(driver, "attach", domain=1, endpoint=NVME)]
        done += [await raw_send(driver, "map", **map_req(1, i * PAGE, 0x100000 + i * PAGE)) for i in range(10)]
    assert [d.status_name for d in done] == ["OK"] * 11
    assert fault.dropped == len(fault.raised) == 11 and fault.delivered == []
    assert machine.transport.isr & ISR_QUEUE  # the device did set the ISR bit; only the line stayed low
    assert len(machine.viommu.mappings(1)) == 10


@testbench.test(timeout=ms(10))
async def test_delayed_used_interrupt_arrives_after_the_driver_polled_the_completion(sim):
    """A used-buffer interrupt delayed by 50 us reaches the line 50 us after the device raised it."""
    machine, driver = await raw_machine(sim, nvme="emulated")
    assert driver.requestq is not None
    driver.requestq.enable_cb()
    with UsedIrqFault(sim, machine.transport, mode="delay", delay=us(50)) as fault:
        done = await raw_send(driver, "attach", domain=1, endpoint=NVME)
        seen_at = sim.now
    assert done.status_name == "OK" and fault.delayed == 1 and fault.delivered == []
    await testbench.sleep(us(60))
    (raised_at, _), = fault.raised
    assert fault.delivered == [(raised_at + us(50), 0)]
    assert raised_at <= seen_at < raised_at + us(50)


@testbench.test(timeout=BOOT)
async def test_delayed_event_queue_interrupt_delays_the_linux_fault_report(sim, platform):
    """A DMA fault's event-queue interrupt held back 1 ms: Linux logs the fault only once it arrives."""
    p = await platform(nvme="emulated")
    port = endpoint_dma_port(p.machine, NVME)
    with UsedIrqFault(sim, p.machine.transport, mode="delay", delay=ms(1), queues=(1,)) as fault:
        assert not attempt_dma(port, 0x5000_0000, read=8).ok
        await testbench.sleep(us(900))
        assert "fault" not in p.dmesg("virtio_iommu")
        await testbench.sleep(us(200))
    assert fault.delayed == 1
    assert p.dmesg("page fault").endswith("virtio_iommu virtio0: page fault from EP 32 at 0x50000000 []\n")


@testbench.test(timeout=BOOT)
async def test_dropped_event_queue_interrupt_with_event_idx_leaves_later_faults_unsignalled(sim, platform):
    """Losing the event queue's interrupt leaves used_event behind, so the device stays silent for later faults too."""
    p = await platform(nvme="emulated")
    port = endpoint_dma_port(p.machine, NVME)
    with UsedIrqFault(sim, p.machine.transport, mode="drop", queues=(1,)) as fault:
        assert not attempt_dma(port, 0x5000_0000, read=8).ok
    assert not attempt_dma(port, 0x6000_0000, write=b"x").ok
    await testbench.sleep(ms(1))
    assert fault.dropped == 1 and p.machine.viommu.faults_reported == 2
    assert "page fault" not in p.dmesg()  # both events wait in the used ring, unseen


# -- reset with requests in flight ---------------------------------------------------------------------------------


@testbench.test(timeout=BOOT + SOFT_LOCKUP_PS)
async def test_reset_with_queued_requests_drops_them_and_the_guest_spin_ends_at_the_soft_lockup_bound(sim, platform):
    """Three queued MAPs are lost to a status-0 write; Linux's sync spins 22 s, logs the soft lockup, gives up."""
    p = await platform(nvme="emulated")
    driver, viommu = p.viommu_driver, p.machine.viommu
    domain = viommu.domain_of(NVME)
    for i in range(3):
        req = ReplayRequest("map", **map_req(domain, 0x1000_0000 + i * PAGE, 0x200000))
        assert await driver.add_req(0, encode_request(req)) == 0
    outcome = reset_device(p.machine.transport)
    assert outcome.pending[0] == 3 and outcome.status_before & 0x4  # DRIVER_OK was set
    assert viommu.domains == {} and p.machine.transport.status == 0
    start = sim.now
    assert await driver.sync_req(0) == 0
    assert SOFT_LOCKUP_PS <= sim.now - start < SOFT_LOCKUP_PS + ms(2)
    assert "watchdog: BUG: soft lockup - CPU#0 stuck for 22s!" in p.dmesg("soft lockup")
    assert viommu.mappings(domain) == []


@testbench.test(timeout=ms(200))
async def test_raw_driver_wait_for_a_request_after_reset_is_bounded(sim):
    """After a reset the kick is ignored (no DRIVER_OK); the raw driver reports NO_COMPLETION after MAX_POLLS polls."""
    machine, driver = await raw_machine(sim, nvme="emulated")
    assert (await raw_send(driver, "attach", domain=1, endpoint=NVME)).status_name == "OK"
    reset_device(machine.transport)
    start = sim.now
    done = await raw_send(driver, "map", **map_req(1, 0, 0x100000))
    assert done.status_name == "NO_COMPLETION"
    assert MAX_POLLS * driver.poll_interval_ps <= sim.now - start < MAX_POLLS * driver.poll_interval_ps + ms(5)
    assert machine.viommu.domains == {}


# -- host VFIO map failure -------------------------------------------------------------------------------------------


@testbench.test(timeout=BOOT)
async def test_failed_host_map_is_ok_for_the_guest_and_the_nvme_dma_faults_on_the_host(sim, platform):
    """VFIO_MAP_DMA fails: QEMU logs it, the guest's MAP is OK, the NVMe's data write faults on the host IOMMU."""
    p = await platform(nvme="vfio")
    disk = bytes(range(256)) * 16
    p.machine.nvme.namespaces[1].write(0, disk)  # the disk image holds a pattern at LBA 0..7
    buf = p.kernel.mm.alloc_pages(0)
    assert await p.nvme_driver.submit_io(0, IO_READ, 1, 0, 8, buf) == 0
    assert p.machine.memory.read(buf, PAGE) == disk
    p.machine.memory.write(buf, b"\xa5" * PAGE)
    dmesg = p.dmesg()
    maps = Monitor(sim, "virtio-iommu", "virtio_iommu_map")
    done = Monitor(sim, "guest/virtio_iommu", "viommu_req_done", where=lambda r: r.fields["type"] == "MAP")
    with fail_host_maps(p.machine.host) as failed:
        status = await p.nvme_driver.submit_io(0, IO_READ, 1, 0, 8, buf)
    assert status == 0  # the data write is posted: the controller completes with Success
    assert len(maps) == len(done) == failed.failed_maps == 1
    assert [r.fields["status"] for r in done.records] == [0]
    assert failed.errors == 2  # type1's VFIO_MAP_DMA failure and vfio_iommu_map_notify's report
    iova = maps.records[0].fields["virt_start"]
    fault = p.machine.nvme_dma.faults[-1]
    assert (fault.bdf, fault.iova, fault.access, fault.reason) == (NVME, iova, DMA_WRITE, "no host IOMMU mapping")
    assert p.machine.memory.read(buf, PAGE) == b"\xa5" * PAGE
    assert p.dmesg() == dmesg  # nothing reaches the guest


# -- a rogue endpoint -------------------------------------------------------------------------------------------------


@testbench.test(timeout=ms(10))
async def test_rogue_endpoint_dma_into_another_domains_iova_faults_and_touches_nothing(sim):
    """The NVMe (domain 1) aims at the e1000e's (domain 2) IOVA: every access faults, the memory is untouched."""
    machine, driver = await raw_machine(sim, nvme="emulated")
    secret_pa, own_pa = 0x300000, 0x301000
    machine.memory.write(secret_pa, b"secret")
    for op in (("attach", {"domain": 1, "endpoint": NVME}), ("attach", {"domain": 2, "endpoint": E1000E}),
               ("map", map_req(2, 0x10000, secret_pa)), ("map", map_req(1, 0x20000, own_pa))):
        assert (await raw_send(driver, op[0], **op[1])).status_name == "OK"
    for bdf in (NVME, E1000E):
        enable_bus_master(machine, bdf)
    victim, rogue = endpoint_dma_port(machine, E1000E), endpoint_dma_port(machine, NVME)
    assert attempt_dma(victim, 0x10000, read=6).data == b"secret"
    assert attempt_dma(rogue, 0x20000, write=b"mine").ok
    tries = [attempt_dma(rogue, 0x10000, read=6), attempt_dma(rogue, 0x10000, write=b"stolen"),
             attempt_dma(rogue, secret_pa, read=6)]
    assert [(t.ok, t.data) for t in tries] == [(False, b"")] * 3
    assert machine.memory.read(secret_pa, 6) == b"secret" and machine.memory.read(own_pa, 4) == b"mine"
    events = [FaultEvent.unpack(e) for e in driver.harvest_events()]
    assert [(e.reason, e.flags, e.endpoint, e.address) for e in events] == [
        (FAULT_R_MAPPING, FAULT_F_ADDRESS, NVME, 0x10000), (FAULT_R_MAPPING, FAULT_F_ADDRESS, NVME, 0x10000),
        (FAULT_R_MAPPING, FAULT_F_ADDRESS, NVME, secret_pa)]


# -- the helpers' own contract -------------------------------------------------------------------------------------


@testbench.test(timeout=ms(10))
async def test_used_irq_fault_limit_affects_only_the_first_interrupts(sim):
    """limit=2 drops the first two used-buffer interrupts and lets the third through to the line."""
    machine, driver = await raw_machine(sim, NO_EVENT_IDX, nvme="emulated")
    assert driver.requestq is not None
    driver.requestq.enable_cb()
    with UsedIrqFault(sim, machine.transport, mode="drop", limit=2) as fault:
        for i in range(3):
            assert (await raw_send(driver, "attach", domain=1 + i, endpoint=NVME)).status_name == "OK"
    assert fault.dropped == 2 and [t for t, _ in fault.delivered] == [fault.raised[2][0]]
    assert "notify_used" not in vars(machine.transport)  # removed: the transport's own method again


@testbench.test(timeout=ms(10))
async def test_fault_helpers_refuse_bad_arguments_with_a_message(sim):
    """A wrong mode, a missing delay, a machine without VFIO, an access of nothing: ValueError saying what to pass."""
    machine, _ = await raw_machine(sim, nvme="emulated")
    cases = [
        (lambda: UsedIrqFault(sim, machine.transport, mode="lose"), "mode is 'drop' or 'delay'"),
        (lambda: UsedIrqFault(sim, machine.transport, mode="delay"), "positive int delay"),
        (lambda: fail_host_maps(machine.host).__enter__(), "no VFIO device"),
        (lambda: attempt_dma(endpoint_dma_port(machine, NVME), 0), "either read="),
    ]
    for call, words in cases:
        with pytest.raises(ValueError, match=re.escape(words)):
            call()
    assert machine.transport.on_irq is not None and "notify_used" not in vars(machine.transport)


@testbench.test(timeout=ms(200))
async def test_reset_written_while_the_device_handles_a_kick_waits_for_the_handler(sim):
    """QEMU's status write needs the big lock the kicking vCPU holds: every request of the kick completes,
    then the reset clears the domains; nothing is popped from, or pushed to, the reset rings afterwards."""
    machine, driver = await raw_machine(sim, nvme="emulated")
    q = driver.requestq
    bufs = []
    for dom, endpoint in ((1, 0x10), (2, NVME), (3, 0xFA)):
        req = ReplayRequest("attach", domain=dom, endpoint=endpoint)
        buf = driver.mm.kmalloc(64)
        machine.memory.write(buf, encode_request(req) + bytes(4))
        q.add([(buf, len(encode_request(req)))], [(buf + len(encode_request(req)), 4)])
        bufs.append(buf)
    q.publish()
    kick = sim.spawn(driver._kick(0), name="kicking vcpu")
    device_queue = machine.transport.queue(0)
    while device_queue.last_avail_idx == 0:  # the device has started popping
        await testbench.sleep(us(0) + 100)
    outcome = reset_device(machine.transport)
    assert outcome.pending[0] == 2 and machine.transport.status != 0  # the reset waits for the handler
    await kick
    await testbench.sleep(us(10))
    assert machine.transport.status == 0 and machine.viommu.domains == {}
    assert device_queue.last_avail_idx == 3  # all three were handled before the reset
    statuses = [machine.memory.read_u8(b + len(encode_request(ReplayRequest("attach")))) for b in bufs]
    assert statuses == [0, 0, 0]
