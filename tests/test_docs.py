"""The documentation as a newcomer reads it: a README that stays a front door, and links that lead somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300  # issue 23: what psml is, the two commands, a tour, the layout; the rest lives in docs/


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Link targets of a Markdown file that point into the repository (code blocks and spans skipped)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)
            and not t.startswith("#")]


def test_readme_stays_a_front_door():
    """Catches a README grown past 300 lines again (it reached 948: a reference manual and a lab notebook of
    dated measurements under the front door)."""
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move the detail into a docs/ page"


def test_every_relative_link_resolves():
    """Catches a link to a moved or deleted page (docs/figures.md split into docs/results/, a section moved to
    its own page) left behind in the README or a docs page."""
    broken = [f"{path.relative_to(ROOT)} -> {target}" for path in markdown_files() if path.is_file()
              for target in relative_links(path) if not (path.parent / target.split("#")[0]).exists()]
    assert not broken, broken


def test_measured_figures_have_a_results_page_each_indexed():
    """Catches a results page nobody can find (not in docs/results/README.md) or one named outside the
    <date>-<host>.md scheme."""
    results = ROOT / "docs" / "results"
    pages = sorted(p.name for p in results.glob("*.md") if p.name != "README.md")
    assert pages, "no docs/results/<date>-<host>.md page"
    odd = [p for p in pages if not re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", p)]
    assert not odd, odd
    index = (results / "README.md").read_text()
    assert not [p for p in pages if f"]({p})" not in index], "pages missing from docs/results/README.md"
