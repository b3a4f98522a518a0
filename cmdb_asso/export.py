"""`cmdb-asso export`: a model's links, filtered as search filters them, written as CSV or JSON Lines in the
form `load` reads back, a page at a time (memory stays flat whatever the number of links)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import Any, TextIO

from cmdb_asso.client import AssociationClient

# What each exported link holds: the three columns `load` needs, then the models and the link's id.
COLUMNS = ("bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id", "bk_obj_id", "bk_asst_obj_id", "id")
FORMATS = ("csv", "jsonl")


async def export_links(
    client: AssociationClient,
    obj_id: str,
    out: TextIO,
    *,
    conditions: dict[str, Any] | None = None,
    fmt: str = "csv",
    page_size: int = 500,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Write the model's links matching `conditions` (query-builder rules) to `out`, in id order, each page read
    after the last id written (no deep offsets); return how many were written."""
    write = _writer(out, fmt)
    written, after = 0, 0
    while not stopped():
        rules: list[dict[str, Any]] = [{"field": "id", "operator": "greater", "value": after}]
        if conditions:
            rules.insert(0, conditions)
        page = await client.search(
            obj_id, {"condition": "AND", "rules": rules}, fields=list(COLUMNS), limit=page_size, sort="id"
        )
        for link in page:
            write({name: link.get(name, "") for name in COLUMNS})
        written += len(page)
        if len(page) < page_size:
            break
        after = int(page[-1]["id"])
    out.flush()
    return written


def _writer(out: TextIO, fmt: str) -> Callable[[dict[str, Any]], object]:
    if fmt == "jsonl":
        return lambda row: out.write(json.dumps(row, ensure_ascii=False) + "\n")
    table = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    table.writeheader()
    return table.writerow
