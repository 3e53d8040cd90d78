"""An NVMe namespace's media: the logical blocks behind one NSID.

Models the namespace as the NVM command set sees it (NVM Command Set 1.0 section
2.1 / NVMe 1.4 section 6: a range of LBAs of one LBA format, FLBAS selecting the
block size from Identify Namespace's LBA Format list).  The backing store is
sparse, like a thin-provisioned QEMU image (hw/nvme/ns.c over a block backend):
a dict LBA -> block bytes, where never-written and deallocated blocks read as
zeros (DLFEAT "read returns zeroes").  The controller checks ranges with
``in_range`` before it moves data (LBA Out of Range otherwise).
"""

from __future__ import annotations

from ._nvme_ident import NamespaceSpec


class Namespace:
    """A namespace's blocks: a dict LBA -> block bytes; never-written and deallocated blocks read as zeros."""

    def __init__(self, spec: NamespaceSpec) -> None:
        self.nsid = spec.nsid
        self.spec = spec
        self.block_size = spec.id_ns.block_size
        self.nsze = spec.id_ns.nsze
        self._zero = bytes(self.block_size)
        self._blocks: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"<Namespace {self.nsid} {self.nsze} x {self.block_size} B, {len(self._blocks)} written>"

    @property
    def written_blocks(self) -> int:
        return len(self._blocks)

    def in_range(self, slba: int, nlb: int) -> bool:
        return slba + nlb <= self.nsze

    def read(self, slba: int, nlb: int) -> bytes:
        get, zero = self._blocks.get, self._zero
        return b"".join([get(lba, zero) for lba in range(slba, slba + nlb)])

    def write(self, slba: int, data: bytes) -> None:
        bs = self.block_size
        blocks = self._blocks
        for i in range(len(data) // bs):
            blocks[slba + i] = data[i * bs:(i + 1) * bs]

    def deallocate(self, slba: int, nlb: int) -> None:
        pop = self._blocks.pop
        for lba in range(slba, slba + nlb):
            pop(lba, None)

