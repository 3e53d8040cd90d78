"""Regressions named after properties: flavour differences, notification suppression, DMA isolation."""

from __future__ import annotations

from typing import Any

import testbench
from models._viommu_wire import MAP_F_READ, MAP_F_WRITE
from models._virtq_wire import VIRTIO_RING_F_EVENT_IDX
from models.guest._raw_requests import ReplayRequest, encode_request
from models.guest._raw_viommu import LINUX_FEATURES, RawViommuDriver
from testbench import Monitor, ms
from testbench._faults import attempt_dma, enable_bus_master, endpoint_dma_port
from staging import raw_machine, raw_send

PAGE = 4096
NVME, E1000E, AHCI = 0x20, 0x10, 0xFA  # 00:04.0, 00:02.0, 00:1f.2


# -- qemu vs spec -------------------------------------------------------------------------------------------------


@testbench.test(timeout=ms(10))
@testbench.parametrize(flavor=["qemu", "spec"])
async def test_unmap_splitting_a_mapping_is_not_atomic_in_qemu_and_atomic_in_the_spec(sim, flavor):
    """UNMAP [0, 0x6fff] over 0-0x4fff and 0x5000-0x9fff is RANGE; QEMU has already removed the first, the spec nothing."""
    machine, driver = await raw_machine(sim, nvme="emulated", flavor=flavor)
    steps = [("attach", {"domain": 1, "endpoint": E1000E}),
             ("map", {"domain": 1, "virt_start": 0x0, "virt_end": 0x4FFF, "phys_start": 0x100000, "flags": 3}),
             ("map", {"domain": 1, "virt_start": 0x5000, "virt_end": 0x9FFF, "phys_start": 0x105000, "flags": 3}),
             ("unmap", {"domain": 1, "virt_start": 0x0, "virt_end": 0x6FFF})]
    statuses = [(await raw_send(driver, op, **fields)).status_name for op, fields in steps]
    assert statuses == ["OK", "OK", "OK", "RANGE"]
    survivors = [(m.virt_start, m.virt_end) for m in machine.viommu.mappings(1)]
    enable_bus_master(machine, E1000E)
    machine.memory.write(0x101000, b"low")
    low = attempt_dma(endpoint_dma_port(machine, E1000E), 0x1000, read=3)
    if flavor == "qemu":
        assert survivors == [(0x5000, 0x9FFF)] and not low.ok
    else:
        assert survivors == [(0x0, 0x4FFF), (0x5000, 0x9FFF)] and low.data == b"low"


@testbench.test(timeout=ms(10))
@testbench.parametrize(flavor=["qemu", "spec"])
async def test_unknown_request_type_is_unsupp_in_qemu_and_unwritten_in_the_spec(sim, flavor):
    """Type 0x7f: QEMU writes an UNSUPP tail; the spec device writes nothing (used length 0, which reads as IOERR)."""
    _, driver = await raw_machine(sim, nvme="emulated", flavor=flavor)
    done = await driver.submit(bytes([0x7F, 0, 0, 0]), 4)
    assert (done.status_name, done.used_len) == (("UNSUPP", 4) if flavor == "qemu" else ("IOERR", 0))


# -- event-index notification suppression --------------------------------------------------------------------------

BATCHES, BATCH = 4, 200  # 800 requests, as indirect chains, through a 256-entry ring


@testbench.test(timeout=ms(100))
@testbench.parametrize((("event_idx", "callbacks", "interrupts"),
                        [(False, True, BATCHES * BATCH), (True, True, BATCHES), (False, False, 0), (True, False, 0)]))
async def test_notification_suppression_never_loses_a_completion(sim, event_idx, callbacks, interrupts):
    """800 MAPs in batches of 200 per kick: the used harvest sees every head once with OK, whatever interrupts were asked."""
    features = LINUX_FEATURES if event_idx else LINUX_FEATURES & ~(1 << VIRTIO_RING_F_EVENT_IDX)
    machine, driver = await raw_machine(sim, features, nvme="emulated")
    assert bool(driver.features >> VIRTIO_RING_F_EVENT_IDX & 1) == event_idx
    assert (await raw_send(driver, "attach", domain=1, endpoint=NVME)).status_name == "OK"
    q, memory = driver.requestq, machine.memory
    assert q is not None and driver.dev is not None
    if callbacks:
        q.enable_cb()
    notified = Monitor(sim, machine.transport.name, "virtio_notify", where=lambda r: r.fields["queue"] == 0)
    completed = 0
    for batch in range(BATCHES):
        sent: dict[int, int] = {}  # head -> buffer
        for i in range(BATCH):
            n = batch * BATCH + i
            req = encode_request(ReplayRequest("map", domain=1, virt_start=n * PAGE, virt_end=n * PAGE + PAGE - 1,
                                               phys_start=0x400000 + n * PAGE, flags=3))
            buf = driver.mm.kmalloc(len(req) + 4)
            memory.write(buf, req + bytes(4))
            table = driver.mm.kmalloc(32)  # indirect: one ring descriptor per request, as Linux does
            sent[q.add([(buf, len(req))], [(buf + len(req), 4)], indirect_table=table)] = buf + len(req)
        q.publish()
        if q.kick_needed():
            await driver.dev.notify(0)
        harvested: list[tuple[int, int]] = []
        for _ in range(100):  # bounded: the device completes the whole batch inside the kick
            while (used := q.get_used()) is not None:
                harvested.append(used)
            if len(harvested) >= BATCH:
                break
            await testbench.sleep(driver.poll_interval_ps)
        assert sorted(h for h, _ in harvested) == sorted(sent)
        assert {(length, memory.read(sent[h], 1)[0]) for h, length in harvested} == {(4, 0)}  # 4 bytes, OK
        completed += len(harvested)
    assert completed == BATCHES * BATCH == len(machine.viommu.mappings(1))
    assert len(notified) == interrupts


