"""tests/README.md maps every section of README.md to the tests of its promises; keep it honest."""

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
MAP = TESTS / "README.md"


def readme_sections():
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)  # a `#` in a code block is no heading
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,3} ", line)]


def mapped():
    rows = {}
    for line in MAP.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] not in ("README section", "---"):
            rows[cells[0]] = re.findall(r"`([\w/]+\.py)::(\w+)`", cells[1])
    return rows


def test_every_readme_section_has_a_row_and_every_row_a_section():
    rows = mapped()
    assert [s for s in readme_sections() if s not in rows] == []
    assert [r for r in rows if r not in readme_sections()] == []


def test_every_test_named_in_the_map_exists():
    missing = []
    for section, tests in mapped().items():
        for path, name in tests:
            tree = ast.parse((TESTS / path).read_text())
            if name not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
                missing.append(f"{section}: {path}::{name}")
    assert missing == []
    sections_with_tests = {s for s, tests in mapped().items() if tests}
    assert sections_with_tests >= set(readme_sections()) - {"Results in CI"}  # that one only groups subsections
