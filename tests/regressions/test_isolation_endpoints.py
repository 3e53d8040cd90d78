"""Regressions from issue #17's isolation findings: endpoint aliases and DMA that escapes its mapping.

* An endpoint id is a function's 16-bit requester id.  Before the fix the device found
  function 0x20 for ATTACH 0x10020 (bits 16..31 dropped) and kept a second record for it:
  the VFIO notifiers followed that record's domain while ``translate`` used 0x20's, so the
  passed-through NVMe read a page of a domain ``domain_of(0x20)`` did not name.  Now
  0x10020 names no function (NOENT) on both NVMe paths, and neither path reaches the other
  domain's page.
* The qemu flavour mirrors QEMU's translation of off-granule mappings (an IOTLB entry is a
  whole granule, ``address_space_translate_iommu`` keeps the offset in it) and its
  acceptance of a physical range that wraps past 2^64; every byte that lands outside the
  mapping is traced as ``dma_escape``.  The spec flavour refuses those MAPs with RANGE.
"""

from __future__ import annotations

import testbench
from sim import ListSink
from testbench import ms
from testbench._faults import attempt_dma, enable_bus_master, endpoint_dma_port
from staging import raw_machine, raw_send

PAGE = 4096
NVME, E1000E = 0x20, 0x10  # 00:04.0, 00:02.0
ALIAS = 0x10000 | NVME
POOL = 0x400000
U64 = (1 << 64) - 1


async def _alias_setup(sim, nvme: str):
    """ATTACH 0x20 to domain 1, e1000e to domain 2, then the alias 0x10020 to domain 2; a page in each domain."""
    machine, driver = await raw_machine(sim, nvme=nvme)
    machine.memory.write(POOL, b"domain-1")
    machine.memory.write(POOL + PAGE, b"domain-2")
    steps = [
        ("attach", {"domain": 1, "endpoint": NVME}),
        ("attach", {"domain": 2, "endpoint": E1000E}),
        ("attach", {"domain": 2, "endpoint": ALIAS}),
        ("map", {"domain": 2, "virt_start": 0x1000, "virt_end": 0x1FFF, "phys_start": POOL + PAGE, "flags": 3}),
        ("map", {"domain": 1, "virt_start": 0x2000, "virt_end": 0x2FFF, "phys_start": POOL, "flags": 3}),
        ("detach", {"domain": 2, "endpoint": ALIAS}),
        ("probe", {"endpoint": ALIAS}),
    ]
    statuses = [(await raw_send(driver, op, **fields)).status_name for op, fields in steps]
    enable_bus_master(machine, NVME)
    return machine, statuses


@testbench.test(timeout=ms(2000))
@testbench.parametrize(nvme=["vfio", "emulated"])
async def test_regression_alias_endpoint_0x10020_is_noent_and_reaches_no_other_domain(sim, nvme):
    """ATTACH/DETACH/PROBE of 0x10020 are NOENT; the NVMe (either path) faults on domain 2's IOVA and reads domain 1's."""
    machine, statuses = await _alias_setup(sim, nvme)
    assert statuses == ["OK", "OK", "NOENT", "OK", "OK", "NOENT", "NOENT"]
    viommu = machine.viommu
    assert sorted(viommu.endpoints) == [E1000E, NVME]
    assert (viommu.domain_of(NVME), viommu.domain_of(ALIAS), viommu.domain_of(E1000E)) == (1, None, 2)
    port = machine.nvme_dma
    other = attempt_dma(port, 0x1000, read=8)
    own = attempt_dma(port, 0x2000, read=8)
    assert (other.ok, own.ok, own.data) == (False, True, b"domain-1")
    if nvme == "vfio":
        table = [(m.iova, m.size, m.paddr) for m in machine.host.container(NVME).mappings()]
        assert table == [(0x2000, PAGE, POOL)]
        assert other.fault == "host IOMMU fault: no host IOMMU mapping"
    else:
        assert other.fault == "virtio-iommu fault: page not mapped (VIRTIO_IOMMU_FAULT_R_MAPPING, flags ADDRESS)"


@testbench.test(timeout=ms(100))
async def test_translate_refuses_an_endpoint_wider_than_a_requester_id(sim):
    """translate(0x10020, ...) is a ValueError, not the identity a function outside the vIOMMU would get."""
    machine, _ = await raw_machine(sim, nvme="emulated")
    try:
        machine.viommu.translate(ALIAS, 0x1000, 1)
    except ValueError as exc:
        assert str(exc) == "endpoint 0x10020 is not a 16-bit requester id"
    else:
        raise AssertionError("translate accepted a 32-bit endpoint id")


# -- DMA that lands outside its mapping: mirrored (and traced) in qemu, refused in spec -----------------------------


async def _escape_case(sim, flavor: str, mapping: dict[str, int]):
    machine, driver = await raw_machine(sim, nvme="emulated", flavor=flavor)
    sink = ListSink()
    sim.add_sink(sink)
    attach = await raw_send(driver, "attach", domain=1, endpoint=E1000E)
    done = await raw_send(driver, "map", domain=1, flags=3, **mapping)
    enable_bus_master(machine, E1000E)
    return machine, sink, (attach.status_name, done.status_name)


def _events(sink: ListSink, name: str) -> list[dict[str, object]]:
    return [dict(r.fields) for r in sink.records if r.event == name]


