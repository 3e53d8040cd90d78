"""The Linux guest boots on every peer flavour: the driver copes with each VMM's virtio-iommu.

Both peers offer VERSION_1 and MAP_UNMAP (what Linux's ``viommu_probe`` requires), so
the boot goes through; what the guest prints differs only where the device does: the
page mask cloud-hypervisor presents, and the timing (crosvm's unattached endpoints
never bypass, so the assigned NVMe's ATTACH has no RAM mappings to tear down).
"""

from __future__ import annotations

import re

import pytest

from viommu_sim.cli import main


def _dmesg(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["boot", *args]) == 0
    return [re.sub(r"^\[\s*[0-9.]+\] ", "", line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(("flavor", "page_mask"), [("cloud-hypervisor", "0x201000"), ("crosvm", "0x40201000")])
def test_boot_on_a_peer_flavour_prints_qemus_dmesg_but_the_page_mask(capsys, flavor, page_mask):
    """The same driver messages in the same order as on QEMU; the page mask is the VMM's."""
    qemu = _dmesg(capsys)
    peer = _dmesg(capsys, "--flavor", flavor)
    assert [line for line in peer if "page mask" not in line] == [line for line in qemu if "page mask" not in line]
    assert f"virtio_iommu virtio0: page mask: {page_mask}" in peer


def test_boot_on_crosvm_attaches_the_assigned_nvme_without_tearing_down_an_identity_map(capsys):
    """QEMU boots with bypass on, so ATTACH of the VFIO NVMe unmaps guest RAM from its container (450 ms);
    crosvm has no bypass, the container starts empty and the NVMe driver probes at once."""
    def probe_time(*args: str) -> float:
        assert main(["boot", *args]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "nvme nvme0: pci function" in x)
        return float(line[1:line.index("]")])

    assert probe_time() - probe_time("--flavor", "crosvm") > 0.4