# -- isolation -------------------------------------------------------------------------------------------------------

WINDOW_PAGES = 48  # every domain maps into the same IOVA window, so their IOVAs collide
POOL = 0x400000  # physical pages handed out to mappings, each tagged with its page number


class DomainModel:
    """The test's own record of one domain's mappings: page -> (physical page, flags)."""

    def __init__(self, domain: int) -> None:
        self.domain = domain
        self.pages: dict[int, tuple[int, int]] = {}
        self.ranges: list[tuple[int, int]] = []  # (first page, page count)

    def free_run(self, first: int, count: int) -> bool:
        return first + count <= WINDOW_PAGES and all(p not in self.pages for p in range(first, first + count))


async def _random_maps(driver: RawViommuDriver, rng: Any, model: DomainModel, next_phys: list[int]) -> None:
    for _ in range(10):
        first, count = rng.randrange(WINDOW_PAGES), rng.randint(1, 4)
        if not model.free_run(first, count):
            continue
        flags = rng.choice([MAP_F_READ, MAP_F_WRITE, MAP_F_READ | MAP_F_WRITE])
        phys = next_phys[0]
        next_phys[0] += count
        done = await raw_send(driver, "map", domain=model.domain, virt_start=first * PAGE,
                          virt_end=(first + count) * PAGE - 1, phys_start=POOL + phys * PAGE, flags=flags)
        assert done.status_name == "OK"
        model.ranges.append((first, count))
        for k in range(count):
            model.pages[first + k] = (phys + k, flags)


def _expect(model: DomainModel, iova: int, write: bool) -> int | None:
    """The physical address an access must reach, or None if it must fault."""
    hit = model.pages.get(iova // PAGE)
    if hit is None or not hit[1] & (MAP_F_WRITE if write else MAP_F_READ):
        return None
    return POOL + hit[0] * PAGE + iova % PAGE


@testbench.test(timeout=ms(100))
async def test_an_endpoint_never_reaches_memory_outside_its_own_domains_mappings(sim):
    """Random maps in three domains over one IOVA window, random DMA by each endpoint, random unmaps, more DMA:
    every access lands where its own domain maps it, or faults, and no other byte of memory changes."""
    machine, driver = await raw_machine(sim, nvme="emulated")
    rng = sim.rng("isolation")
    endpoints = {NVME: DomainModel(1), E1000E: DomainModel(2), AHCI: DomainModel(3)}
    next_phys = [0]
    for bdf, model in endpoints.items():
        assert (await raw_send(driver, "attach", domain=model.domain, endpoint=bdf)).status_name == "OK"
        enable_bus_master(machine, bdf)
        await _random_maps(driver, rng, model, next_phys)
    pool_bytes = next_phys[0] * PAGE
    shadow = bytearray(b"".join(n.to_bytes(8, "little") * (PAGE // 8) for n in range(next_phys[0])))
    machine.memory.write(POOL, bytes(shadow))
    ports = {bdf: endpoint_dma_port(machine, bdf) for bdf in endpoints}
    outcomes = {"hit": 0, "fault": 0}

    async def accesses(n: int) -> None:
        for _ in range(n):
            bdf = rng.choice(sorted(endpoints))
            iova = rng.randrange(WINDOW_PAGES + 4) * PAGE + 8 * rng.randrange(PAGE // 8)
            write = rng.random() < 0.5
            want = _expect(endpoints[bdf], iova, write)
            if write:
                data = rng.randbytes(8)
                got = attempt_dma(ports[bdf], iova, write=data)
                if want is not None:
                    shadow[want - POOL : want - POOL + 8] = data
            else:
                got = attempt_dma(ports[bdf], iova, read=8)
                if want is not None:
                    assert got.data == bytes(shadow[want - POOL : want - POOL + 8]), (hex(bdf), hex(iova))
            assert got.ok == (want is not None), (hex(bdf), hex(iova), write)
            outcomes["hit" if got.ok else "fault"] += 1
            assert machine.memory.read(POOL, pool_bytes) == bytes(shadow)

    await accesses(150)
    for model in endpoints.values():  # unmap a random half of each domain's mappings
        for first, count in rng.sample(model.ranges, len(model.ranges) // 2):
            done = await raw_send(driver, "unmap", domain=model.domain, virt_start=first * PAGE,
                              virt_end=(first + count) * PAGE - 1)
            assert done.status_name == "OK"
            for k in range(count):
                del model.pages[first + k]
    await accesses(150)
    assert min(outcomes.values()) > 30  # both outcomes were exercised
    assert machine.viommu.faults_reported + machine.viommu.faults_dropped == outcomes["fault"]
