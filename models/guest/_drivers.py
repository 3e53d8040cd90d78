"""Minimal Linux drivers for the q35 functions other than the NVMe: as far as they bind, probe the IOMMU and map DMA.

* ``agpgart-intel`` (drivers/char/agp/intel-agp.c) matches the MCH 8086:29c0;
  its probe looks for an integrated graphics device, finds none on q35
  (``intel_gmch_probe`` fails) and returns -ENODEV — after ``dma_configure``
  has already put 00:00.0 in an IOMMU group, which is why the seed shows
  "agpgart-intel 0000:00:00.0: Adding to iommu group 3" and nothing else.
* ``ahci`` (drivers/ata/ahci.c ``ahci_init_one``): reads the HBA's port count
  and implemented-ports mask, and for each implemented port allocates the
  port's command list, received-FIS area and command tables in one coherent
  buffer (``ahci_port_start``: ``AHCI_PORT_PRIV_DMA_SZ`` = 0x400 + 0x100 +
  32 x (0x80 + 16 x 168) = 91392 bytes with the q35 ICH9's 32 command slots and
  168 PRD entries).  libata's probing of the attached drives (IDENTIFY,
  INQUIRY, ...) is not modelled; ARCHITECTURE.md lists that difference.
* ``e1000e`` (drivers/net/ethernet/intel/e1000e): binds and maps nothing until
  the interface is brought up (the reference boot confirms: attached, no MAP).
* ``i801_smbus`` (drivers/i2c/busses/i2c-i801.c): binds, does no DMA.
"""

from __future__ import annotations

from typing import Any

from sim import ms, sleep

from .._errno import EIO, ENODEV
from ._device import GuestDevice

PCI_COMMAND = 0x04
PCI_CAP_ID_MSI = 0x05
#: AHCI generic host control registers (drivers/ata/ahci.h)
HOST_CAP, HOST_CTL, HOST_PORTS_IMPL, HOST_VERSION = 0x00, 0x04, 0x0C, 0x10
HOST_RESET, HOST_AHCI_EN = 1 << 0, 1 << 31
HOST_CAP_64 = 1 << 31
PORT_BASE, PORT_SIZE = 0x100, 0x80
#: ata_wait_register(..., interval 1 ms, timeout 1000 ms) in ahci_reset_controller
AHCI_RESET_POLL_PS = ms(1)
AHCI_RESET_POLLS = 1000

#: ahci.h: command list (32 slots x 32 B) + received FIS (256 B) + 32 command tables of 0x80 + 168 PRDs x 16 B
AHCI_CMD_SLOTS = 32
AHCI_MAX_SG = 168
AHCI_PORT_PRIV_DMA_SZ = AHCI_CMD_SLOTS * 32 + 256 + AHCI_CMD_SLOTS * (0x80 + AHCI_MAX_SG * 16)


async def agp_intel_probe(kernel: Any, dev: GuestDevice, cpu: int) -> int:
    """intel-agp: no IGD on q35 -> -ENODEV (the group and domain stay)."""
    return -ENODEV


async def ahci_probe(kernel: Any, dev: GuestDevice, cpu: int) -> int:
    """ahci_init_one, through the HBA's registers: enable, read CAP/PI/VS, MSI, reset, then
    ahci_port_start (one coherent buffer) and the port's register set-up for every implemented port."""
    bus, bdf = kernel.machine.bus, dev.bdf
    bar = dev.info.bar(5)
    if bar is None:
        return -ENODEV
    abar = bar.address
    # pcim_enable_device + pci_set_master
    await bus.config_write(bdf, PCI_COMMAND, 2, await bus.config_read(bdf, PCI_COMMAND, 2) | 0x6)
    # ahci_save_initial_config (with ahci_enable_ahci)
    cap = await bus.mmio_read(abar + HOST_CAP, 4)
    ctl = await bus.mmio_read(abar + HOST_CTL, 4)
    if not ctl & HOST_AHCI_EN:
        await bus.mmio_write(abar + HOST_CTL, 4, ctl | HOST_AHCI_EN)
    ports_impl = await bus.mmio_read(abar + HOST_PORTS_IMPL, 4)
    await bus.mmio_read(abar + HOST_VERSION, 4)
    dev.set_dma_mask(64 if cap & HOST_CAP_64 else 32)  # ahci_configure_dma_masks
    # pci_alloc_irq_vectors(1, n, MSI): program and enable the MSI capability
    msi = next((off for cid, off in dev.info.capabilities if cid == PCI_CAP_ID_MSI), None)
    if msi is not None:
        control = await bus.config_read(bdf, msi + 2, 2)
        await bus.config_write(bdf, msi + 4, 4, 0xFEE0_0000)
        await bus.config_write(bdf, msi + 8, 4, 0)
        await bus.config_write(bdf, msi + 12, 2, 0x0041)
        await bus.config_write(bdf, msi + 2, 2, control | 1)
    # ahci_reset_controller: HOST_RESET, then ata_wait_register until it clears (bounded)
    ctl = await bus.mmio_read(abar + HOST_CTL, 4)
    await bus.mmio_write(abar + HOST_CTL, 4, ctl | HOST_RESET)
    await bus.mmio_read(abar + HOST_CTL, 4)  # flush
    for _ in range(AHCI_RESET_POLLS):
        if not await bus.mmio_read(abar + HOST_CTL, 4) & HOST_RESET:
            break
        await sleep(AHCI_RESET_POLL_PS)
    else:
        kernel.dev_info(dev, "controller reset failed (0x%x)" % ctl)
        return -EIO
    # ahci_init_controller: per port, clear and read its interrupt status; then ahci_port_start per port
    nports = (cap & 0x1F) + 1
    ports = [p for p in range(32) if ports_impl >> p & 1][:nports]
    for port in ports:
        await bus.mmio_read(abar + PORT_BASE + port * PORT_SIZE + 0x10, 4)
        await bus.mmio_write(abar + PORT_BASE + port * PORT_SIZE + 0x10, 4, 0xFFFF_FFFF)
    for port in ports:
        await dev.dma_ops.alloc_coherent(cpu, AHCI_PORT_PRIV_DMA_SZ)
        regs = abar + PORT_BASE + port * PORT_SIZE
        for off in (0x00, 0x04, 0x08, 0x0C):  # command list and FIS base, lo/hi (ahci_start_fis_rx)
            await bus.mmio_write(regs + off, 4, 0)
        await bus.mmio_write(regs + 0x18, 4, 0x10)  # PxCMD.FRE
    return 0


async def no_dma_probe(kernel: Any, dev: GuestDevice, cpu: int) -> int:
    """e1000e and i801_smbus at boot: bound, nothing mapped."""
    return 0
