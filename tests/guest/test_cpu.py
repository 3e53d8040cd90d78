"""A vCPU as a resource: one code path at a time, a waiting interrupt handler before waiting tasks."""

from __future__ import annotations

from models.guest._kernel import Cpu
from sim import Simulator, sleep, us


def _path(sim: Simulator, cpu: Cpu, name: str, irq: bool, start: int, length: int, log: list[tuple[int, str]]):
    async def body() -> None:
        await sleep(start)
        async with (cpu.irq() if irq else cpu.task()):
            log.append((sim.now, f"{name} in"))
            await sleep(length)
        log.append((sim.now, f"{name} out"))
    return sim.spawn(body(), name=name)


def test_paths_on_one_cpu_run_one_after_another_and_handlers_go_first() -> None:
    """A task holds the CPU; two tasks and then a handler queue up; the handler runs next, then the tasks in order."""
    sim = Simulator(seed=0)
    cpu, log = Cpu(0), []
    _path(sim, cpu, "submit0", False, 0, us(5), log)
    _path(sim, cpu, "submit1", False, us(1), us(5), log)
    _path(sim, cpu, "submit2", False, us(2), us(5), log)
    _path(sim, cpu, "irq", True, us(3), us(1), log)
    sim.run_sync()
    assert log == [(0, "submit0 in"), (us(5), "submit0 out"), (us(5), "irq in"), (us(6), "irq out"),
                   (us(6), "submit1 in"), (us(11), "submit1 out"), (us(11), "submit2 in"), (us(16), "submit2 out")]
    assert not cpu.busy


def test_a_cancelled_waiter_does_not_keep_the_cpu() -> None:
    """A path cancelled while it waits leaves the queue; the CPU goes to the next one, then is free."""
    sim = Simulator(seed=0)
    cpu, log = Cpu(0), []
    _path(sim, cpu, "holder", False, 0, us(4), log)
    victim = _path(sim, cpu, "victim", False, us(1), us(4), log)
    _path(sim, cpu, "next", False, us(2), us(1), log)
    sim.call_at(us(3), victim.cancel)
    sim.run_sync()
    assert log == [(0, "holder in"), (us(4), "holder out"), (us(4), "next in"), (us(5), "next out")]
    assert not cpu.busy
