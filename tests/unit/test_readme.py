"""The README's Layout lists exactly the package's modules."""

from __future__ import annotations

import re
from pathlib import Path

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
