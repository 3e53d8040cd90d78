"""--guest-kernel takes the Linux versions it claims: 6.8 and later behave as 6.12, 5.14 to 6.7 as 6.7."""

from __future__ import annotations

import pytest

from models import ConfigError, MachineConfig, describe_guest_kernel, guest_kernel_behaviour, machine_options
from models.guest import dma_domain_policy, virtio_iommu_map_batching


@pytest.mark.parametrize(("version", "behaviour"), [
    ("6.8", "6.12"), ("6.9", "6.12"), ("6.12", "6.12"), ("6.12.3", "6.12"), ("6.15", "6.12"), ("7.0", "6.12"),
    ("6.7", "6.7"), ("6.1", "6.7"), ("5.15", "6.7"), ("5.14", "6.7"),
])
def test_a_version_gets_the_behaviour_of_its_side_of_6_8(version: str, behaviour: str) -> None:
    """Each version is accepted as given and behaves as 6.12 (MAPs batched, lazy has a flush queue)
    from 6.8, as 6.7 (each MAP on its own, lazy falls back to strict) before."""
    assert guest_kernel_behaviour(version) == behaviour
    assert MachineConfig(guest_kernel=version).guest_kernel == version
    assert virtio_iommu_map_batching(version) == (behaviour == "6.12")
    assert (dma_domain_policy(version, "lazy").type == "DMA-FQ") == (behaviour == "6.12")


@pytest.mark.parametrize(("version", "message"), [
    ("5.4", "--guest-kernel: Linux 5.4 is older than 5.14, the first kernel whose virtio-iommu driver an x86 (q35) "
            "guest can use (ACPI VIOT)"),
    ("6", "--guest-kernel: invalid value '6' (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
    ("6.x", "--guest-kernel: invalid value '6.x' (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
    ("v6.9", "--guest-kernel: invalid value 'v6.9' (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
    ("06.9", "--guest-kernel: invalid value '06.9' (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
    ("6.9-rc1", "--guest-kernel: invalid value '6.9-rc1' (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
    (6.9, "--guest-kernel: invalid value 6.9 (a Linux version MAJOR.MINOR, e.g. 6.7, 6.12 or 7.0)"),
])
def test_an_unknown_version_form_is_refused_in_one_line(version: object, message: str) -> None:
    """Anything but MAJOR.MINOR[.PATCH] from 5.14 on is a ConfigError naming the flag."""
    with pytest.raises(ConfigError) as err:
        MachineConfig(guest_kernel=version)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_the_echo_says_the_behaviour_a_version_gets() -> None:
    """A version that is not itself a modelled one is echoed with the behaviour it gets."""
    assert [describe_guest_kernel(v) for v in ("6.12", "6.7", "6.9", "7.0", "5.15")] == [
        "6.12", "6.7", "6.9 (behaves as 6.12: 6.8+)", "7.0 (behaves as 6.12: 6.8+)",
        "5.15 (behaves as 6.7: 5.14 .. 6.7)"]


def test_the_help_says_which_versions_behave_as_which() -> None:
    """--guest-kernel's help names both sides of 6.8 and its metavar is VERSION."""
    spec = next(s for s in machine_options() if s.name == "guest_kernel")
    assert (spec.metavar, spec.choices) == ("VERSION", None)
    assert spec.help == (
        "guest Linux version: 6.8 or later (6.8, 6.9, ..., 6.12, 7.0) behaves as 6.12 (the reference boot: MAPs "
        "batched, lazy domains get a flush queue), 5.14 to 6.7 as 6.7 (the seed: each MAP on its own, lazy falls "
        "back to strict) (default 6.7)")
    spec.check("6.9")
    with pytest.raises(ConfigError):
        spec.check("6.x")


def test_run_echoes_the_given_version_and_its_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    """run's summary names the version given and, when it is not 6.7 or 6.12, the behaviour it gets."""
    from viommu_sim.cli import main

    assert main(["run", "--guest-kernel", "6.9", "--ios", "4"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(", virtio-iommu, Linux 6.9 (behaves as 6.12: 6.8+) lazy, per-CPU flush queues, "
                          "map batching on")
