"""``viommu-sim sysfs iommu_groups`` against the real reference captures' sysfs dump."""

import pytest

from models.guest._iova import IOMMU_RESV_MSI, IOMMU_RESV_SW_MSI, ResvRegion
from models.guest._sysfs import format_reserved_regions, insert_resv_region
from test_cli_lspci import CAPTURES, REFBOOT_FLAGS, SEEDLIKE_FLAGS, capture_section
from viommu_sim.cli import main


def sysfs_out(capsys, argv) -> str:
    assert main(["sysfs", "iommu_groups", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_iommu_groups_are_the_seedlike_capture(capsys):
    """Numbers, members, DMA-FQ (lazy 6.12) and the PROBE's MSI region, byte for byte."""
    assert sysfs_out(capsys, SEEDLIKE_FLAGS) == capture_section("lspci-seedlike-lazy-smp4.txt",
                                                                "/sys/kernel/iommu_groups")


@pytest.mark.parametrize("capture", ["lspci-smp4.txt", "lspci-annotated-lazy-smp4.txt"])
def test_iommu_groups_of_the_modular_runs_are_the_captures(capsys, capture):
    """Without the blacklist the modular boot retries intel-agp's deferred probe as soon as the
    virtio_iommu module binds: 00:00.0 takes group 0, then ahci 1, nvme 2, e1000e 3, i801 joins 1."""
    assert CAPTURES[capture] is REFBOOT_FLAGS
    out = sysfs_out(capsys, REFBOOT_FLAGS)
    assert out == capture_section(capture, "/sys/kernel/iommu_groups")
    assert out.splitlines()[0] == "group 0: devices=0000:00:00.0  type=DMA-FQ"


def test_seed_machine_groups_are_strict_dma(capsys):
    """The seed's 6.7 guest: four groups, intel-agp's 00:00.0 last, DMA (6.7 has no lazy virtio-iommu)."""
    out = sysfs_out(capsys, [])
    assert out.splitlines()[0::2] == [
        "group 0: devices=0000:00:1f.2 0000:00:1f.3  type=DMA", "group 1: devices=0000:00:04.0  type=DMA",
        "group 2: devices=0000:00:02.0  type=DMA", "group 3: devices=0000:00:00.0  type=DMA"]
    assert set(out.splitlines()[1::2]) == {"    resv: 0x00000000fee00000 0x00000000feefffff msi"}


def test_reserved_regions_merge_as_the_kernel_does():
    """iommu_insert_resv_region: sorted by start, same-type overlapping/adjacent regions merged,
    other types kept apart; printed 0x%016llx 0x%016llx %s."""
    regions: list[ResvRegion] = []
    for region in (ResvRegion(0x2000, 0x1000, IOMMU_RESV_MSI), ResvRegion(0x1000, 0x1000, IOMMU_RESV_MSI),
                   ResvRegion(0x1800, 0x100, IOMMU_RESV_SW_MSI), ResvRegion(0x8000, 0x10, IOMMU_RESV_MSI)):
        regions = insert_resv_region(region, regions)
    assert format_reserved_regions(tuple(regions)) == (
        "0x0000000000001000 0x0000000000002fff msi\n"
        "0x0000000000001800 0x00000000000018ff msi\n"
        "0x0000000000008000 0x000000000000800f msi\n")


@pytest.mark.parametrize(("argv", "needle"), [([], "TREE"), (["bogus"], "bogus"),
                                              (["iommu_groups", "--smp", "0"], "--smp")])
def test_sysfs_bad_arguments_are_one_line_exit_2(capsys, argv, needle):
    """A missing or unknown tree, or a bad machine flag: one stderr line naming it, exit 2."""
    try:
        status = main(["sysfs", *argv])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and needle in err
