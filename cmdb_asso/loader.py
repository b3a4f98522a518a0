"""`cmdb-asso load FILE`: links from CSV or JSON Lines, sent through the client in batches, resumable.

Each row holds `bk_obj_asst_id, bk_inst_id, bk_asst_inst_id` (and may hold `bk_obj_id, bk_asst_obj_id`). Rows
are grouped by definition into create-many calls of `--batch-size`, sent `--concurrency` at a time. A small
state file records the rows done, so that `--resume` skips them after an interruption; rows the service (or
the loader) refused go to a rejects file with their code and message.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cmdb_asso.client import AssociationClient, CmdbApiError, ServiceUnavailableError
from cmdb_asso.inputs import int64_or_none

FIELDS = ("bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id")
# bk-cmdb's preset association kinds, tried first when a row does not name its models.
PRESET_KINDS = ("belong", "group", "bk_mainline", "run", "connect", "default")
BAD_ROW_CODE = 1199006
ALREADY_EXISTS = 1101038
DEFINITION_MISSING = 1101046
WRONG_SPLIT = 1199006


@dataclass(frozen=True)
class Row:
    """One input row, by its number (1-based, header excluded)."""

    number: int
    obj_asst_id: str
    inst_id: int
    asst_inst_id: int
    obj_id: str = ""
    asst_obj_id: str = ""


@dataclass(frozen=True)
class Rejected:
    """A row that was not loaded, and why."""

    number: int
    raw: dict[str, Any]
    code: int
    message: str


@dataclass
class Summary:
    """What a load did."""

    total: int = 0
    created: int = 0
    rejected: int = 0
    skipped: int = 0
    unsent: int = 0
    # Why rows were not sent, when it was not the service being unavailable (a refused caller, ...).
    unsent_reason: str = "service unavailable"
    seconds: float = 0.0
    interrupted: bool = False
    rejects: list[Rejected] = field(default_factory=list)
    # A dry run: every row judged by the service, nothing written, no progress kept.
    dry_run: bool = False
    # What a row that passed did (a workbook's rows add and delete: they are imported).
    done_word: str = "created"

    def text(self) -> str:
        """One line for the end of the run."""
        rate = (self.created + self.rejected) / self.seconds if self.seconds else 0.0
        state = "interrupted" if self.interrupted else "dry run, nothing written" if self.dry_run else "done"
        created, rejected = ("would be created", "would be rejected") if self.dry_run else (self.done_word, "rejected")
        unsent = f", {self.unsent} not sent ({self.unsent_reason}: run again with --resume)" if self.unsent else ""
        return (
            f"{state}: {self.total} rows, {self.created} {created}, {self.rejected} {rejected}, "
            f"{self.skipped} skipped (already done){unsent}, {self.seconds:.1f} s, {rate:.0f} rows/s"
        )


def _integer(value: Any) -> int:
    # The service's own parser: ASCII digits or a JSON integer, 1..2**63-1; `11.9`, `"١٢"`, `"1_000"` are refused.
    number = int64_or_none(value.strip() if isinstance(value, str) else value, from_text=True, minimum=1)
    if number is None:
        raise ValueError("not an id")
    return number


class LoadFileInvalid(Exception):
    """The file cannot be loaded as a whole (a CSV header without the columns a row needs); the message says why."""


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's rows as (number, raw fields): JSON Lines for .jsonl/.ndjson/.json, CSV with a header otherwise;
    LoadFileInvalid when a CSV header lacks a column every row needs."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except ValueError:
                    raw = {"_line": line.rstrip("\n")}
                yield number, raw if isinstance(raw, dict) else {"_line": line.rstrip("\n")}
        else:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            if missing := [name for name in FIELDS if name not in header]:
                raise LoadFileInvalid(
                    f"{path}: the CSV header has no {', '.join(missing)} column; its first line must name the "
                    f"columns {', '.join(FIELDS)} (bk_obj_id and bk_asst_obj_id may follow)"
                )
            for number, raw in enumerate(reader, start=1):
                yield number, dict(raw)


def parse_row(number: int, raw: dict[str, Any]) -> Row | Rejected:
    """A row, or the reason it cannot be sent."""
    if "_line" in raw:
        return Rejected(number, raw, BAD_ROW_CODE, f"not a JSON object: {str(raw['_line'])[:80]}")
    missing = [name for name in FIELDS if raw.get(name) in (None, "")]
    if missing:
        return Rejected(number, raw, BAD_ROW_CODE, f"'{missing[0]}' unassigned")
    try:
        inst_id, asst_inst_id = _integer(raw["bk_inst_id"]), _integer(raw["bk_asst_inst_id"])
    except (TypeError, ValueError):
        bad = "bk_inst_id" if not _is_id(raw["bk_inst_id"]) else "bk_asst_inst_id"
        return Rejected(number, raw, BAD_ROW_CODE, f"'{bad}' data parameter verification does not pass")
    return Row(
        number,
        str(raw["bk_obj_asst_id"]).strip(),
        inst_id,
        asst_inst_id,
        str(raw.get("bk_obj_id") or "").strip(),
        str(raw.get("bk_asst_obj_id") or "").strip(),
    )


def _is_id(value: Any) -> bool:
    try:
        _integer(value)
    except (TypeError, ValueError):
        return False
    return True


def model_candidates(obj_asst_id: str) -> list[tuple[str, str]]:
    """Splits of `<source>_<kind>_<target>` into (source, target): preset kinds first, then every other split."""
    parts = obj_asst_id.split("_")
    preset: list[tuple[str, str]] = []
    other: list[tuple[str, str]] = []
    for left in range(1, len(parts) - 1):
        for right in range(left + 1, len(parts)):
            source, kind, target = "_".join(parts[:left]), "_".join(parts[left:right]), "_".join(parts[right:])
            (preset if kind in PRESET_KINDS else other).append((source, target))
    return preset + other


class State:
    """The rows done so far, kept in a small JSON file as ranges of row numbers, with the run they belong to
    (a new load is a new run; `--resume` continues the saved one)."""

    def __init__(self, path: Path, source: Path) -> None:
        self.path = path
        self.source = str(source.resolve())
        self.done: set[int] = set()
        self.run = uuid.uuid4().hex[:16]
        # Whether this run was started before (resumed): rows it had sent may have been written already.
        self.resumed = False

    def load(self) -> None:
        """Read the rows done by an earlier run of the same file."""
        if not self.path.exists():
            return
        saved = json.loads(self.path.read_text())
        if saved.get("source") != self.source:
            raise SystemExit(f"cmdb-asso load: {self.path} belongs to {saved.get('source')}, not this file")
        for first, last in saved.get("done", []):
            self.done.update(range(first, last + 1))
        self.run = str(saved.get("run") or self.run)
        self.resumed = True

    def save(self) -> None:
        """Write the rows done, atomically."""
        ranges: list[list[int]] = []
        for number in sorted(self.done):
            if ranges and ranges[-1][1] == number - 1:
                ranges[-1][1] = number
            else:
                ranges.append([number, number])
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"source": self.source, "run": self.run, "done": ranges}))
        temporary.replace(self.path)


class Progress:
    """A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total: int, stream: TextIO, *, every: float = 2.0) -> None:
        self.total, self.stream, self.every = total, stream, every
        self.started = self.last = time.monotonic()
        self.tty = stream.isatty()

    def show(self, done: int, *, final: bool = False) -> None:
        """Report `done` rows of the total."""
        now = time.monotonic()
        if not final and not self.tty and now - self.last < self.every:
            return
        self.last = now
        rate = done / (now - self.started) if now > self.started else 0.0
        eta = (self.total - done) / rate if rate else 0.0
        if self.tty:
            filled = int(30 * done / self.total) if self.total else 30
            bar = "#" * filled + "." * (30 - filled)
            end = "\n" if final else ""
            self.stream.write(f"\r[{bar}] {done}/{self.total} {rate:,.0f} rows/s ETA {eta:,.0f} s{end}")
        else:
            self.stream.write(f"loaded {done}/{self.total} rows, {rate:,.0f} rows/s, ETA {eta:,.0f} s\n")
        self.stream.flush()


