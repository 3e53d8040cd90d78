"""The `platform` fixture builds a machine through a factory registered from above the models layer."""

import pytest

import testbench
from testbench import _platform_hook

USES_PLATFORM = """
import testbench

@testbench.test
async def test_boot(sim, platform):
    machine = await platform(smp=2, iommu_policy="lazy", guest_kernel="6.12")
    assert machine["config"] == {"smp": 2, "iommu_policy": "lazy", "guest_kernel": "6.12"}
    assert machine["sim"] is sim
    assert machine["booted_at"] == 5000
"""

FACTORY = """
import testbench

async def build(config, sim):
    await testbench.Timer(testbench.ns(5))   # booting takes simulated time
    return {"config": config, "sim": sim, "booted_at": sim.now}
"""


@pytest.fixture(autouse=True)
def no_factory(monkeypatch):
    """Registrations made by the inner runs do not leak out of each test."""
    monkeypatch.setattr(_platform_hook, "_factory", None)


def test_platform_without_a_factory_boots_viommu_sims_own_machine(pytester):
    """No registered factory and no ini option: platform() builds the MachineConfig asked for and boots it."""
    pytester.makepyfile(test_p="""
import testbench

@testbench.test
async def test_boot(platform):
    p = await platform(smp=2, nvme="emulated")
    assert p.config.smp == 2 and p.machine.nvme is not None
    assert "nvme nvme0: 2/0/0 default/read/poll queues" in p.dmesg("nvme")
""")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_platform_calls_the_registered_factory_with_the_config_and_the_test_sim(pytester):
    """A factory registered in conftest.py gets the keyword arguments as a dict and the test's Simulator."""
    pytester.makeconftest(FACTORY + "\ntestbench.register_platform_factory(build)\n")
    pytester.makepyfile(test_p=USES_PLATFORM)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_platform_loads_the_factory_named_by_the_ini_option_lazily(pytester):
    """viommu_platform_factory = 'module:function' is imported on first use of platform()."""
    pytester.makepyfile(machine_factory=FACTORY, test_p=USES_PLATFORM)
    pytester.makeini("[pytest]\nviommu_platform_factory = machine_factory:build\npythonpath = .\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_platform_ini_option_errors_name_the_option(pytester):
    """A malformed or unimportable ini value fails the test naming the option and the value."""
    pytester.makepyfile(test_p=USES_PLATFORM)
    pytester.makeini("[pytest]\nviommu_platform_factory = no_such_module_xyz:build\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*viommu_platform_factory = 'no_such_module_xyz:build': cannot import 'no_such_module_xyz'*"])
    pytester.makeini("[pytest]\nviommu_platform_factory = just_a_module\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*viommu_platform_factory = 'just_a_module': write it as 'package.module:function'*"])


def test_register_platform_factory_refuses_a_non_callable():
    """Registering something that is not callable is refused at once."""
    with pytest.raises(TypeError, match="takes a callable fn"):
        testbench.register_platform_factory("models:boot")


def test_plugin_import_does_not_import_the_models():
    """Loading the plugin (every pytest run) leaves the models layer unimported."""
    import subprocess
    import sys

    code = "import sys, testbench._plugin; print(sorted(m for m in sys.modules if m.split('.')[0] == 'models'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
