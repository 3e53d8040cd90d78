"""What an NVMe controller is: the two identities this simulator can put behind BAR0.

An ``NvmeIdentity`` is a frozen value holding everything that differs between
controllers: PCI IDs and BAR0/MSI-X geometry (PCI 3.0 config header, MSI-X
capability), CAP and VS (NVMe 1.4 section 3.1.1 / 3.1.2), the Identify Controller
and Identify Namespace data (section 5.15), the supported CNS values, admin and
NVM opcodes and features, and the guesses behind any value not taken from a
reference.  ``emulated`` selects QEMU hw/nvme semantics where QEMU and a physical
device differ.

* ``QEMU_NVME`` ("emulated"): QEMU's own 1b36:0010 device as hw/nvme/ctrl.c
  nvme_init_ctrl / nvme_init_pci and hw/nvme/ns.c nvme_ns_init build it (QEMU 8.2).
* ``PM173X`` ("vfio"): the Samsung PM1733 (144d:a824) passed through with VFIO, from
  the reference's id-ctrl dump (pci-nvme.md sections 1.3 and 6).
"""

from __future__ import annotations

import struct

import attrs

from ._pci_ids import (
    PCI_DEVICE_ID_REDHAT_NVME,
    PCI_DEVICE_ID_SAMSUNG_PM173X,
    PCI_SUBDEVICE_ID_QEMU,
    PCI_SUBDEVICE_ID_SAMSUNG_PM173X,
    PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
    PCI_VENDOR_ID_REDHAT,
    PCI_VENDOR_ID_SAMSUNG,
)
from ._nvme_data import IdentifyController, IdentifyNamespace, LbaFormat, PowerState
from ._nvme_wire import (
    ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_CREATE_CQ, ADMIN_CREATE_SQ, ADMIN_DBBUF_CONFIG,
    ADMIN_DELETE_CQ, ADMIN_DELETE_SQ, ADMIN_GET_FEATURES, ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY,
    ADMIN_SECURITY_RECV, ADMIN_SECURITY_SEND, ADMIN_SET_FEATURES, CNS_CS_CTRL, CNS_CS_NS,
    CNS_CS_NS_ACTIVE_LIST, CNS_CTRL, CNS_IO_COMMAND_SET, CNS_NS, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST,
    CNS_NS_PRESENT, CNS_NS_PRESENT_LIST, FEAT_ARBITRATION, FEAT_ASYNC_EVENT, FEAT_CAP_CHANGEABLE, FEAT_CAP_NS,
    FEAT_CMD_SET_PROFILE, FEAT_ERROR_RECOVERY, FEAT_HOST_BEHAVIOR, FEAT_IRQ_COALESCE, FEAT_IRQ_CONFIG,
    FEAT_NUM_QUEUES, FEAT_POWER_MGMT, FEAT_TEMP_THRESHOLD, FEAT_TIMESTAMP, FEAT_VOLATILE_WC,
    FEAT_WRITE_ATOMIC, IDENTIFY_SIZE, IO_COMPARE, IO_DSM, IO_FLUSH, IO_READ, IO_WRITE, IO_WRITE_ZEROES,
    NIDT_CSI, NIDT_EUI64, NIDT_NGUID, NIDT_UUID, make_cap,
)


@attrs.frozen(kw_only=True)
class NamespaceSpec:
    """One namespace: its Identify Namespace data and its Namespace Identification Descriptors."""

    nsid: int
    id_ns: IdentifyNamespace
    descriptors: tuple[tuple[int, bytes], ...] = ()


