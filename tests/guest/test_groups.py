"""IOMMU group formation and numbering (pci_device_group, pci_acs_enabled, ida_alloc)."""

import pytest

from models.guest._groups import (
    PCI_ACS_CR,
    PCI_ACS_RR,
    PCI_ACS_SV,
    PCI_ACS_UF,
    PCI_EXP_TYPE_RC_END,
    PCI_EXP_TYPE_ROOT_PORT,
    REQ_ACS_FLAGS,
    GroupAssignment,
    IommuGroups,
    PciFunctionInfo,
    pci_acs_enabled,
)
from models.guest._printk import Printk, pci_name

MCH, VGA, E1000E, VIOMMU, NVME, LPC, AHCI, SMBUS = 0x00, 0x08, 0x10, 0x18, 0x20, 0xF8, 0xFA, 0xFB


def seed_functions(nvme: bool = True) -> list[PciFunctionInfo]:
    """The seed's q35 root bus as enumeration reports it (pci-nvme.md §1.3, §3.1)."""
    funcs = [
        PciFunctionInfo(MCH),
        PciFunctionInfo(VGA),
        PciFunctionInfo(E1000E, pcie_type=PCI_EXP_TYPE_RC_END),
        PciFunctionInfo(VIOMMU),
        PciFunctionInfo(LPC, multifunction=True),
        PciFunctionInfo(AHCI, multifunction=True),
        PciFunctionInfo(SMBUS, multifunction=True),
    ]
    if nvme:
        funcs.append(PciFunctionInfo(NVME, pcie_type=PCI_EXP_TYPE_RC_END))
    return funcs


def probe_all(groups: IommuGroups, order: list[int]) -> list[tuple[int, int, bool]]:
    return [(a.bdf, a.group_id, a.created) for a in map(groups.probe_device, order)]


def test_groups_seed_probe_order_gives_seed_numbers():
    """ahci 0, nvme 1, e1000e 2, i801_smbus joins 0 (same slot, no ACS), agpgart-intel 3."""
    groups = IommuGroups(seed_functions())
    assert probe_all(groups, [AHCI, NVME, E1000E, SMBUS, MCH]) == [
        (AHCI, 0, True), (NVME, 1, True), (E1000E, 2, True), (SMBUS, 0, False), (MCH, 3, True),
    ]
    assert groups.groups() == ((0, (AHCI, SMBUS)), (1, (NVME,)), (2, (E1000E,)), (3, (MCH,)))
    assert groups.group_of(VGA) is None and groups.group_of(LPC) is None


def test_groups_messages_render_as_the_seed_dmesg_lines():
    """The 'Adding to iommu group N' text with the bound driver's dev_info prefix."""
    groups, log = IommuGroups(seed_functions()), Printk()
    for t, (bdf, driver) in enumerate([(AHCI, "ahci"), (NVME, "nvme"), (SMBUS, "i801_smbus")]):
        msg = groups.probe_device(bdf).message
        assert msg is not None
        log.dev_info(t, driver, pci_name(bdf), msg)
    assert [line[15:] for line in log.lines()] == [
        "ahci 0000:00:1f.2: Adding to iommu group 0",
        "nvme 0000:00:04.0: Adding to iommu group 1",
        "i801_smbus 0000:00:1f.3: Adding to iommu group 0",
    ]


def test_groups_without_nvme_numbers_shift_down():
    """A machine without the NVMe: e1000e takes 1 and the deferred host bridge 2."""
    groups = IommuGroups(seed_functions(nvme=False))
    assert probe_all(groups, [AHCI, E1000E, SMBUS, MCH]) == [
        (AHCI, 0, True), (E1000E, 1, True), (SMBUS, 0, False), (MCH, 2, True),
    ]


def test_groups_refboot_order_puts_the_host_bridge_first():
    """Debian's built-in intel_agp retried at virtio-iommu bind: agp 0, ahci 1, nvme 2, e1000e 3, i801 1."""
    groups = IommuGroups(seed_functions())
    assert probe_all(groups, [MCH, AHCI, NVME, E1000E, SMBUS]) == [
        (MCH, 0, True), (AHCI, 1, True), (NVME, 2, True), (E1000E, 3, True), (SMBUS, 1, False),
    ]


