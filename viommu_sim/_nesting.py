"""How deeply a TOML or JSON text nests arrays and tables, counted without parsing it.

Python's ``tomllib`` and ``json`` parse nested values recursively, so how deep a document may nest
before they give up depends on the interpreter's recursion limit at that moment (a test framework
may have raised it).  The readers of user files bound the depth themselves, before parsing, so that
a deeply nested file gets the same one-line answer everywhere: ``deeper_than`` scans brackets and
braces outside strings and comments (JSON's "..." strings; TOML's basic and literal strings, their
multi-line forms and ``#`` comments).
"""

from __future__ import annotations

#: the deepest nesting of arrays and inline tables a scenario, matrix or replay input may have
MAX_NESTING = 64

_OPEN, _CLOSE = "[{", "]}"


def deeper_than(text: str, limit: int = MAX_NESTING, *, toml: bool = False) -> bool:
    """Does ``text`` nest arrays/tables (``[``/``{``) more than ``limit`` levels anywhere?"""
    depth = 0
    i, n = 0, len(text)
    quotes = "\"'" if toml else '"'
    while i < n:
        c = text[i]
        if c in quotes:
            triple = toml and text.startswith(c * 3, i)
            end = c * 3 if triple else c
            i += len(end)
            while i < n and not text.startswith(end, i):
                i += 2 if c == '"' and text[i] == "\\" else 1  # a basic string's escape
            i += len(end)
            continue
        if toml and c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if c in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif c in _CLOSE:
            depth = max(depth - 1, 0)
        i += 1
    return False
