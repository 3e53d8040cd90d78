"""The guest log: dmesg timestamps, dev_printk prefixes, egrep-style filtering."""

import pytest

from models.guest._printk import LOGLEVEL_NOTICE, Printk, dev_prefix, format_timestamp, pci_name
from sim import ms, ns, seconds, us

SEED_FILTERED = """\
[    0.546116] iommu: Default domain type: Translated
[    0.546396] iommu: DMA domain TLB invalidation policy: lazy mode
[    0.650701] virtio_iommu virtio0: input address: 64 bits
[    0.651199] virtio_iommu virtio0: page mask: 0x40201000
[    0.653841] ahci 0000:00:1f.2: Adding to iommu group 0
[    0.655212] nvme 0000:00:04.0: Adding to iommu group 1
[    1.107177] nvme nvme0: pci function 0000:00:04.0
[    1.118350] nvme nvme0: Shutdown timeout set to 10 seconds
[    1.126691] e1000e 0000:00:02.0: Adding to iommu group 2
[    1.129530] nvme nvme0: 4/0/0 default/read/poll queues
[    1.231812] i801_smbus 0000:00:1f.3: Adding to iommu group 0
[    1.249333] agpgart-intel 0000:00:00.0: Adding to iommu group 3
"""


def test_printk_timestamp_truncates_ps_to_microseconds():
    """Stamps are [%5lu.%06lu] of seconds and microseconds truncated from the ns clock."""
    assert format_timestamp(ns(546116000)) == "[    0.546116] "
    assert format_timestamp(ns(546116999) + 999) == "[    0.546116] "
    assert format_timestamp(0) == "[    0.000000] "
    assert format_timestamp(seconds(12345) + us(678901)) == "[12345.678901] "
    assert format_timestamp(seconds(123456)) == "[123456.000000] "


def test_printk_timestamp_rejects_negative_or_non_int_time():
    """A time that is not a non-negative int of ps is refused with a message."""
    with pytest.raises(ValueError, match="non-negative int"):
        format_timestamp(-1)
    with pytest.raises(ValueError, match="non-negative int"):
        format_timestamp(1.5)  # type: ignore[arg-type]


def test_printk_pci_name_and_dev_prefix_follow_dev_name():
    """PCI functions are named ssss:bb:dd.f and dev_printk prefixes are '<driver> <name>: '."""
    assert pci_name(0xFA) == "0000:00:1f.2"
    assert pci_name(0x20) == "0000:00:04.0"
    assert pci_name(0x0100 | 0x08 | 3, segment=1) == "0001:01:01.3"
    assert dev_prefix("nvme", "nvme0") == "nvme nvme0: "
    with pytest.raises(ValueError):
        pci_name(0x10000)
    with pytest.raises(ValueError):
        dev_prefix("", "virtio0")


def test_printk_reproduces_seed_dmesg_filtered_by_egrep():
    """Logging the seed's messages at their times and filtering like egrep gives the seed's text."""
    log = Printk()
    log.log(us(546116) + 420, "iommu: Default domain type: Translated\n")
    log.log(us(546396), "iommu: DMA domain TLB invalidation policy: lazy mode\n")
    log.log(us(600000), "pci_bus 0000:00: resource 4 [io  0x0000-0x0cf7 window]")
    log.dev_info(us(650701), "virtio_iommu", "virtio0", "input address: 64 bits\n")
    log.dev_info(us(651199), "virtio_iommu", "virtio0", "page mask: 0x40201000\n")
    log.dev_info(us(653841), "ahci", pci_name(0xFA), "Adding to iommu group 0\n")
    log.dev_info(us(655212), "nvme", pci_name(0x20), "Adding to iommu group 1\n")
    log.dev_info(us(1107177), "nvme", "nvme0", f"pci function {pci_name(0x20)}\n")
    log.dev_info(us(1118350), "nvme", "nvme0", "Shutdown timeout set to 10 seconds\n")
    log.dev_info(us(1126691), "e1000e", pci_name(0x10), "Adding to iommu group 2\n")
    log.dev_info(us(1129530), "nvme", "nvme0", "4/0/0 default/read/poll queues\n")
    log.log(us(1200000), "ata1: SATA link down (SStatus 0 SControl 300)")
    log.dev_info(us(1231812), "i801_smbus", pci_name(0xFB), "Adding to iommu group 0\n")
    log.dev_info(us(1249333), "agpgart-intel", pci_name(0x00), "Adding to iommu group 3\n")
    assert log.dmesg("nvme|iommu|virtio") == SEED_FILTERED
    assert len(log.lines()) == 14
    assert log.lines()[2] == "[    0.600000] pci_bus 0000:00: resource 4 [io  0x0000-0x0cf7 window]"


def test_printk_grep_matches_whole_rendered_line():
    """egrep sees the timestamp too, and a bad pattern is a ValueError naming it."""
    log = Printk()
    log.log(ms(1), "hello")
    assert log.grep(r"^\[    0\.001000\] hello$") == ["[    0.001000] hello"]
    assert log.grep("absent") == []
    with pytest.raises(ValueError, match="bad dmesg filter"):
        log.grep("(")


def test_printk_records_keep_level_and_reject_multiline_text():
    """dev_notice records carry level 5; one record is one line."""
    log = Printk()
    rec = log.dev_notice(0, "nvme", "0000:00:04.0", "Using 64-bit DMA addresses\n")
    assert (rec.level, rec.text) == (LOGLEVEL_NOTICE, "nvme 0000:00:04.0: Using 64-bit DMA addresses")
    assert log.records == (rec,)
    with pytest.raises(ValueError, match="one line"):
        log.log(0, "a\nb\n")
    with pytest.raises(ValueError, match="level"):
        log.log(0, "x", level=9)