def test_groups_acs_enabled_follows_pci_acs_enabled():
    """Conventional functions are never isolated; single-function RCiEPs are; multifunction ones need ACS."""
    funcs = {f.bdf: f for f in seed_functions()}
    assert [pci_acs_enabled(funcs[b], REQ_ACS_FLAGS) for b in (MCH, E1000E, NVME, LPC, AHCI, SMBUS)] == [
        False, True, True, False, False, False,
    ]
    mf = PciFunctionInfo(0x30, multifunction=True, pcie_type=PCI_EXP_TYPE_RC_END)
    assert pci_acs_enabled(mf, REQ_ACS_FLAGS) is False  # no ACS capability
    with_acs = PciFunctionInfo(0x30, multifunction=True, pcie_type=PCI_EXP_TYPE_RC_END,
                               acs_cap=PCI_ACS_SV | PCI_ACS_RR, acs_ctrl=PCI_ACS_SV | PCI_ACS_RR)
    assert pci_acs_enabled(with_acs, REQ_ACS_FLAGS) is True  # CR/UF absent from the capability count as on
    half = PciFunctionInfo(0x30, multifunction=True, pcie_type=PCI_EXP_TYPE_RC_END,
                           acs_cap=PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF, acs_ctrl=PCI_ACS_SV)
    assert pci_acs_enabled(half, REQ_ACS_FLAGS) is False
    assert pci_acs_enabled(PciFunctionInfo(0x40, pcie_type=PCI_EXP_TYPE_ROOT_PORT), REQ_ACS_FLAGS) is False
    assert pci_acs_enabled(PciFunctionInfo(0x50, acs_quirk=True), REQ_ACS_FLAGS) is True


def test_groups_multifunction_device_with_acs_gets_one_group_per_function():
    """Functions of one slot that all enable ACS are isolated from each other."""
    acs = dict(multifunction=True, pcie_type=PCI_EXP_TYPE_RC_END, acs_cap=REQ_ACS_FLAGS, acs_ctrl=REQ_ACS_FLAGS)
    groups = IommuGroups([PciFunctionInfo(0x28, **acs), PciFunctionInfo(0x29, **acs)])
    assert probe_all(groups, [0x29, 0x28]) == [(0x29, 0, True), (0x28, 1, True)]


def test_groups_dma_alias_joins_the_aliased_functions_group():
    """A function that DMAs as another devfn (a quirk's dma_alias_mask) shares that function's group."""
    groups = IommuGroups([
        PciFunctionInfo(0x28, pcie_type=PCI_EXP_TYPE_RC_END),
        PciFunctionInfo(0x30, pcie_type=PCI_EXP_TYPE_RC_END, dma_alias_devfns=(0x28,)),
        PciFunctionInfo(0x38, pcie_type=PCI_EXP_TYPE_RC_END),
    ])
    assert probe_all(groups, [0x28, 0x38, 0x30]) == [(0x28, 0, True), (0x38, 1, True), (0x30, 0, False)]


def test_groups_release_frees_the_lowest_id_for_reuse():
    """A group dies with its last member and ida_alloc hands its id out again first."""
    groups = IommuGroups(seed_functions())
    probe_all(groups, [AHCI, NVME, E1000E, SMBUS])
    assert groups.release_device(NVME) == 1
    assert groups.release_device(AHCI) is None  # i801 still holds group 0
    assert groups.members(0) == (SMBUS,)
    assert groups.probe_device(MCH) == GroupAssignment(MCH, 1, True)
    assert groups.probe_device(AHCI) == GroupAssignment(AHCI, 0, False)


def test_groups_second_probe_of_a_device_adds_nothing():
    """iommu_probe_device on an already grouped device returns early without a message."""
    groups = IommuGroups(seed_functions())
    groups.probe_device(AHCI)
    again = groups.probe_device(AHCI)
    assert (again.group_id, again.added, again.message) == (0, False, None)
    assert groups.members(0) == (AHCI,)


def test_groups_reject_unknown_or_non_root_bus_functions():
    """Bad BDFs and duplicate functions get ValueErrors naming them."""
    groups = IommuGroups(seed_functions())
    with pytest.raises(ValueError, match="no PCI function 0x0030"):
        groups.probe_device(0x30)
    with pytest.raises(ValueError, match="not in an iommu group"):
        groups.release_device(AHCI)
    with pytest.raises(ValueError, match="not on the root bus"):
        PciFunctionInfo(0x0100)
    with pytest.raises(ValueError, match="listed twice"):
        IommuGroups([PciFunctionInfo(AHCI), PciFunctionInfo(AHCI)])
    with pytest.raises(ValueError, match="no iommu group 7"):
        groups.members(7)
