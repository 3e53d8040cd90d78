"""``viommu-sim lspci`` through the CLI entry point."""


import pytest

from reference_data import seed_lspci_block
from viommu_sim.cli import main


def test_lspci_default_machine_prints_the_seed_block(capsys):
    """Exit 0 and exactly the seed's eight lines on stdout, nothing on stderr."""
    assert main(["lspci"]) == 0
    out, err = capsys.readouterr()
    assert out == seed_lspci_block() and err == ""


def test_lspci_emulated_nvme(capsys):
    """--nvme emulated shows QEMU's NVMe at 00:04.0."""
    assert main(["lspci", "--nvme", "emulated"]) == 0
    assert ("00:04.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (rev 02)\n"
            in capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--nvme", "bogus"], "--nvme"),
        (["--memory", "lots"], "--memory"),
        (["--smp", "0"], "--smp"),
        (["--aw-bits", "12"], "--aw-bits"),
    ],
)
def test_lspci_invalid_flag_is_one_line_exit_2(capsys, argv, flag):
    """A bad machine flag: one stderr line naming the flag, exit status 2, no stdout."""
    assert main(["lspci", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and flag in err


# -- lspci as pciutils 3.9 prints it, against the real reference captures ------------------------
import trio

from models import MachineConfig, build_machine
from models.guest import LspciOptions, boot, lspci_listing
from reference_data import refboot
from sim import Simulator

#: the reference captures' machine in one word (models PRESETS["refboot"]: QEMU's NVMe, Debian's
#: 6.12 with its drivers as modules inserted by the initramfs, -m 2G (which keeps every BAR below
#: 4 GiB), 4 vCPUs); the seedlike run adds the blacklist
REFBOOT_FLAGS = ["--preset", "refboot"]
SEEDLIKE_FLAGS = [*REFBOOT_FLAGS, "--initcall-blacklist", "agp_intel_init"]
CAPTURES = {  # capture file -> the machine flags closest to its run
    "lspci-seedlike-lazy-smp4.txt": SEEDLIKE_FLAGS,
    "lspci-smp4.txt": REFBOOT_FLAGS,
    "lspci-annotated-lazy-smp4.txt": REFBOOT_FLAGS,
}

#: (slot, line prefix) -> the mechanism the model lacks; these lines are left out of the byte
#: comparison on both sides (every other line of every device is compared)
MISSING_MECHANISMS = {
    ("00:02.0", "\tControl: "): "e1000e's probe (pci_set_master, MSI-X enable with INTx off) is not modelled",
    ("00:02.0", "\tLatency: "): "printed only with bus mastering on: e1000e's pci_set_master is not modelled",
    ("00:02.0", "\tCapabilities: [a0] MSI-X: "): "e1000e's pci_enable_msix_range is not modelled",
    ("00:03.0", "\tControl: "): "virtio_pci_probe's pci_set_master is not modelled",
    ("00:03.0", "\tLatency: "): "printed only with bus mastering on: virtio_pci_probe's pci_set_master",
    ("00:1f.2", "\tControl: "): "pci_enable_msi's INTx disable (pci_intx_for_msi) is not modelled in ahci's probe",
    ("00:1f.2", "\tInterrupt: "): "Linux's IRQ numbers for MSI (irq_show's first MSI vector) are not modelled",
    ("00:1f.2", "\t\tAddress: "): "the MSI vector and destination CPU the guest allocates are not modelled",
}


def capture_section(name: str, heading: str) -> str:
    """The lines under ``--- HEADING`` of a refboot lspci capture, up to the next ``--- ``."""
    lines = refboot(name).read_text(encoding="utf-8").split("\n")
    start = lines.index(f"--- {heading}") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("--- "))
    return "".join(line + "\n" for line in lines[start:end])


def without(listing: str, gaps: dict[tuple[str, str], str], prefixes: tuple[str, ...] = ()) -> str:
    """``listing`` without the lines ``gaps`` (slot, prefix) names, or starting with ``prefixes``."""
    out, slot = [], ""
    for line in listing.splitlines(keepends=True):
        if line[:1] not in ("\t", "\n"):
            slot = line[:7]
        if any(s == slot and line.startswith(p) for s, p in gaps) or line.startswith(prefixes):
            continue
        out.append(line)
    return "".join(out)


def lspci_out(capsys, argv) -> str:
    assert main(["lspci", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_lspci_nn_k_is_the_capture(capsys, capture):
    """``lspci -nn -k`` equals the captured listing byte for byte: names and ids from config space and
    pci.ids, "Kernel driver in use:" from the bound drivers, "Kernel modules:" from Debian 6.12's
    module index (virtio-pci built in: no modules line)."""
    assert lspci_out(capsys, ["-nn", "-k", *CAPTURES[capture]]) == capture_section(capture, "lspci -nn -k")


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_lspci_tv_is_the_capture(capsys, capture):
    """``lspci -tv`` equals the captured tree byte for byte."""
    assert lspci_out(capsys, ["-tv", *CAPTURES[capture]]) == capture_section(capture, "lspci -tv")


@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_lspci_vvv_nn_is_the_capture_but_for_the_missing_mechanisms(capsys, capture):
    """``lspci -vvv -nn`` equals the capture byte for byte except the lines of ``MISSING_MECHANISMS``;
    the IOMMU group lines included (the modular boot gives intel-agp group 0 where the blacklist does
    not remove it).  The capture's extraction dropped the blank line lspci prints after the last
    device: it is added back."""
    out = lspci_out(capsys, ["-vvv", "-nn", *CAPTURES[capture]])
    expected = capture_section(capture, "lspci -vvv -nn") + "\n"
    assert "\tIOMMU group: 0\n" in out
    assert without(out, MISSING_MECHANISMS) == without(expected, MISSING_MECHANISMS)


def test_lspci_vvv_lines_of_the_missing_mechanisms(capsys):
    """What the model prints where it lacks a mechanism: the state its config space really holds."""
    out = lspci_out(capsys, ["-vvv", "-nn", *SEEDLIKE_FLAGS])
    blocks = {block[:7]: block for block in out.split("\n\n")}
    assert ("\tControl: I/O+ Mem+ BusMaster- SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR+ FastB2B- "
            "DisINTx-\n\tStatus:") in blocks["00:02.0"]
    assert "\tCapabilities: [a0] MSI-X: Enable- Count=5 Masked-\n" in blocks["00:02.0"]
    assert "\tLatency" not in blocks["00:02.0"] and "\tLatency" not in blocks["00:03.0"]
    assert ("\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR+ FastB2B- "
            "DisINTx-\n") in blocks["00:1f.2"]
    assert "\tInterrupt: pin A routed to IRQ 16\n" in blocks["00:1f.2"]  # the INTx GSI
    assert "\t\tAddress: 00000000fee00000  Data: 0041\n" in blocks["00:1f.2"]


def test_lspci_seed_kernel_is_all_built_in(capsys):
    """The seed's 6.7 guest has every driver built in: -k shows the drivers and no "Kernel modules:"."""
    out = lspci_out(capsys, ["-k"])
    assert "Kernel modules" not in out
    assert out.count("\tKernel driver in use: ") == 5
    assert "00:04.0 Non-Volatile memory controller: Samsung Electronics Co Ltd NVMe SSD Controller PM173X\n" \
           "\tSubsystem: Samsung Electronics Co Ltd Device a801\n\tKernel driver in use: nvme\n" in out


@pytest.fixture(scope="module")
def seedlike_kernel():
    config = MachineConfig(nvme="emulated", guest_kernel="6.12", memory="2G", smp=4,
                           initcall_blacklist=("agp_intel_init",))
    sim = Simulator(seed=config.seed)
    task = sim.spawn(boot(build_machine(config, sim)), name="boot")
    trio.run(sim.run, task)
    return task.result()


def test_lspci_numeric_and_tree_without_names(seedlike_kernel):
    """``-n``: numbers only (class bbss, vvvv:dddd, subsystem vvvv:dddd); ``-t``: the tree without names."""
    numeric = lspci_listing(seedlike_kernel, LspciOptions(numeric=1, kernel=True)).splitlines()
    assert numeric[:3] == ["00:00.0 0600: 8086:29c0", "\tSubsystem: 1af4:1100", "00:01.0 0300: 1234:1111 (rev 02)"]
    tree = lspci_listing(seedlike_kernel, LspciOptions(tree=True))
    assert tree == ("-[0000:00]-+-00.0\n" + "".join(f"           +-{s}\n" for s in
                                                    ("01.0", "02.0", "03.0", "04.0", "1f.0", "1f.2"))
                    + "           \\-1f.3\n")


def test_lspci_v_is_the_short_verbose_form(seedlike_kernel):
    """``-v``: a Flags line instead of Control/Status/Interrupt, regions without "Region N:",
    capability headers only (no "(v2)"), and the kernel lines; a blank line after each device."""
    out = lspci_listing(seedlike_kernel, LspciOptions(verbose=1))
    block = out[out.index("00:04.0"):]
    assert block[:block.index("\n\n") + 2] == (
        "00:04.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (rev 02) "
        "(prog-if 02 [NVM Express])\n"
        "\tSubsystem: Red Hat, Inc. Device 1100\n"
        "\tFlags: bus master, fast devsel, latency 0, IRQ 20, IOMMU group 1\n"
        "\tMemory at febd4000 (64-bit, non-prefetchable) [size=16K]\n"
        "\tCapabilities: [40] MSI-X: Enable+ Count=65 Masked-\n"
        "\tCapabilities: [80] Express Root Complex Integrated Endpoint, MSI 00\n"
        "\tCapabilities: [60] Power Management version 3\n"
        "\tKernel driver in use: nvme\n"
        "\tKernel modules: nvme\n\n")


def test_lspci_bad_switch_is_one_line_exit_2(capsys):
    """An lspci switch the command does not have: argparse's one line, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["lspci", "-x"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "-x" in err


def test_the_refboot_preset_is_its_documented_options_and_explicit_flags_override_it():
    """``--preset refboot`` = the options README lists; a flag given with it wins, wherever it stands."""
    from viommu_sim.cli import build_parser
    from viommu_sim._options import config_from_args

    def config(*argv):
        return config_from_args(build_parser().parse_args(["lspci", *argv]))

    modules = ("virtio_iommu,scsi_common,scsi_mod,libata,libahci,ahci,nvme_auth,nvme_core,nvme,e1000e,"
               "i2c_smbus,i2c_i801")
    assert config("--preset", "refboot") == config("--nvme", "emulated", "--smp", "4", "--memory", "2G",
                                                   "--guest-kernel", "6.12", "--modules", modules)
    assert config("--nvme", "vfio", "--preset", "refboot").nvme == "vfio"
    assert config("--preset", "refboot", "--smp", "2").smp == 2
    assert config("--preset", "seed") == config()
