"""``lspci -v``/``-vv``'s capability lines, decoded from a function's config-space bytes.

The formats are those of pciutils 3.9.0 (the reference guest's ``lspci``):
ls-caps.c ``show_caps`` (the standard list from 0x34) with ``cap_pm``,
``cap_msi``, ``cap_msix``, ``cap_express`` (``cap_express_dev``,
``cap_express_dev2``; the link, slot and root parts are for ports and
endpoints with a link, which q35's root-bus functions -- Root Complex
Integrated Endpoints -- do not have), ``cap_sata_hba``; ls-caps-vendor.c
(virtio-pci's vendor capabilities); ls-ecaps.c ``show_ext_caps`` with
``cap_aer`` and ``cap_dsn``.  A capability these functions do not carry prints
pciutils' generic "Capability ID" line.  Written from the formats, not the code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._pci_caps import (
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_PM,
    PCI_CAP_ID_SATA,
    PCI_CAP_ID_VNDR,
    PCI_EXT_CAP_ID_DSN,
    PCI_EXT_CAP_ID_ERR,
)
from .._pci_config import PCI_CAPABILITY_LIST, PCI_STATUS, PCI_STATUS_CAP_LIST

PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_LEG_END, PCI_EXP_TYPE_ROOT_PORT = 0x0, 0x1, 0x4
PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_PCI_BRIDGE = 0x5, 0x6, 0x7
PCI_EXP_TYPE_PCIE_BRIDGE, PCI_EXP_TYPE_RC_END, PCI_EXP_TYPE_RC_EC = 0x8, 0x9, 0xA

_EXP_TYPES = {
    PCI_EXP_TYPE_ENDPOINT: "Endpoint", PCI_EXP_TYPE_LEG_END: "Legacy Endpoint",
    PCI_EXP_TYPE_UPSTREAM: "Upstream Port", PCI_EXP_TYPE_PCI_BRIDGE: "PCI-Express to PCI/PCI-X Bridge",
    PCI_EXP_TYPE_RC_END: "Root Complex Integrated Endpoint", PCI_EXP_TYPE_RC_EC: "Root Complex Event Collector",
}
_PM_AUX_CURRENT = (0, 55, 100, 160, 220, 270, 320, 375)
_TIMEOUT_RANGES = {0: "Not Supported", 1: "Range A", 2: "Range B", 3: "Range AB", 6: "Range BC", 7: "Range ABC",
                   14: "Range BCD", 15: "Range ABCD"}
_TIMEOUT_VALUES = {0: "50us to 50ms", 1: "50us to 100us", 2: "1ms to 10ms", 5: "16ms to 55ms", 6: "65ms to 210ms",
                   9: "260ms to 900ms", 10: "1s to 3.5s", 13: "4s to 13s", 14: "17s to 64s"}
_DEVCAP2_OBFF = ("Not Supported", "Via message", "Via WAKE#", "Via message/WAKE#")
_DEVCAP2_EPR = ("Not Supported", "Dev Specific", "Form Factor Dev Specific", "Reserved")
_DEVCAP2_TPH = ("TPHComp- ExtTPHComp-", "TPHComp+ ExtTPHComp-", "", "TPHComp+ ExtTPHComp+")
_DEVCTL2_OBFF = ("Disabled", "Via message A", "Via message B", "Via WAKE#")
_VIRTIO_CFG_TYPES = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg"}
_UE_BITS = (("DLP", 4), ("SDES", 5), ("TLP", 12), ("FCP", 13), ("CmpltTO", 14), ("CmpltAbrt", 15),
            ("UnxCmplt", 16), ("RxOF", 17), ("MalfTLP", 18), ("ECRC", 19), ("UnsupReq", 20), ("ACSViol", 21))
_CE_BITS = (("RxErr", 0), ("BadTLP", 6), ("BadDLLP", 7), ("Rollover", 8), ("Timeout", 12), ("AdvNonFatalErr", 13))


class ConfigBytes:
    """The bytes of a function's config space as the guest's sysfs ``config`` file reads them."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def b(self, pos: int) -> int:
        return self.data[pos]

    def w(self, pos: int) -> int:
        return int.from_bytes(self.data[pos : pos + 2], "little")

    def l(self, pos: int) -> int:  # noqa: E743 -- pciutils' get_conf_long
        return int.from_bytes(self.data[pos : pos + 4], "little")


