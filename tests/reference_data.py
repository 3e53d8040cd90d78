"""Where the ground-truth material lives: ``shared/`` beside the project checkout.

Tests that compare the models with the seed or the real reference boot read
it from there.  In CI (``CI`` set) a missing folder is an error; elsewhere
those tests are skipped with a message saying what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def shared(*parts: str) -> Path:
    """Path of a file under ``shared/``; skips the test (fails in CI) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"reference material not found: {path} (expected shared/ beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def refboot(name: str) -> Path:
    """A file of the real QEMU + Linux reference boot."""
    return shared("reference", "refboot", name)


def seed_text() -> str:
    """The seed document (dmesg, lspci and the MAP backtrace of a real boot)."""
    seeds = sorted(shared("seed").glob("*.txt"))
    if not seeds:
        pytest.fail(f"no seed document in {SHARED / 'seed'}")
    return seeds[0].read_text(encoding="utf-8")


def seed_lspci_block() -> str:
    """The lines the seed's guest printed after ``vm$ lspci`` (up to the blank line)."""
    lines = seed_text().splitlines()
    start = lines.index("vm$ lspci") + 1
    return "".join(line + "\n" for line in lines[start : lines.index("", start)])
