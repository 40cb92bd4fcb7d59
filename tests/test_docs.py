"""The documentation: every ```python block of docs/*.md and README.md runs (the blocks of a
page in order, in one namespace, in a scratch directory), and the site builds with
``mkdocs build --strict``; tests/README.md names every test file (its oracle and tier).

A block is left out when the line before its fence is ``<!-- docs-test: skip (why) -->``;
a page with a block marked ``<!-- docs-test: requires mnist -->`` is skipped when MNIST is
not cached (``predcode data fetch mnist``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cached_data import have_dataset

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
MARK = re.compile(r"<!--\s*docs-test:\s*(skip|requires\s+([\w-]+)).*?-->")


def blocks(page: Path) -> tuple[list[tuple[int, str]], set[str]]:
    """``([(line, code), ...], datasets needed)`` of the page's python blocks."""
    lines = page.read_text().splitlines()
    found, needs, i = [], set(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            mark = MARK.search(lines[i - 1]) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            if mark and mark.group(2):
                needs.add(mark.group(2))
            if not (mark and mark.group(1) == "skip"):
                found.append((i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return found, needs


RUNNABLE = [p for p in PAGES if blocks(p)[0]]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_examples_run(page, tmp_path, monkeypatch):
    code, needs = blocks(page)
    for name in needs:
        if not have_dataset(name):
            pytest.skip(f"needs {name}: run `predcode data fetch {name}`")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, source in code:
        try:
            exec(compile(source, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(
                f"the example at {page.relative_to(ROOT)}, line {line} failed: {type(exc).__name__}: {exc}"
            ) from exc


def test_every_tutorial_has_a_tested_example():
    skipped_only = [
        p.name for p in (ROOT / "docs" / "tutorials").glob("*.md") if "```python" in p.read_text() and not blocks(p)[0]
    ]
    assert not skipped_only


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [
        str(p.relative_to(ROOT / "docs"))
        for p in (ROOT / "docs").rglob("*.md")
        if str(p.relative_to(ROOT / "docs")) not in nav
    ]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install 'predcode[docs]')")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "distributed" / "index.html").exists()
    assert "SyncedOptimizer" in (tmp_path / "site" / "api" / "distributed" / "index.html").read_text()


def _test_table(readme: Path) -> list[str]:
    """The file names in the first column of tests/README.md's table rows."""
    return re.findall(r"^\| *(test_\w+\.py) *\|", readme.read_text(), flags=re.M)


def test_the_tests_readme_names_every_test_file(tmp_path):
    readme = ROOT / "tests" / "README.md"
    listed = _test_table(readme)
    files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    missing = sorted(set(files) - set(listed))
    gone = sorted(set(listed) - set(files))
    assert not missing, f"tests/README.md has no row for {missing}: add each with its oracle and tier"
    assert not gone, f"tests/README.md lists files that do not exist: {gone}"
    assert len(listed) == len(set(listed)), "a test file has two rows in tests/README.md"
    # the check itself: a table without one of the files is caught
    shortened = tmp_path / "README.md"
    shortened.write_text(
        "\n".join(line for line in readme.read_text().splitlines() if not line.startswith("| test_closed_form.py "))
    )
    assert "test_closed_form.py" in set(files) - set(_test_table(shortened))