def flag(value: int, mask: int) -> str:
    """pciutils' ``FLAG``: '+' if any bit of ``mask`` is set in ``value``, else '-'."""
    return "+" if value & mask else "-"


def _flags(value: int, names: Sequence[tuple[str, int]]) -> str:
    return " ".join(f"{name}{flag(value, 1 << bit)}" for name, bit in names)


def _cap_pm(cfg: ConfigBytes, where: int, cap: int, verbose: int, out: list[str]) -> None:
    out.append(f"Power Management version {cap & 0x7}\n")
    if verbose < 2:
        return
    out.append(f"\t\tFlags: PMEClk{flag(cap, 0x8)} DSI{flag(cap, 0x20)} D1{flag(cap, 0x200)} D2{flag(cap, 0x400)} "
               f"AuxCurrent={_PM_AUX_CURRENT[(cap & 0x1C0) >> 6]}mA PME(D0{flag(cap, 0x800)},D1{flag(cap, 0x1000)},"
               f"D2{flag(cap, 0x2000)},D3hot{flag(cap, 0x4000)},D3cold{flag(cap, 0x8000)})\n")
    t = cfg.w(where + 4)
    out.append(f"\t\tStatus: D{t & 3} NoSoftRst{flag(t, 0x8)} PME-Enable{flag(t, 0x100)} DSel={(t & 0x1E00) >> 9} "
               f"DScale={(t & 0x6000) >> 13} PME{flag(t, 0x8000)}\n")
    bridge = cfg.b(where + 6)
    if bridge:
        out.append(f"\t\tBridge: PM{flag(bridge, 0x80)} B3{flag(~bridge, 0x40)}\n")


def _cap_msi(cfg: ConfigBytes, where: int, cap: int, verbose: int, out: list[str]) -> None:
    out.append(f"MSI: Enable{flag(cap, 0x1)} Count={1 << ((cap & 0x70) >> 4)}/{1 << ((cap & 0xE) >> 1)} "
               f"Maskable{flag(cap, 0x100)} 64bit{flag(cap, 0x80)}\n")
    if verbose < 2:
        return
    is64 = cap & 0x80
    if is64:
        data, high = cfg.w(where + 0xC), f"{cfg.l(where + 8):08x}"
    else:
        data, high = cfg.w(where + 8), ""
    out.append(f"\t\tAddress: {high}{cfg.l(where + 4):08x}  Data: {data:04x}\n")
    if cap & 0x100:
        mask_at = where + (0x10 if is64 else 0xC)
        out.append(f"\t\tMasking: {cfg.l(mask_at):08x}  Pending: {cfg.l(mask_at + 4):08x}\n")


def _cap_msix(cfg: ConfigBytes, where: int, cap: int, verbose: int, out: list[str]) -> None:
    out.append(f"MSI-X: Enable{flag(cap, 0x8000)} Count={(cap & 0x7FF) + 1} Masked{flag(cap, 0x4000)}\n")
    if verbose < 2:
        return
    for label, off in (("Vector table", 4), ("PBA", 8)):
        value = cfg.l(where + off)
        out.append(f"\t\t{label}: BAR={value & 7} offset={value & ~7 & 0xFFFF_FFFF:08x}\n")


def _cap_sata(cfg: ConfigBytes, where: int, cap: int, verbose: int, out: list[str]) -> None:
    out.append(f"SATA HBA v{cap >> 4 & 0xF}.{cap & 0xF}")
    if verbose < 2:
        out.append("\n")
        return
    bars = cfg.l(where + 4)
    bar = bars & 0xF
    if 4 <= bar <= 9:
        out.append(f" BAR{bar - 4} Offset={bars >> 4 & 0xFFFFF:08x}\n")
    elif bar == 15:
        out.append(" InCfgSpace\n")
    else:
        out.append(f" BAR??{bar}\n")


