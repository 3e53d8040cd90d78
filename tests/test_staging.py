"""The test helpers of ``tests/staging.py``: each stage is really reached, and ``run_task`` runs one task."""

from __future__ import annotations

import pytest
from staging import STAGES, StagedGuest, StageError, raw_machine, raw_send, run_task

from models._virtq_wire import CommonCfg, DeviceStatus
from models.guest._dma_iommu import DirectDma, DmaApi
from sim import Simulator, sleep, us

NVME = 0x20  # 00:04.0 on the seed's machine


def device_status(g: StagedGuest) -> int:
    assert g.viommu_driver is not None
    return g.run(g.viommu_driver.regs.read("common", CommonCfg.DEVICE_STATUS, 1))


# -- run_task ----------------------------------------------------------------------------------------------------


def test_run_task_returns_the_result_once_the_task_is_done() -> None:
    """The coroutine runs to its end in simulated time; its return value comes back."""
    sim = Simulator()

    async def work() -> tuple[str, int]:
        await sleep(us(3))
        return "done", sim.now

    assert run_task(sim, work()) == ("done", us(3))
    assert sim.now == us(3)


def test_run_task_stops_when_the_task_is_done_and_leaves_the_rest_pending() -> None:
    """Other tasks' later events stay queued for the next run."""
    sim = Simulator()
    log: list[int] = []

    async def later() -> None:
        await sleep(us(10))
        log.append(sim.now)

    async def short() -> int:
        await sleep(us(1))
        return 7

    sim.spawn(later())
    assert run_task(sim, short()) == 7
    assert (sim.now, log) == (us(1), [])
    sim.run_sync()
    assert log == [us(10)]


def test_run_task_re_raises_the_tasks_exception_with_its_type() -> None:
    """An exception that ends the task reaches the caller as it is (type and message)."""
    sim = Simulator()

    async def fails() -> None:
        await sleep(us(2))
        raise KeyError("no such endpoint")

    with pytest.raises(KeyError, match="no such endpoint"):
        run_task(sim, fails())
    assert sim.now == us(2)


def test_run_task_names_the_task_after_the_coroutine_or_as_asked() -> None:
    """Default: the coroutine's qualified name (what a printk splat shows); ``name`` overrides it."""
    sim = Simulator()
    names: list[str] = []

    async def who() -> None:
        task = sim.current_task()
        assert task is not None
        names.append(task.name)

    run_task(sim, who())
    run_task(sim, who(), name="boot")
    assert names == ["test_run_task_names_the_task_after_the_coroutine_or_as_asked.<locals>.who", "boot"]


# -- the stages --------------------------------------------------------------------------------------------------


def test_machine_stage_has_run_nothing(staged_guest) -> None:
    """The machine is built; no guest kernel, no time passed, no BARs assigned."""
    g = staged_guest("machine")
    assert (g.stage, g.kernel, g.core, g.viommu_driver, g.nvme_driver) == ("machine", None, None, None, None)
    assert g.sim.now == 0
    with pytest.raises(StageError, match="no guest kernel"):
        _ = g.nvme


def test_kernel_stage_has_the_enumerated_devices_and_no_iommu_core(staged_guest) -> None:
    """One GuestDevice per function, none bound; kernel.iommu is not there yet; nothing printed."""
    g = staged_guest("kernel")
    assert g.kernel is not None and g.core is None
    assert sorted(g.kernel.devices) == [0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB]
    assert all(d.driver is None and d.dma is None for d in g.kernel.devices.values())
    assert g.nvme.bdf == NVME and g.nvme.info.bar(0) is not None  # firmware assigned BAR0
    with pytest.raises(RuntimeError, match="has not initialised"):
        _ = g.kernel.iommu
    assert list(g.kernel.printk.records) == []


def test_iommu_stage_has_the_core_without_a_registered_driver(staged_guest) -> None:
    """iommu_subsys_init printed its two lines; no IOMMU driver registered, so a probe defers."""
    g = staged_guest("iommu", iommu_policy="strict")
    assert g.core is not None and g.kernel is not None and g.kernel.iommu is g.core
    assert not g.core.registered and g.viommu_driver is None
    assert [r.text for r in g.kernel.printk.records] == [
        "iommu: Default domain type: Translated",
        "iommu: DMA domain TLB invalidation policy: strict mode (set via kernel command line)"]
    assert g.dma_configure(0xFA, "ahci") == -517  # -EPROBE_DEFER


def test_viommu_stage_has_the_driver_registered_and_the_device_at_driver_ok(staged_guest) -> None:
    """The virtio-iommu is DRIVER_OK (ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK) and the core's IOMMU driver."""
    g = staged_guest("viommu")
    assert g.core is not None and g.core.registered and g.core.ops is g.viommu_driver
    assert device_status(g) == (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
                                | DeviceStatus.DRIVER_OK) == 15
    assert g.nvme.iommu_group is None and g.nvme_driver is None


