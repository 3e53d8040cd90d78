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
