"""Write docs/errors.md from the error classes: every code the service answers and what it means.

Run `.venv/bin/python -m scripts.error_codes` after adding or changing an error class; a test fails while the
file and the classes disagree.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import cmdb_asso
from cmdb_asso.errors import error_classes, error_codes

TARGET = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _statuses() -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for cls in error_classes():
        found.setdefault(cls.code, set()).add(cls.http_status)
    return found


def render() -> str:
    """The page: an introduction, then one row per code (of every error class in the package, wherever defined)."""
    for module in pkgutil.walk_packages(cmdb_asso.__path__, "cmdb_asso."):
        importlib.import_module(module.name)
    statuses = _statuses()
    rows = [
        f"| {code} | {', '.join(str(status) for status in sorted(statuses[code]))} | {'; '.join(meanings)} |"
        for code, meanings in error_codes().items()
    ]
    return "\n".join([
        "# Error codes",
        "",
        "Every answer carries a code: `bk_error_code` in the native envelope, `code` in the ESB one; 0 is success.",
        "The codes are bk-cmdb's own, so that its frontends and clients read them unchanged. Most refusals are HTTP",
        "200 with `result: false`, as bk-cmdb answers them; the HTTP status column says where another status comes",
        "with the code (401 for an unknown caller, 503 with `Retry-After` when the store is unavailable or the",
        "service busy). Each operation's own codes are listed in the API document (`GET /docs`).",
        "",
        "This page is generated from the error classes (`python -m scripts.error_codes`); a test keeps it in step.",
        "",
        "| code | HTTP status | meaning |",
        "|---|---|---|",
        *rows,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