def test_viommu_stage_without_a_virtio_iommu_leaves_the_core_unregistered(staged_guest) -> None:
    """viommu="none": the step finds no virtio-iommu-pci function and binds nothing."""
    g = staged_guest("viommu", viommu="none")
    assert g.stage == "viommu" and g.viommu_driver is None
    assert g.core is not None and not g.core.registered


def test_nvme_dma_stage_has_the_nvme_function_in_a_translated_domain(staged_guest) -> None:
    """dma_configure: group, dma-iommu ops and one ATTACH of 00:04.0; 64-bit masks; no NVMe driver yet."""
    g = staged_guest("nvme-dma")
    assert (g.nvme.driver, g.nvme.iommu_group, g.nvme.dma_mask_bits, g.nvme.coherent_dma_mask_bits) == (
        "nvme", 0, 64, 64)
    assert isinstance(g.nvme.dma, DmaApi) and g.core is not None and g.core.domain_of(g.nvme) is not None
    assert [r.fields["ep_id"] for r in g.sink.records if r.event == "virtio_iommu_attach"] == [NVME]
    assert g.nvme_driver is None


def test_nvme_dma_stage_without_a_virtio_iommu_keeps_direct_dma(staged_guest) -> None:
    """No VIOT: the NVMe function (00:03.0 here) gets the direct DMA ops and no group."""
    g = staged_guest("nvme-dma", viommu="none")
    assert isinstance(g.nvme.dma, DirectDma) and g.nvme.iommu_group is None


def test_nvme_stage_has_the_nvme_driver_probed_on_the_async_probe_cpu(staged_guest) -> None:
    """nvme_probe succeeded on CPU 1 (the boot's async worker): "nvme nvme0: pci function 0000:00:04.0"."""
    g = staged_guest("nvme", smp=2)
    assert g.probe_cpu == 1 and g.nvme_driver is not None and g.nvme_driver.error == 0
    assert [r.fields["cpu"] for r in g.sink.records if r.event == "nvme_probe"] == [1]
    assert "nvme nvme0: pci function 0000:00:04.0" in [r.text for r in g.kernel.printk.records]


def test_every_stage_is_a_step_further_than_the_one_before(staged_guest) -> None:
    """Each stage reports itself; simulated time never goes back from one stage to the next."""
    times = []
    for stage in STAGES:
        g = staged_guest(stage)
        assert g.stage == stage
        times.append(g.sim.now)
    assert times == sorted(times) and times[0] == times[1] == times[2] == 0 < times[3] < times[4] < times[5]


def test_advance_goes_on_from_a_stage_on_the_same_simulator(staged_guest) -> None:
    """A probe that deferred at "iommu" succeeds once the guest is advanced past "viommu"."""
    g = staged_guest("iommu")
    assert g.dma_configure(0x00, "agpgart-intel") == -517
    later = g.advance("viommu")
    assert (later.sim, later.kernel, later.core) == (g.sim, g.kernel, g.core) and later.viommu_driver is not None
    assert later.dma_configure(0x00, "agpgart-intel") == 0
    with pytest.raises(ValueError, match="stages only go forward"):
        later.advance("iommu")


def test_an_unknown_stage_names_the_stages(staged_guest) -> None:
    with pytest.raises(ValueError, match="unknown stage 'booted'; the stages are machine, kernel, iommu"):
        staged_guest("booted")


def test_a_failing_step_raises_stage_error(staged_guest) -> None:
    """A controller that never becomes ready: nvme_probe fails, so the guest cannot be at "nvme"."""
    from models import CostModel
    from sim import seconds

    with pytest.raises(StageError, match="nvme_probe returned -"):
        staged_guest("nvme", cost=CostModel().evolve(nvme_enable_ps=seconds(100)))


# -- the raw driver's machine ------------------------------------------------------------------------------------


def test_raw_machine_is_seeded_from_the_simulator_and_its_virtio_iommu_answers_raw_send() -> None:
    """raw_machine: the config seed is the simulator's; the raw driver's ATTACH creates domain 1 on the device."""
    sim = Simulator(seed=3)

    async def main() -> tuple[object, str]:
        machine, driver = await raw_machine(sim, nvme="emulated")
        return machine, (await raw_send(driver, "attach", domain=1, endpoint=NVME)).status_name

    machine, status = run_task(sim, main())
    assert (machine.config.seed, machine.config.nvme, status) == (3, "emulated", "OK")
    assert list(machine.viommu.domains) == [1]
