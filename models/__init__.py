"""Models of the machine: guest memory, PCI/q35, virtio-pci + split virtqueue,
virtio-iommu, host VFIO/IOMMU, NVMe, and the Linux-like guest stack.

Models talk to each other only through guest memory, config space, MMIO and
interrupts (the PCI bus) and through the simulation kernel.
"""

from ._config import ConfigError as ConfigError, MachineConfig as MachineConfig, parse_size as parse_size
from ._cost import CostModel as CostModel
from ._memory import GuestMemory as GuestMemory, MemoryAccessError as MemoryAccessError

__all__ = ["ConfigError", "CostModel", "GuestMemory", "MachineConfig", "MemoryAccessError", "parse_size"]
