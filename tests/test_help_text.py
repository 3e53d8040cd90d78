"""Every --help is user text: no docstring markup or internal names leak into it."""

from __future__ import annotations

import argparse

import pytest

from viommu_sim.cli import build_parser

#: what only code knows: reST literals, class and module names
LEAKS = ("``", "MachineConfig", "ConfigError", "OptionSpec", "run_scenario", "_cmd_", "viommu_sim.", "models.")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


@pytest.mark.parametrize("command", sorted(_parsers()))
def test_help_has_no_docstring_markup_or_internal_names(command: str) -> None:
    """``viommu-sim [COMMAND] --help`` names flags and what they do, never the code's names."""
    text = _parsers()[command].format_help()
    assert [leak for leak in LEAKS if leak in text] == []


def test_top_level_help_says_what_the_program_is() -> None:
    """The description is a sentence for a user, not the CLI module's docstring."""
    assert build_parser().description == (
        "A deterministic simulator of a VM's virtio-iommu path (QEMU q35, Linux guest, VFIO-assigned NVMe): "
        "boot the guest, run fio-like workloads, replay request logs, sweep policies.")
