"""Seeded random streams: one seed per simulation, one stream per component.

Each component draws from ``random.Random`` seeded by SHA-256 of
``"<seed>/<component name>"``, so adding a component or drawing more numbers in
one never shifts another's stream, and nothing depends on Python's salted
``hash()`` (``PYTHONHASHSEED``).  The stable hash is also what the testbench
uses for per-test seeds (cocotb's regression manager does the same with SHA-1).
"""

from __future__ import annotations

import hashlib
import random


def stable_hash(text: str, bits: int = 64) -> int:
    """A process-independent hash of ``text`` (SHA-256, truncated to ``bits``)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[: (bits + 7) // 8], "little") & ((1 << bits) - 1)


class RngStreams:
    """The single owner of randomness for one simulation."""

    __slots__ = ("seed", "_streams")

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, not {type(seed).__name__}")
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def stream(self, component: str) -> random.Random:
        """The stream for ``component``; the same object on every call."""
        rng = self._streams.get(component)
        if rng is None:
            rng = random.Random(stable_hash(f"{self.seed}/{component}", 128))
            self._streams[component] = rng
        return rng
