"""The README and docs/: the Layout lists exactly the package's modules, every document is linked, nothing points
outside the clone, and the error-code page says what the error classes say."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.error_codes import render as error_codes_page

ROOT = Path(__file__).resolve().parents[2]


def test_the_layout_names_every_module_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    listed = set(re.findall(r"^    (cmdb_asso/\S+\.py)\s", layout, flags=re.MULTILINE))
    modules = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "cmdb_asso").rglob("*.py") if path.name != "__init__.py"
    }
    assert sorted(modules - listed) == []  # modules the Layout does not describe
    assert sorted(listed - modules) == []  # lines for modules that no longer exist


def test_the_readme_links_every_document_and_each_link_leads_somewhere() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)]+\.md)\)", readme))
    documents = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}

    assert sorted(documents - linked) == []
    assert sorted(linked - documents) == []


def test_nothing_points_outside_the_clone() -> None:
    texts = {
        path.name: path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    }

    assert [name for name, text in texts.items() if "../shared" in text] == []


def test_the_error_code_page_says_what_the_error_classes_say() -> None:
    assert (ROOT / "docs" / "errors.md").read_text(encoding="utf-8") == error_codes_page()