@attrs.frozen(kw_only=True)
class NvmeIdentity:
    """What a controller is: PCI identity, registers, Identify data, limits and supported commands.

    ``emulated`` selects QEMU hw/nvme semantics where QEMU and a physical device differ
    (fault handling, some status codes, CC reset to 0, CFS clearing RDY).
    """

    name: str
    emulated: bool
    pci_vendor: int
    pci_device: int
    pci_subsystem_vendor: int
    pci_subsystem: int
    pci_revision: int
    pci_class: int
    bar0_size: int
    msix_vectors: int
    msix_table_offset: int
    msix_pba_offset: int
    cap: int
    vs: int
    max_ioqpairs: int
    id_ctrl: IdentifyController
    #: Identify CNS 06h (CSI 0) data, or None when the controller rejects CNS 06h
    id_ctrl_nvm: bytes | None
    namespaces: tuple[NamespaceSpec, ...]
    identify_cns: frozenset[int]
    admin_opcodes: frozenset[int]
    io_opcodes: frozenset[int]
    #: supported feature id -> capability bits (FEAT_CAP_*), as Get Features SEL=3 reports them
    features: dict[int, int] = attrs.field(hash=False)
    temperature_k: int
    guesses: tuple[str, ...] = ()


_CHG = FEAT_CAP_CHANGEABLE

#: QEMU 8.2 hw/nvme: nvme_init_ctrl, nvme_init_pci (BAR0 = pow2ceil(regs + 65 queue doorbell pairs
#: + MSI-X table + PBA) = 16 KiB, table at 0x2000, PBA at 0x3000), hw/nvme/ns.c nvme_ns_init.
QEMU_NVME = NvmeIdentity(
    name="emulated",
    emulated=True,
    pci_vendor=PCI_VENDOR_ID_REDHAT, pci_device=PCI_DEVICE_ID_REDHAT_NVME,
    pci_subsystem_vendor=PCI_SUBVENDOR_ID_REDHAT_QUMRANET, pci_subsystem=PCI_SUBDEVICE_ID_QEMU,
    pci_revision=0x02, pci_class=0x010802,
    bar0_size=16 * 1024, msix_vectors=65, msix_table_offset=0x2000, msix_pba_offset=0x3000,
    cap=make_cap(mqes=0x7FF, cqr=1, ams=0, to=0xF, dstrd=0, nssrs=0, css=0x41, mpsmin=0, mpsmax=4),
    vs=0x00010400,
    max_ioqpairs=64,
    id_ctrl=IdentifyController(
        vid=PCI_VENDOR_ID_REDHAT, ssvid=PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
        sn="deadbeef", mn="QEMU NVMe Ctrl", fr="8.2.2", rab=6, ieee=0x525400,
        cmic=0, mdts=7, cntlid=0, ver=0x00010400, oaes=0x100, ctratt=0x8000, cntrltype=1,
        oacs=0x012A, acl=3, aerl=3, frmw=0x03, lpa=0x07, elpe=0, npss=0, wctemp=0x157, cctemp=0x175,
        sqes=0x66, cqes=0x44, nn=256, oncs=0x075D, vwc=0x07, sgls=0x00080001,
        subnqn="nqn.2019-08.org.qemu:deadbeef", psd=(PowerState(mp=0x9C4, enlat=0x10, exlat=0x4),),
    ),
    # NvmeIdCtrlNvm: vsl 7, wzsl 0, wusl 0, dmrl 255, dmrsl = BDRV_REQUEST_MAX_BYTES / 512, dmsl = dmrl * dmrsl
    id_ctrl_nvm=struct.pack("<BBBBIQ", 7, 0, 0, 255, 0x3FFFFF, 255 * 0x3FFFFF).ljust(IDENTIFY_SIZE, b"\0"),
    namespaces=(
        NamespaceSpec(
            nsid=1,
            id_ns=IdentifyNamespace(
                nsze=1 << 25, ncap=1 << 25, nuse=1 << 25, nsfeat=0x14, nlbaf=7, flbas=0, dlfeat=0x09,
                npwg=7, npwa=7, npdg=7, npda=7, nows=7, eui64=0x5254000000000001,
                lbaf=(LbaFormat(lbads=9), LbaFormat(ms=8, lbads=9), LbaFormat(ms=16, lbads=9),
                      LbaFormat(ms=64, lbads=9), LbaFormat(lbads=12), LbaFormat(ms=8, lbads=12),
                      LbaFormat(ms=16, lbads=12), LbaFormat(ms=64, lbads=12)),
            ),
            descriptors=(
                (NIDT_UUID, bytes.fromhex("5649534d00004000800000000000c001")),
                (NIDT_EUI64, bytes.fromhex("5254000000000001")),
                (NIDT_CSI, b"\0"),
            ),
        ),
    ),
    identify_cns=frozenset({CNS_NS, CNS_CTRL, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_CS_NS, CNS_CS_CTRL,
                            CNS_CS_NS_ACTIVE_LIST, CNS_NS_PRESENT_LIST, CNS_NS_PRESENT, CNS_IO_COMMAND_SET}),
    admin_opcodes=frozenset({ADMIN_DELETE_SQ, ADMIN_CREATE_SQ, ADMIN_GET_LOG_PAGE, ADMIN_DELETE_CQ,
                             ADMIN_CREATE_CQ, ADMIN_IDENTIFY, ADMIN_ABORT, ADMIN_SET_FEATURES,
                             ADMIN_GET_FEATURES, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_DBBUF_CONFIG}),
    io_opcodes=frozenset({IO_FLUSH, IO_WRITE, IO_READ, IO_COMPARE, IO_WRITE_ZEROES, IO_DSM}),
    features={FEAT_ARBITRATION: 0, FEAT_POWER_MGMT: 0, FEAT_TEMP_THRESHOLD: _CHG,
              FEAT_ERROR_RECOVERY: _CHG | FEAT_CAP_NS, FEAT_VOLATILE_WC: _CHG, FEAT_NUM_QUEUES: _CHG,
              FEAT_IRQ_COALESCE: 0, FEAT_IRQ_CONFIG: 0, FEAT_WRITE_ATOMIC: _CHG, FEAT_ASYNC_EVENT: _CHG,
              FEAT_TIMESTAMP: _CHG, FEAT_HOST_BEHAVIOR: _CHG, FEAT_CMD_SET_PROFILE: _CHG},
    temperature_k=0x143,
    guesses=(
        "fr '8.2.2': QEMU_VERSION of the host is not recorded; 8.2.2 assumed",
        "sn 'deadbeef': QEMU's serial= property is user supplied; policy value",
        "namespace size 16 GiB (2^25 x 512 B): the backing image size is a policy choice",
        "namespace UUID: QEMU generates a random one; a fixed value is used for determinism",
        "nsfeat 0x14 / dlfeat 0x09 / npwg..nows 7 from memory of hw/nvme/ns.c, not re-read",
    ),
)