@testbench.test(timeout=ms(100))
@testbench.parametrize(flavor=["qemu", "spec"])
async def test_regression_2k_map_lets_a_4k_dma_escape_2k_in_qemu_and_is_range_in_spec(sim, flavor):
    """MAP [0, 0x7ff] -> POOL: QEMU's entry is a 4 KiB granule, so a 4 KiB read takes 2 KiB past the mapping."""
    machine, sink, statuses = await _escape_case(sim, flavor, {"virt_start": 0, "virt_end": 0x7FF,
                                                                "phys_start": POOL})
    machine.memory.write(POOL, b"A" * 0x800 + b"B" * 0x800)
    port = endpoint_dma_port(machine, E1000E)
    got = attempt_dma(port, 0, read=PAGE)
    if flavor == "qemu":
        assert statuses == ("OK", "OK")
        assert got.data == b"A" * 0x800 + b"B" * 0x800
        escapes = _events(sink, "dma_escape")
        assert [(e["iova"], e["size"], e["paddr"], e["outside"], e["virt_end"]) for e in escapes] == [
            (0, PAGE, POOL, 0x800, 0x7FF)]
        assert port.escaped_bytes == 0x800
    else:
        assert statuses == ("OK", "RANGE")
        assert (got.ok, got.fault) == (False, "virtio-iommu fault: page not mapped (VIRTIO_IOMMU_FAULT_R_MAPPING, "
                                              "flags ADDRESS)")
        assert _events(sink, "dma_escape") == [] and port.escaped_bytes == 0


@testbench.test(timeout=ms(100))
@testbench.parametrize(flavor=["qemu", "spec"])
async def test_regression_off_granule_phys_translates_with_qemus_formula_in_qemu_and_is_range_in_spec(sim, flavor):
    """MAP [0x1000, 0x1fff] -> POOL + 0x800: (translated & ~mask) | (addr & mask) reads POOL, 8 bytes outside."""
    machine, sink, statuses = await _escape_case(sim, flavor, {"virt_start": 0x1000, "virt_end": 0x1FFF,
                                                                "phys_start": POOL + 0x800})
    machine.memory.write(POOL, b"granule!")
    machine.memory.write(POOL + 0x800, b"mapping!")
    port = endpoint_dma_port(machine, E1000E)
    got = attempt_dma(port, 0x1000, read=8)
    if flavor == "qemu":
        assert statuses == ("OK", "OK")
        assert got.data == b"granule!"
        assert [(e["paddr"], e["outside"], e["phys_start"]) for e in _events(sink, "dma_escape")] == [
            (POOL, 8, POOL + 0x800)]
        # the same access QEMU's translate traces: translated_addr is the unrounded value
        assert _events(sink, "virtio_iommu_translate_out")[-1]["phys_addr"] == POOL + 0x800
    else:
        assert statuses == ("OK", "RANGE")
        assert got.ok is False and _events(sink, "dma_escape") == []


@testbench.test(timeout=ms(100))
@testbench.parametrize(flavor=["qemu", "spec"])
async def test_regression_map_whose_phys_range_wraps_past_2_64_is_accepted_in_qemu_and_range_in_spec(sim, flavor):
    """MAP [0x2000, 0x3fff] -> 2^64 - 4 KiB: QEMU accepts (warning traced) and the second page lands at 0."""
    machine, sink, statuses = await _escape_case(sim, flavor, {"virt_start": 0x2000, "virt_end": 0x3FFF,
                                                                "phys_start": (1 << 64) - PAGE})
    machine.memory.write(0, b"page-0!!")
    port = endpoint_dma_port(machine, E1000E)
    wrapped = attempt_dma(port, 0x3000, read=8)
    if flavor == "qemu":
        assert statuses == ("OK", "OK")
        assert [(e["phys_start"], e["wrapped"]) for e in _events(sink, "virtio_iommu_map_phys_wrap")] == [
            ((1 << 64) - PAGE, PAGE)]
        assert wrapped.data == b"page-0!!"
        assert [(e["paddr"], e["outside"]) for e in _events(sink, "dma_escape")] == [(0, 8)]
        first = attempt_dma(port, 0x2000, read=8)  # 2^64 - 4 KiB is no RAM: the access fails at memory
        assert (first.ok, first.fault) == (False, "guest-physical read of 8 byte(s) at 0xfffffffffffff000 hits no RAM")
    else:
        assert statuses == ("OK", "RANGE")
        assert wrapped.ok is False and _events(sink, "virtio_iommu_map_phys_wrap") == []


@testbench.test(timeout=ms(2000))
async def test_vfio_path_refuses_an_off_granule_mapping_on_the_host(sim):
    """The passed-through NVMe cannot escape: the 2 KiB chunk's VFIO_IOMMU_MAP_DMA is EINVAL, its DMA a host fault."""
    machine, driver = await raw_machine(sim, nvme="vfio")
    assert (await raw_send(driver, "attach", domain=1, endpoint=NVME)).status_name == "OK"
    done = await raw_send(driver, "map", domain=1, virt_start=0, virt_end=0x7FF, phys_start=POOL, flags=3)
    enable_bus_master(machine, NVME)
    assert done.status_name == "OK"
    assert machine.host.container(NVME).mappings() == []
    assert machine.host.container(NVME).statistics().map_errors == 1
    got = attempt_dma(machine.nvme_dma, 0, read=PAGE)
    assert (got.ok, got.fault) == (False, "host IOMMU fault: no host IOMMU mapping")
