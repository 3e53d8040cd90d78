"""Hypothesis profiles of the fuzz suite: ``default`` (CI, small) and ``long`` (nightly, 10^5 examples).

``VIOMMU_FUZZ=long`` loads ``long``.  ``default`` is registered as Hypothesis's own default
(so loading this file changes nothing for other tests); the fuzz tests pick their example
count from the active profile name (see ``fuzz_settings`` in each test file).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", settings.get_profile("default"))
settings.register_profile(
    "long", max_examples=100_000, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
if os.environ.get("VIOMMU_FUZZ") == "long":
    settings.load_profile("long")
