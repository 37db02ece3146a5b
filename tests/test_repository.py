"""The repository stands alone: no tracked file cites a document outside it, and every relative link of the
Markdown docs leads to a file that is there. Real data outside the checkout is reached through one setting,
``RECSYS_SHARED_DATA`` (tests/conftest.py, benchmarks/common.py), whose default is the only allowed mention."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
SHARED_DATA_SETTING = "RECSYS_SHARED_DATA"

# Ways a file points outside the checkout: design or style documents that are not in it, the sibling data folder
# spelt out, absolute paths of a particular machine.
OUTSIDE = re.compile("|".join((
    r"\b(?:DESIGN|STYLE)\.md\b",
    r"(?<![a-z])design[ _-](?:doc|card)",
    r"(?<![a-z])the[ _]design(?![a-z])",
    r"(?<![a-z])data[ _]readme(?![a-z])",
    r"\.\./shared\b",
    r"\bshared[/\\]data\b",
    r"""["']shared["']\s*/\s*["']data["']""",
    r"/(?:work|home)/",
)), re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Files and tests the docs name in code spans: they must exist, so the docs follow the code when it moves.
CODE_PATH = re.compile(r"`((?:recsys|jobs|dags|tests|conf|benchmarks)/[\w/.-]+\.(?:py|yaml|md))`")
TEST_NAME = re.compile(r"`(test_\w+)`")


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in listed.stdout.decode().split("\0") if name]


def text(name: str) -> str | None:
    """The file's text, or None for a binary file (or one deleted but not yet committed)."""
    try:
        data = (ROOT / name).read_bytes()
    except FileNotFoundError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(name: str, content: str) -> list[str]:
    return [f"{name}:{number}: {line.strip()[:120]}"
            for number, line in enumerate(content.splitlines(), 1)
            if OUTSIDE.search(line) and SHARED_DATA_SETTING not in line]


def test_no_tracked_file_references_a_document_outside_the_repository():
    found = [hit for name in tracked_files() if name != SELF and (content := text(name)) is not None
             for hit in outside_references(name, content)]
    assert found == []


# The samples are joined from pieces so that this file does not itself cite what it forbids.
_DOC, _SIBLING, _DATA_PATH = "DESIGN" + ".md", '"sha' + 'red" / "data"', "../sha" + "red/data"


def test_the_pattern_catches_outside_references_and_allows_the_shared_data_setting():
    found = outside_references("x.py", f"see {_DOC}\nROOT.parent / {_SIBLING}\n{_DATA_PATH}\n/" + "home/me/x\n"
                                         "def test_every_table_of_the_" + "design_exists():\nthe design" + " card\n")
    assert [hit.split(":")[1] for hit in found] == ["1", "2", "3", "4", "5", "6"]
    assert not outside_references("x.py", f'os.environ.get("{SHARED_DATA_SETTING}", ROOT.parent / {_SIBLING})')


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_docs_exist_and_the_readme_points_to_each():
    docs = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert {"tables.md", "commands.md", "api.md", "metrics.md", "deletions.md"} <= set(docs)
    readme = (ROOT / "README.md").read_text()
    assert [name for name in docs if f"](docs/{name})" not in readme] == []


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_markdown_link_points_at_a_file_that_exists(page):
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(page.read_text())]
    relative = [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]
    assert [t for t in relative if not (page.parent / t).exists()] == []


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_and_test_a_page_names_exists(page):
    content = page.read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert [p for p in CODE_PATH.findall(content) if not (ROOT / p).exists()] == []
    named = [t for t in TEST_NAME.findall(content) if not (ROOT / "tests" / f"{t}.py").exists()]   # a test file
    assert [t for t in named if f"def {t}(" not in tests] == []