def _cap_vendor(cfg: ConfigBytes, where: int, cap: int, verbose: int, out: list[str]) -> None:
    """ls-caps-vendor.c: virtio-pci's structures on a Red Hat 1000..107f function, else ``Len=.. <?>``."""
    out.append("Vendor Specific Information: ")
    length, cfg_type = cap & 0xFF, cap >> 8 & 0xFF
    if cfg.w(0) != 0x1AF4 or not 0x1000 <= cfg.w(2) <= 0x107F or length < 16:
        out.append(f"Len={length:02x} <?>\n")
        return
    out.append(f"VirtIO: {_VIRTIO_CFG_TYPES.get(cfg_type, '<unknown>')}\n")
    if verbose < 2:
        return
    out.append(f"\t\tBAR={cfg.b(where + 4)} offset={cfg.l(where + 8):08x} size={cfg.l(where + 12):08x}")
    if cfg_type == 2 and length >= 20:
        out.append(f" multiplier={cfg.l(where + 16):08x}")
    out.append("\n")


def _express_dev(cfg: ConfigBytes, where: int, etype: int, out: list[str]) -> None:
    t = cfg.l(where + 4)
    # (an Endpoint's Latency L0s/L1 and slot power fields: not reached, _cap_express takes RC types only)
    out.append(f"\t\tDevCap:\tMaxPayload {128 << (t & 7)} bytes, PhantFunc {(1 << ((t & 0x18) >> 3)) - 1}\n")
    out.append(f"\t\t\tExtTag{flag(t, 0x20)}")
    if etype in (PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_PCI_BRIDGE):
        out.append(f" AttnBtn{flag(t, 0x1000)} AttnInd{flag(t, 0x2000)} PwrInd{flag(t, 0x4000)}")
    out.append(f" RBE{flag(t, 0x8000)}")
    flr = etype == PCI_EXP_TYPE_RC_END
    if flr:
        out.append(f" FLReset{flag(t, 0x1000_0000)}")
    out.append("\n")
    w = cfg.w(where + 8)
    out.append(f"\t\tDevCtl:\tCorrErr{flag(w, 1)} NonFatalErr{flag(w, 2)} FatalErr{flag(w, 4)} UnsupReq{flag(w, 8)}\n")
    out.append(f"\t\t\tRlxdOrd{flag(w, 0x10)} ExtTag{flag(w, 0x100)} PhantFunc{flag(w, 0x200)} AuxPwr{flag(w, 0x400)} "
               f"NoSnoop{flag(w, 0x800)}")
    if etype == PCI_EXP_TYPE_PCI_BRIDGE:
        out.append(f" BrConfRtry{flag(w, 0x8000)}")
    if flr and t & 0x1000_0000:
        out.append(f" FLReset{flag(w, 0x8000)}")
    out.append(f"\n\t\t\tMaxPayload {128 << ((w & 0xE0) >> 5)} bytes, MaxReadReq {128 << ((w & 0x7000) >> 12)} bytes\n")
    s = cfg.w(where + 0xA)
    out.append(f"\t\tDevSta:\tCorrErr{flag(s, 1)} NonFatalErr{flag(s, 2)} FatalErr{flag(s, 4)} UnsupReq{flag(s, 8)} "
               f"AuxPwr{flag(s, 0x10)} TransPend{flag(s, 0x20)}\n")


