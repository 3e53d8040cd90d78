"""README.md opens with the two set-up commands, and .ci/run runs the second verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    blocks: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip():
            blocks.append(line.strip())
        if len(blocks) == 2 and not inside:
            break
    return blocks[:2]


def test_readme_opens_with_install_and_run_then_install_and_test():
    """First command installs and runs the main job; second installs test extras and runs pytest."""
    first, second = _readme_commands()
    assert "pip install" in first and "viommu-sim " in first
    assert "'.[test]'" in second and "pytest" in second


def test_ci_runs_the_second_readme_command_verbatim():
    """.ci/run's last line is the README's second command."""
    ci_last = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_last == _readme_commands()[1]


def test_readme_python_examples_run():
    """Every ```python block in the README executes as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
