"""The simulated 6.12 boot against the real QEMU + Linux 6.12 boot in shared/reference/refboot.

Compared for the devices both machines have (the reference has an emulated
NVMe and an AHCI with a CD-ROM): the PROBE/ATTACH order per endpoint, the
AHCI port buffers and the NVMe bring-up's MAP/UNMAP sequence (IOVA, size,
flags), and how lazy UNMAPs are batched.  Where they differ, ARCHITECTURE.md
says why.
"""

import csv
import json

import pytest

from reference_data import refboot
from viommu_sim.cli import main

NVME, AHCI = 32, 250


def simulated(tmp_path, capsys, *flags):
    path = tmp_path / "boot.jsonl"
    assert main(["boot", "--guest-kernel", "6.12", "--nvme", "emulated", "--trace", str(path), *flags]) == 0
    capsys.readouterr()
    return [json.loads(line) for line in path.read_text().splitlines()]


def reference(run):
    with open(refboot(f"requests-{run}.tsv"), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def sim_attach_order(recs):
    return [r["ep_id"] for r in recs if r["ev"] == "virtio_iommu_attach"]


def ref_attach_order(rows):
    return [int(r["endpoint"]) for r in rows if r["type"] == "ATTACH"]


def sim_ops(recs, endpoint):
    dom = next(r["domain_id"] for r in recs if r["ev"] == "virtio_iommu_attach" and r["ep_id"] == endpoint)
    out = []
    for r in recs:
        if r["ev"] in ("virtio_iommu_map", "virtio_iommu_unmap") and r["domain_id"] == dom:
            size = r["virt_end"] - r["virt_start"] + 1
            out.append(("MAP" if r["ev"] == "virtio_iommu_map" else "UNMAP", r["virt_start"], size,
                        r["flags"] if r["ev"] == "virtio_iommu_map" else None))
    return out


def ref_ops(rows, endpoint):
    dom = next(r["domain"] for r in rows if r["type"] == "ATTACH" and int(r["endpoint"]) == endpoint)
    return [(r["type"], int(r["iova_start"], 16), int(r["size"], 16), int(r["flags"]) if r["flags"] else None)
            for r in rows if r["type"] in ("MAP", "UNMAP") and r["domain"] == dom]


def test_probe_attach_order_per_endpoint_matches_the_seedlike_reference(tmp_path, capsys):
    """With intel-agp's initcall blacklisted as in the seedlike run: ahci, nvme, e1000e, i801, each PROBE then ATTACH."""
    recs = simulated(tmp_path, capsys, "--initcall-blacklist", "agp_intel_init")
    assert sim_attach_order(recs) == ref_attach_order(reference("seedlike-lazy-smp4")) == [AHCI, NVME, 16, 251]
    handled = [r["ev"] for r in recs if r["ev"] in ("virtio_iommu_handle_probe", "virtio_iommu_handle_attach")]
    assert handled == ["virtio_iommu_handle_probe", "virtio_iommu_handle_attach"] * 4


def test_nvme_bring_up_map_sequence_matches_the_reference_through_the_io_queues(tmp_path, capsys):
    """Admin queues, Identify/log/feature buffers, DBBUF pages and the four I/O queue pairs: same IOVAs, sizes, flags."""
    ours = sim_ops(simulated(tmp_path, capsys), NVME)
    theirs = ref_ops(reference("lazy-smp4"), NVME)
    io_queues_end = next(i for i, op in enumerate(theirs) if op[:3] == ("MAP", 0xFFF80000, 0x10000)) + 1
    assert io_queues_end == 22
    assert ours[:io_queues_end] == theirs[:io_queues_end]
    # the scan that follows maps fresh single DMA_FROM_DEVICE pages below the queues in both
    assert ours[io_queues_end][:3] == theirs[io_queues_end][:3] == ("MAP", 0xFFF7F000, 0x1000)


def test_ahci_port_buffers_match_the_reference(tmp_path, capsys):
    """Six 91392-byte coherent port buffers, each as 64K+16K+8K+4K chunks in a 128 KiB block, top-down."""
    ours = sim_ops(simulated(tmp_path, capsys), AHCI)
    theirs = ref_ops(reference("lazy-smp4"), AHCI)
    assert ours[:24] == theirs[:24]


@pytest.mark.parametrize("policy, alone", [("lazy", False), ("strict", True)])
def test_6_12_lazy_unmaps_reach_the_device_with_the_next_request(tmp_path, capsys, policy, alone):
    """6.12 lazy: an UNMAP is queued without a kick and arrives with the next request; strict: each is kicked alone."""
    recs = simulated(tmp_path, capsys, "--iommu-policy", policy)
    kicks, cur = [], None
    for r in recs:
        if r["ev"] == "virtio_iommu_handle_command":
            cur = []
            kicks.append(cur)
        elif r["ev"].startswith("virtio_iommu_handle_") and cur is not None:
            cur.append(r["ev"][len("virtio_iommu_handle_"):])
    with_unmap = [k for k in kicks if "unmap" in k]
    assert with_unmap
    assert all((k == ["unmap"]) == alone for k in with_unmap)


#: the reference initramfs's modules, in its insmod order (refboot/README.md 3.1)
MODULES = "virtio_iommu,scsi_common,scsi_mod,libata,libahci,ahci,nvme_auth,nvme_core,nvme,e1000e,i2c_smbus,i2c_i801"


@pytest.mark.parametrize("run", ["lazy-smp4", "annotated-lazy-smp4"])
def test_the_modular_boot_gives_the_references_probe_attach_order(tmp_path, capsys, run):
    """Debian's modular 6.12: intel-agp (built in) defers until virtio_iommu's module binds, then is
    retried at once (endpoint 0 first, group 0); ahci, nvme, e1000e, i801 follow their insmods."""
    recs = simulated(tmp_path, capsys, "--modules", MODULES, "--memory", "2G")
    assert sim_attach_order(recs) == ref_attach_order(reference(run)) == [0, AHCI, NVME, 16, 251]
    handled = [r["ev"] for r in recs if r["ev"] in ("virtio_iommu_handle_probe", "virtio_iommu_handle_attach")]
    assert handled == ["virtio_iommu_handle_probe", "virtio_iommu_handle_attach"] * 5


def test_the_modular_boot_keeps_the_ahci_and_nvme_sequences_of_the_reference(tmp_path, capsys):
    """Loading the drivers as modules moves when they bind, not what they map."""
    recs = simulated(tmp_path, capsys, "--modules", MODULES, "--memory", "2G")
    theirs = reference("lazy-smp4")
    assert sim_ops(recs, AHCI)[:24] == ref_ops(theirs, AHCI)[:24]
    assert sim_ops(recs, NVME)[:22] == ref_ops(theirs, NVME)[:22]
