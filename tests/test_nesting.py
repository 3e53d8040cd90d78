"""The readers' own nesting bound: the same answer whatever the interpreter's recursion limit."""

from __future__ import annotations

import sys

import pytest

from viommu_sim._nesting import MAX_NESTING, deeper_than
from viommu_sim._options import UsageError, load_toml
from viommu_sim._replay_input import ReplayInputError, _jsonl_line


def test_brackets_count_outside_strings_and_comments_only() -> None:
    deep = "[" * (MAX_NESTING + 1)
    assert deeper_than(deep) and not deeper_than("[" * MAX_NESTING)
    assert not deeper_than(f'"{deep}"') and not deeper_than(f'"\\"{deep}"')
    assert not deeper_than(f"a = '{deep}'", toml=True) and not deeper_than(f'a = """\n{deep}\n"""', toml=True)
    assert not deeper_than(f"# {deep}\n", toml=True) and deeper_than(f"# {deep}\n")
    assert deeper_than("a = " + "{x = " * (MAX_NESTING + 1), toml=True)


@pytest.mark.parametrize("limit", [1000, 100_000])
def test_a_deep_toml_file_and_json_line_are_refused_under_any_recursion_limit(tmp_path, limit: int) -> None:
    path = tmp_path / "s.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        with pytest.raises(UsageError, match=r"nested too deeply \(more than 64 levels\)"):
            load_toml(str(path))
        with pytest.raises(ReplayInputError, match=r"nested too deeply \(more than 64 levels\)"):
            _jsonl_line(1, '{"op": "map", "domain": ' + "[" * 5000 + "]" * 5000 + "}")
    finally:
        sys.setrecursionlimit(old)
