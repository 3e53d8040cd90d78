"""Test-suite wide settings: makes ``tests/`` importable (``reference_data``, ``staging``) and
provides the ``staged_guest`` fixture."""

from __future__ import annotations

from typing import Any, Protocol

import pytest
import staging


class StagedGuestFactory(Protocol):
    def __call__(self, stage: str, **machine_options: Any) -> staging.StagedGuest: ...


@pytest.fixture
def staged_guest() -> StagedGuestFactory:
    """``staged_guest(stage, **machine_options)``: a fresh guest booted up to ``stage``
    (``staging.STAGES``: machine, kernel, iommu, viommu, nvme-dma, nvme) on the machine the options
    describe; see ``tests/staging.py``."""
    return staging.staged_guest