def _express_dev2(cfg: ConfigBytes, where: int, etype: int, has_mem_bar: bool, out: list[str]) -> None:
    l = cfg.l(where + 0x24)  # noqa: E741
    out.append(f"\t\tDevCap2: Completion Timeout: {_TIMEOUT_RANGES.get(l & 0xF, 'Unknown')}, "
               f"TimeoutDis{flag(l, 0x10)} NROPrPrP{flag(l, 0x400)} LTR{flag(l, 0x800)}")
    out.append(f"\n\t\t\t 10BitTagComp{flag(l, 0x1_0000)} 10BitTagReq{flag(l, 0x2_0000)} OBFF "
               f"{_DEVCAP2_OBFF[l >> 18 & 3]}, ExtFmt{flag(l, 0x10_0000)} EETLPPrefix{flag(l, 0x20_0000)}")
    if l & 0x20_0000:
        out.append(f", MaxEETLPPrefixes {(l >> 22 & 3) or 4}")
    out.append(f"\n\t\t\t EmergencyPowerReduction {_DEVCAP2_EPR[l >> 24 & 3]}, "
               f"EmergencyPowerReductionInit{flag(l, 0x400_0000)}")
    out.append(f"\n\t\t\t FRS{flag(l, 0x8000_0000)}")
    if etype == PCI_EXP_TYPE_ENDPOINT:
        out.append(f" {_DEVCAP2_TPH[l >> 12 & 3]}")
    out.append(" ARIFwd" + flag(l, 0x20) + "\n" if etype == PCI_EXP_TYPE_DOWNSTREAM else "\n")
    if etype in (PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM) or has_mem_bar:
        out.append("\t\t\t AtomicOpsCap:")
        if etype in (PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM):
            out.append(f" Routing{flag(l, 0x40)}")
        if has_mem_bar:
            out.append(f" 32bit{flag(l, 0x80)} 64bit{flag(l, 0x100)} 128bitCAS{flag(l, 0x200)}")
        out.append("\n")
    w = cfg.w(where + 0x28)
    out.append(f"\t\tDevCtl2: Completion Timeout: {_TIMEOUT_VALUES.get(w & 0xF, 'Unknown')}, "
               f"TimeoutDis{flag(w, 0x10)} LTR{flag(w, 0x400)} 10BitTagReq{flag(w, 0x1000)} OBFF "
               f"{_DEVCTL2_OBFF[w >> 13 & 3]},")
    out.append(f" ARIFwd{flag(w, 0x20)}\n" if etype == PCI_EXP_TYPE_DOWNSTREAM else "\n")
    if etype in (PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_RC_END,
                 PCI_EXP_TYPE_LEG_END):
        out.append("\t\t\t AtomicOpsCtl:")
        if etype in (PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_RC_END, PCI_EXP_TYPE_LEG_END):
            out.append(f" ReqEn{flag(w, 0x40)}")
        if etype in (PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM):
            out.append(f" EgressBlck{flag(w, 0x80)}")
        out.append("\n")


def _cap_express(cfg: ConfigBytes, where: int, cap: int, verbose: int, has_mem_bar: bool, out: list[str]) -> int:
    etype = (cap & 0xF0) >> 4
    out.append("Express " + (f"(v{cap & 0xF}) " if verbose >= 2 else ""))
    if etype not in (PCI_EXP_TYPE_RC_END, PCI_EXP_TYPE_RC_EC):
        raise NotImplementedError(f"lspci's PCIe port/link lines (device/port type {etype}) are not modelled: "
                                  "q35's root-bus functions are Root Complex Integrated Endpoints")
    out.append(f"{_EXP_TYPES[etype]}, MSI {(cap & 0x3E00) >> 9:02x}\n")
    if verbose < 2:
        return etype
    if etype == PCI_EXP_TYPE_RC_EC:
        raise NotImplementedError("lspci's Root Complex Event Collector lines are not modelled")
    _express_dev(cfg, where, etype, out)
    if cap & 0xF >= 2:
        _express_dev2(cfg, where, etype, has_mem_bar, out)
    return etype


