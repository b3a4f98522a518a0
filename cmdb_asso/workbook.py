"""`cmdb-asso load FILE.xlsx`: the `association` sheet of a workbook in bk-cmdb's export layout (CONTRACT-ui 23.1),
previewed as bk-cmdb's import dialog counts it, or imported through `import/instassociation` in row order, with a
progress bar, a rejects file naming each failed row by its sheet row number, and `--resume`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import openpyxl

from cmdb_asso.client import AssociationClient, CmdbApiError, ServiceUnavailableError
from cmdb_asso.loader import LoadFileInvalid, Progress, State, Summary, write_rows

SHEET = "association"
SUFFIXES = (".xlsx", ".xlsm")
# bk-cmdb's layout: titles in the first row, an example in the second, data from the third; columns B to E hold the
# definition, the operation (`add`, `delete`), the source and the target (column A is not read).
FIRST_DATA_ROW = 3
OPERATIONS = {"add": 2, "delete": 3}
# bk-cmdb's message for a row it cannot read (web_excel_row_handle_error).
UNREADABLE_ROW = {"en": "%s %d row could not process content;", "zh": "%s %d行无法处理内容;"}


@dataclass(frozen=True)
class SheetRow:
    """One data row of the sheet, by its Excel row number."""

    number: int
    obj_asst_id: str
    operation: str
    src: str
    dst: str

    def as_import_row(self) -> dict[str, Any]:
        """The row as `import/instassociation` takes it (an operation other than add and delete is 1)."""
        return {"bk_obj_asst_id": self.obj_asst_id, "operate": OPERATIONS.get(self.operation, 1),
                "src_primary_key": self.src, "dst_primary_key": self.dst}  # fmt: skip


@dataclass(frozen=True)
class SheetReject:
    """A row that was not imported, and why."""

    number: int
    row: SheetRow | None
    message: str


def read_sheet(path: Path) -> Iterator[SheetRow | int]:
    """The `association` sheet's data rows, in order; the number of a row bk-cmdb cannot read (a cell of B to E
    empty). LoadFileInvalid when the file is no workbook or has no such sheet."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several kinds for a file that is not a workbook
        raise LoadFileInvalid(f"{path}: not an Excel workbook ({type(exc).__name__}: {exc})") from None
    try:
        if SHEET not in workbook.sheetnames:
            raise LoadFileInvalid(f"{path}: the workbook has no '{SHEET}' sheet (sheets: {workbook.sheetnames})")
        for number, cells in enumerate(workbook[SHEET].iter_rows(values_only=True), start=1):
            if number < FIRST_DATA_ROW:
                continue
            texts = [_text(cell) for cell in list(cells)[1:5]]
            if not any(texts) and not any(_text(cell) for cell in cells):
                continue  # a blank row: bk-cmdb's reader does not return it
            if len(texts) < 4 or not all(texts):
                yield number
                continue
            yield SheetRow(number, *texts)
    finally:
        workbook.close()


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


class WorkbookLoader:
    """Previews or imports a workbook's association rows through an AssociationClient."""

    def __init__(
        self,
        client: AssociationClient,
        obj_id: str,
        unique_ids: dict[str, int],
        *,
        batch_size: int = 200,
        language: str = "en",
        progress: TextIO | None = None,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.after_batch = after_batch
        self.obj_id = obj_id
        self.object_unique_id = unique_ids.get(obj_id, 0)
        self.other_unique_ids = {model: unique for model, unique in unique_ids.items() if model != obj_id}
        self.batch_size = batch_size
        self.language = language
        self.progress_stream = progress or sys.stderr
        self.stop = asyncio.Event()

    def _rows(self, source: Path) -> tuple[list[SheetRow], list[SheetReject]]:
        rows: list[SheetRow] = []
        unreadable: list[SheetReject] = []
        template = UNREADABLE_ROW["zh" if self.language == "zh" else "en"]
        for item in read_sheet(source):
            if isinstance(item, SheetRow):
                rows.append(item)
            else:
                unreadable.append(SheetReject(item, None, template % (SHEET, item)))
        return rows, unreadable

    async def preview(self, source: Path) -> dict[str, Any]:
        """What bk-cmdb's import dialog shows before importing: per other model, the rows that would create and
        delete links of the model (rows whose definition does not involve it are not counted); writes nothing."""
        rows, _unreadable = self._rows(source)
        ids = sorted({row.obj_asst_id for row in rows})
        definitions = (
            {d["bk_obj_asst_id"]: d for d in await self.client.definitions_by_ids(self.obj_id, ids)} if ids else {}
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            definition = definitions.get(row.obj_asst_id)
            if definition is None:
                continue
            other = definition["bk_asst_obj_id"] if definition["bk_obj_id"] == self.obj_id else definition["bk_obj_id"]
            count = counts.setdefault(str(other), {"create": 0, "delete": 0, "total": 0})
            if row.operation in ("add", "delete"):
                count["create" if row.operation == "add" else "delete"] += 1
        return {"association": counts}

    async def run(self, source: Path, state: State, rejects_path: Path) -> Summary:
        """Import the rows not done yet, `batch_size` at a time and in row order (rows are judged in order, each
        seeing those before it); stop early (state saved) when `stop` is set."""
        began = time.monotonic()
        rows, rejects = self._rows(source)
        summary = Summary(total=len(rows) + len(rejects), done_word="imported")
        pending = [row for row in rows if row.number not in state.done]
        summary.skipped = len(rows) - len(pending)
        rejects = [reject for reject in rejects if reject.number not in state.done]
        state.done.update(reject.number for reject in rejects)
        progress = Progress(summary.total, self.progress_stream)
        for start in range(0, len(pending), self.batch_size):
            if self.stop.is_set():
                break
            batch = pending[start : start + self.batch_size]
            try:
                failed = await self.client.import_associations(
                    self.obj_id, {row.number: row.as_import_row() for row in batch}, self.object_unique_id,
                    self.other_unique_ids,
                )  # fmt: skip
            except ServiceUnavailableError:
                summary.unsent += len(pending) - start
                break
            except CmdbApiError as error:
                # Refused as a whole (a body the service does not take, a caller it does not accept): the rows are
                # not done; a later run (or --resume) sends them again.
                summary.unsent += len(pending) - start
                summary.unsent_reason = f"{error.code}: {error.message}"
                break
            rejects += [SheetReject(row.number, row, failed[row.number]) for row in batch if row.number in failed]
            summary.created += sum(1 for row in batch if row.number not in failed)
            state.done.update(row.number for row in batch)
            state.save()
            progress.show(len(state.done))
            if self.after_batch is not None:
                self.after_batch()
        summary.interrupted = self.stop.is_set()
        state.save()
        progress.show(len(state.done), final=True)
        summary.rejected = len(rejects)
        summary.seconds = time.monotonic() - began
        write_sheet_rejects(rejects_path, rejects, append=summary.skipped > 0)
        return summary


def write_sheet_rejects(path: Path, rejects: list[SheetReject], *, append: bool) -> None:
    """The rows not imported as CSV: the sheet's row number, its cells and the message."""
    rows = []
    for reject in sorted(rejects, key=lambda item: item.number):
        row = reject.row
        cells = [row.obj_asst_id, row.operation, row.src, row.dst] if row else [""] * 4
        rows.append([reject.number, *cells, reject.message])
    write_rows(path, ["row", "bk_obj_asst_id", "operation", "source", "target", "message"], rows, append=append)
