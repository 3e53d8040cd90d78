"""lspci's default format, rendered from config space with the pinned pci.ids subset."""


import pytest

from models import MachineConfig
from models._machine import build_machine
from models.guest._lspci import PciIds, PciIdsError, lspci
from models.guest._pci_scan import enumerate_bus
from reference_data import seed_lspci_block
from sim import Simulator

def render(**changes) -> str:
    m = build_machine(MachineConfig().evolve(**changes), Simulator())
    return lspci(m.bus, (d.bdf for d in enumerate_bus(m.bus, m.memory)))


def test_default_machine_lspci_is_the_seeds():
    """The seed's machine prints the seed's eight lspci lines byte for byte."""
    expected = seed_lspci_block()
    assert len(expected.splitlines()) == 8
    assert render() == expected


def test_emulated_nvme_line():
    """--nvme emulated: QEMU's controller, named from pci.ids, revision 2."""
    lines = render(nvme="emulated").splitlines()
    assert lines[4] == "00:04.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (rev 02)"


def test_no_nvme_and_no_viommu_variants():
    """--nvme none drops 00:04.0; without the virtio-iommu the NVMe sits at 00:03.0."""
    assert [line[:7] for line in render(nvme="none").splitlines()] == [
        "00:00.0", "00:01.0", "00:02.0", "00:03.0", "00:1f.0", "00:1f.2", "00:1f.3"]
    assert render(viommu="none").splitlines()[3] == (
        "00:03.0 Non-Volatile memory controller: Samsung Electronics Co Ltd NVMe SSD Controller PM173X")


def test_name_rules_for_unknown_ids():
    """Unknown vendor -> 'Device vvvv:dddd'; known vendor, unknown device -> '<vendor> Device dddd'."""
    ids = PciIds.load()
    assert ids.device_name(0x1234, 0x1111) == "Device 1234:1111"
    assert ids.device_name(0x1AF4, 0x1057) == "Red Hat, Inc. Device 1057"
    assert ids.device_name(0x8086, 0x29C0) == "Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller"


def test_class_rules():
    """Subclass name if known, else '<base> [bbss]', else 'Class bbss'."""
    ids = PciIds.load()
    assert ids.class_name(0x0108) == "Non-Volatile memory controller"
    assert ids.class_name(0x00FF) == "Unclassified device [00ff]"
    assert ids.class_name(0xFF00) == "Class ff00"


def test_pci_ids_parser_reports_the_bad_line():
    """A malformed entry names its line number; subsystem lines are skipped."""
    ids = PciIds("8086  Intel Corporation\n\t10d3  82574L\n\t\t8086 0000  sub\n")
    assert ids.devices == {(0x8086, 0x10D3): "82574L"}
    with pytest.raises(PciIdsError, match="line 2"):
        PciIds("# c\nzz  Bad vendor\n")
    with pytest.raises(PciIdsError, match="line 1"):
        PciIds("\t10d3  orphan\n")