def _cap_aer(cfg: ConfigBytes, where: int, verbose: int, out: list[str]) -> None:
    out.append("Advanced Error Reporting\n")
    if verbose < 2:
        return
    for label, off in (("UESta", 4), ("UEMsk", 8), ("UESvrt", 0xC)):
        out.append(f"\t\t{label}:\t{_flags(cfg.l(where + off), _UE_BITS)}\n")
    for label, off in (("CESta", 0x10), ("CEMsk", 0x14)):
        out.append(f"\t\t{label}:\t{_flags(cfg.l(where + off), _CE_BITS)}\n")
    c = cfg.l(where + 0x18)
    out.append(f"\t\tAERCap:\tFirst Error Pointer: {c & 31:02x}, ECRCGenCap{flag(c, 0x20)} ECRCGenEn{flag(c, 0x40)} "
               f"ECRCChkCap{flag(c, 0x80)} ECRCChkEn{flag(c, 0x100)}\n"
               f"\t\t\tMultHdrRecCap{flag(c, 0x200)} MultHdrRecEn{flag(c, 0x400)} TLPPfxPres{flag(c, 0x800)} "
               f"HdrLogCap{flag(c, 0x1000)}\n")
    log = " ".join(f"{cfg.l(where + 0x1C + 4 * i):08x}" for i in range(4))
    out.append(f"\t\tHeaderLog: {log}\n")


def _cap_dsn(cfg: ConfigBytes, where: int, out: list[str]) -> None:
    serial = cfg.l(where + 8) << 32 | cfg.l(where + 4)
    out.append("Device Serial Number " + "-".join(f"{b:02x}" for b in serial.to_bytes(8, "big")) + "\n")


def _show_ext_caps(cfg: ConfigBytes, verbose: int, out: list[str]) -> None:
    where = 0x100
    seen: set[int] = set()
    while where and where + 4 <= len(cfg):
        header = cfg.l(where)
        if header in (0, 0xFFFF_FFFF):
            break
        cap_id, version = header & 0xFFFF, header >> 16 & 0xF
        out.append(f"\tCapabilities: [{where:03x}" + (f" v{version}" if verbose > 1 else "") + "] ")
        if where in seen:
            out.append("<chain looped>\n")
            break
        seen.add(where)
        if cap_id == PCI_EXT_CAP_ID_ERR:
            _cap_aer(cfg, where, verbose, out)
        elif cap_id == PCI_EXT_CAP_ID_DSN:
            _cap_dsn(cfg, where, out)
        else:
            out.append("Extended Capability ID %#02x\n" % cap_id)
        where = header >> 20 & ~3


_SIMPLE_CAPS: dict[int, Callable[[ConfigBytes, int, int, int, list[str]], None]] = {
    PCI_CAP_ID_PM: _cap_pm, PCI_CAP_ID_MSI: _cap_msi, PCI_CAP_ID_MSIX: _cap_msix, PCI_CAP_ID_SATA: _cap_sata,
    PCI_CAP_ID_VNDR: _cap_vendor,
}


def show_caps(cfg: ConfigBytes, verbose: int, has_mem_bar: bool) -> str:
    """The "Capabilities:" lines of one function (``show_caps``, then ``show_ext_caps`` after a PCIe cap).

    ``has_mem_bar``: the kernel has a memory resource for one of BARs 0-5 (lspci's
    ``device_has_memory_space_bar``, which decides the AtomicOpsCap line).
    """
    out: list[str] = []
    can_have_ext_caps = False
    if cfg.w(PCI_STATUS) & PCI_STATUS_CAP_LIST:
        where = cfg.b(PCI_CAPABILITY_LIST) & ~3
        seen: set[int] = set()
        while where:
            out.append("\tCapabilities: ")
            cap_id, nxt, cap = cfg.b(where), cfg.b(where + 1) & ~3, cfg.w(where + 2)
            out.append(f"[{where:02x}] ")
            if where in seen:
                out.append("<chain looped>\n")
                break
            seen.add(where)
            if cap_id == 0xFF:
                out.append("<chain broken>\n")
                break
            if cap_id == PCI_CAP_ID_EXP:
                _cap_express(cfg, where, cap, verbose, has_mem_bar, out)
                can_have_ext_caps = True
            elif cap_id in _SIMPLE_CAPS:
                _SIMPLE_CAPS[cap_id](cfg, where, cap, verbose, out)
            else:
                out.append("Capability ID %#02x [%04x]\n" % (cap_id, cap))
            where = nxt
    if can_have_ext_caps:
        _show_ext_caps(cfg, verbose, out)
    return "".join(out)