_PM1733_SN = "S4YNNE0R500001"

#: Samsung PM1733 (144d:a824) per reference section 6 (id-ctrl of MZWLJ7T6HALA-00AU3, the
#: MZWLJ3T8HBLS-00007 model/firmware strings) and section 1.3 (BAR0 64-bit 32 KiB).
PM173X = NvmeIdentity(
    name="vfio",
    emulated=False,
    pci_vendor=PCI_VENDOR_ID_SAMSUNG, pci_device=PCI_DEVICE_ID_SAMSUNG_PM173X,
    pci_subsystem_vendor=PCI_VENDOR_ID_SAMSUNG, pci_subsystem=PCI_SUBDEVICE_ID_SAMSUNG_PM173X,
    pci_revision=0x00, pci_class=0x010802,
    bar0_size=32 * 1024, msix_vectors=130, msix_table_offset=0x2000, msix_pba_offset=0x3000,
    cap=make_cap(mqes=0x3FFF, cqr=1, ams=0, to=0x3C, dstrd=0, nssrs=0, css=0x01, mpsmin=0, mpsmax=0),
    vs=0x00010300,
    max_ioqpairs=128,
    id_ctrl=IdentifyController(
        vid=PCI_VENDOR_ID_SAMSUNG, ssvid=PCI_VENDOR_ID_SAMSUNG,
        sn=_PM1733_SN, mn="SAMSUNG MZWLJ3T8HBLS-00007", fr="EPK98B5Q", rab=8,
        ieee=0x002538, cmic=0, mdts=8, cntlid=0x41, ver=0x00010300, rtd3r=0xE4E1C0, rtd3e=0x989680,
        oaes=0x300, ctratt=0, oacs=0x5F, acl=127, aerl=15, frmw=0x17, lpa=0x0E, elpe=255, npss=0, apsta=0,
        wctemp=345, cctemp=358, hmpre=0, hmmin=0, tnvmcap=3_840_755_982_336, sanicap=0x3, sqes=0x66,
        cqes=0x44, maxcmd=0, nn=32, oncs=0x7F, fna=0x4, vwc=0, awun=65535, sgls=0x000F0002,
        subnqn=f"nqn.1994-11.com.samsung:nvme:PM1733:2.5-inch:{_PM1733_SN}",
        psd=(PowerState(mp=2500),),
    ),
    id_ctrl_nvm=None,
    namespaces=(
        NamespaceSpec(
            nsid=1,
            id_ns=IdentifyNamespace(
                nsze=7_501_476_528, ncap=7_501_476_528, nuse=7_501_476_528, nsfeat=0, nlbaf=1, flbas=0,
                dlfeat=0x09, nvmcap=3_840_755_982_336, nguid=bytes.fromhex("36344830526000010025384500000001"),
                eui64=0x0025384500000001, lbaf=(LbaFormat(lbads=9), LbaFormat(lbads=12)),
            ),
            descriptors=(
                (NIDT_EUI64, bytes.fromhex("0025384500000001")),
                (NIDT_NGUID, bytes.fromhex("36344830526000010025384500000001")),
            ),
        ),
    ),
    identify_cns=frozenset({CNS_NS, CNS_CTRL, CNS_NS_ACTIVE_LIST, CNS_NS_DESCR_LIST, CNS_NS_PRESENT_LIST,
                            CNS_NS_PRESENT}),
    admin_opcodes=frozenset({ADMIN_DELETE_SQ, ADMIN_CREATE_SQ, ADMIN_GET_LOG_PAGE, ADMIN_DELETE_CQ,
                             ADMIN_CREATE_CQ, ADMIN_IDENTIFY, ADMIN_ABORT, ADMIN_SET_FEATURES,
                             ADMIN_GET_FEATURES, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_SECURITY_SEND,
                             ADMIN_SECURITY_RECV}),
    io_opcodes=frozenset({IO_FLUSH, IO_WRITE, IO_READ, IO_COMPARE, IO_WRITE_ZEROES, IO_DSM}),
    features={FEAT_ARBITRATION: _CHG, FEAT_POWER_MGMT: _CHG, FEAT_TEMP_THRESHOLD: _CHG,
              FEAT_ERROR_RECOVERY: _CHG | FEAT_CAP_NS, FEAT_NUM_QUEUES: _CHG, FEAT_IRQ_COALESCE: _CHG,
              FEAT_IRQ_CONFIG: _CHG, FEAT_WRITE_ATOMIC: _CHG, FEAT_ASYNC_EVENT: _CHG, FEAT_TIMESTAMP: _CHG},
    temperature_k=310,
    guesses=(
        "PCI subsystem 144d:a801: OEM specific, unknown for host b6:00.0",
        "MSI-X: 130 vectors, table BAR0+0x2000, PBA BAR0+0x3000: unknown, must be measured",
        "CAP: MQES 0x3fff, TO 0x3c, DSTRD 0, NSSRS 0, MPSMAX 0: unknown, must be measured",
        "128 I/O queue pairs: the drive grants >= 8 (bare-metal dmesg), the maximum is unknown",
        "ssvid 0x144d, sn, cntlid 0x41 (from the Oracle part's dump): host-specific",
        "namespace: one active 3.84 TB namespace, 512 B LBAs, nguid/eui64 values invented",
        "Identify CNS 05h/06h answered Invalid Field (an NVMe 1.3 controller; reference 4.3 step 13)",
        "supported/changeable features, temperature 310 K: assumed",
        "fault reaction (DTE on read faults, CFS on SQ fetch faults, dropped posted writes)",
    ),
)

IDENTITIES: dict[str, NvmeIdentity] = {"vfio": PM173X, "emulated": QEMU_NVME}


def identity_named(name: str) -> NvmeIdentity:
    """The identity for a MachineConfig.nvme value ("vfio" or "emulated")."""
    try:
        return IDENTITIES[name]
    except KeyError:
        raise ValueError(f"unknown NVMe identity {name!r} (choose from {', '.join(IDENTITIES)})") from None