class Loader:
    """Sends rows through an AssociationClient in batches."""

    def __init__(
        self,
        client: AssociationClient,
        *,
        batch_size: int = 200,
        concurrency: int = 4,
        progress: TextIO | None = None,
        after_batch: Callable[[], None] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.client = client
        # Rows are judged by the service's dry run: nothing is written, and the state file is left as it is.
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.progress_stream = progress or sys.stderr
        self.after_batch = after_batch
        self._models: dict[str, tuple[str, str] | None] = {}
        self._lookup_failed: dict[str, CmdbApiError] = {}
        self.stop = asyncio.Event()

    async def models_of(self, row: Row) -> tuple[str, str] | None:
        """The source and target models of the row's definition: named in the row, or found by asking the
        service (a dry run answers 1199006 for a wrong split, 1101046 when there is no such definition). Any other
        error (the service unavailable, the caller refused) says nothing of the definition: it is raised, and
        nothing is remembered."""
        if row.obj_id and row.asst_obj_id:
            return row.obj_id, row.asst_obj_id
        if row.obj_asst_id not in self._models:
            found = None
            for source, target in model_candidates(row.obj_asst_id):
                try:
                    await self.client.create_many(source, target, row.obj_asst_id, [(1, 1)], dry_run=True)
                except CmdbApiError as error:
                    if error.code == DEFINITION_MISSING:
                        break  # no such definition at all
                    if error.code == WRONG_SPLIT:
                        continue
                    raise
                found = (source, target)
                break
            self._models[row.obj_asst_id] = found
        return self._models[row.obj_asst_id]

    async def _models_or_raise(self, row: Row) -> tuple[str, str] | None:
        """models_of, asking the service once per definition in a run: a definition whose look-up failed fails
        again at once for the rest of the run."""
        failed = self._lookup_failed.get(row.obj_asst_id)
        if failed is not None:
            raise failed
        try:
            return await self.models_of(row)
        except CmdbApiError as error:
            self._lookup_failed[row.obj_asst_id] = error
            raise

    async def run(self, source: Path, state: State, rejects_path: Path) -> Summary:
        """Load the file; stop early (state saved) when `stop` is set."""
        began = time.monotonic()
        rows = list(read_rows(source))
        summary = Summary(total=len(rows), dry_run=self.dry_run)
        batches = await self._plan(rows, state, summary)
        sending = _Sending(state, summary, dict(rows), Progress(summary.total, self.progress_stream))
        limit = asyncio.Semaphore(self.concurrency)

        async def send(key: BatchKey, batch: list[Row]) -> None:
            async with limit:
                if not self.stop.is_set():
                    await self._send(key, batch, sending)

        await asyncio.gather(*(send(key, batch) for key, batch in batches))
        summary.interrupted = self.stop.is_set()
        if not self.dry_run:
            state.save()
        sending.progress.show(len(state.done), final=True)
        summary.rejected = len(summary.rejects)
        summary.seconds = time.monotonic() - began
        write_rejects(rejects_path, summary.rejects, append=summary.skipped > 0)
        return summary

    async def _plan(
        self, rows: list[tuple[int, dict[str, Any]]], state: State, summary: Summary
    ) -> list[tuple[BatchKey, list[Row]]]:
        """The rows not done yet, in batches by definition; rows refused before sending go to the rejects."""
        pending: dict[BatchKey, list[Row]] = {}
        batches: list[tuple[BatchKey, list[Row]]] = []
        seen: set[tuple[str, int, int]] = set()
        models_of: dict[str, tuple[str, str]] = {}  # each definition's two models, once known
        for number, raw in rows:
            if number in state.done:
                summary.skipped += 1
                continue
            parsed = parse_row(number, raw)
            if isinstance(parsed, Row):
                pair = (parsed.obj_asst_id, parsed.inst_id, parsed.asst_inst_id)
                try:
                    models = None if pair in seen else await self._models_or_raise(parsed)
                except CmdbApiError as error:
                    # Not known to be bad: left for a later run (or --resume), never marked done.
                    summary.unsent += 1
                    if not isinstance(error, ServiceUnavailableError):
                        summary.unsent_reason = f"{error.code}: {error.message}"
                    continue
                if models is not None:
                    seen.add(pair)
                    models_of[parsed.obj_asst_id] = (models[0], models[1])
                    key = (models[0], models[1], parsed.obj_asst_id)
                    group = pending.setdefault(key, [])
                    group.append(parsed)
                    if len(group) == self.batch_size:
                        batches.append((key, pending.pop(key)))
                    continue
                # A repeat within the file is refused here: batches run concurrently, and the first row in the
                # file must be the one that wins, as in one batch.
                src_model, dst_model = models_of.get(parsed.obj_asst_id, ("", ""))
                repeated = f"the associations {src_model}->{dst_model} already exist"  # as bk-cmdb words it
                parsed = (
                    Rejected(number, raw, 1101038, repeated)
                    if pair in seen
                    else Rejected(number, raw, 1101046, "object association does not exist.")
                )
            summary.rejects.append(parsed)
            state.done.add(number)
        return batches + list(pending.items())

    async def _send(self, key: BatchKey, batch: list[Row], sending: _Sending) -> None:
        """Send one batch and record each row's outcome."""
        summary, raw_by_number = sending.summary, sending.raw_by_number
        # The key names the run and the batch's content: a batch sent again within the run (after a crash, by
        # --resume) gets its first answer back; a new load of the same file (or new rows at the same place) is
        # new work, never an old answer.
        idempotency_key = f"load:{sending.state.run}:{batch_digest(key, batch)}"
        try:
            result = await self.client.create_many(
                *key,
                [(row.inst_id, row.asst_inst_id) for row in batch],
                dry_run=self.dry_run,
                idempotency_key=None if self.dry_run else idempotency_key,
            )
        except ServiceUnavailableError:
            # Transient, and retried by the client already: these rows are not done, and a later run (or
            # --resume) sends them again, with the same key.
            summary.unsent += len(batch)
            return
        except CmdbApiError as error:
            summary.rejects += [
                Rejected(row.number, raw_by_number[row.number], error.code, error.message) for row in batch
            ]
        else:
            summary.created += len(result.created)
            for index, (code, message) in result.errors.items():
                if code == ALREADY_EXISTS and not self.dry_run and (result.retried or sending.state.resumed):
                    # Sent more than once (by the client's retry, or by this run before it was cut): the attempt
                    # that got no answer wrote it.
                    summary.created += 1
                    continue
                row = batch[index]
                summary.rejects.append(Rejected(row.number, raw_by_number[row.number], code, message))
        if not self.dry_run:
            sending.state.done.update(row.number for row in batch)
            sending.state.save()
        sending.progress.show(len(sending.state.done))
        if self.after_batch is not None:
            self.after_batch()


# A batch's source model, target model and definition.
BatchKey = tuple[str, str, str]


@dataclass
class _Sending:
    """What the batches of one run share while they are sent."""

    state: State
    summary: Summary
    raw_by_number: dict[int, dict[str, Any]]
    progress: Progress


def batch_digest(key: BatchKey, batch: list[Row]) -> str:
    """What a batch asks for (its definition and pairs, in order), as a short digest."""
    content = json.dumps([list(key), [[row.inst_id, row.asst_inst_id] for row in batch]])
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def write_rejects(path: Path, rejects: list[Rejected], *, append: bool) -> None:
    """The rejected rows as CSV: row number, the row's fields, code and message."""
    rows = [[reject.number, *(reject.raw.get(name, "") for name in FIELDS), reject.code, reject.message]
            for reject in sorted(rejects, key=lambda item: item.number)]  # fmt: skip
    write_rows(path, ["row", *FIELDS, "code", "message"], rows, append=append)


def write_rows(path: Path, header: list[str], rows: list[list[Any]], *, append: bool) -> None:
    """A rejects file: `rows` under `header`, added to the file of an earlier run when `append` (a resumed one);
    a fresh run without any rows removes the file an earlier run left."""
    if not rows and not append:
        path.unlink(missing_ok=True)
        return
    exists = append and path.exists()
    with path.open("a" if exists else "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if not exists:
            writer.writerow(header)
        writer.writerows(rows)
