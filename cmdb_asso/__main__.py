"""Command line: serve, init-db, seed-demo, hash-secret, check-auth, check-links, load, export, watch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import structlog
from aiohttp import web

from cmdb_asso.app import create_app, gateway_verifier, open_mongo
from cmdb_asso.client import AssociationClient, CmdbApiError
from cmdb_asso.config import ConfigError, Settings, load_settings
from cmdb_asso.credentials import DEFAULT_ITERATIONS, hash_secret
from cmdb_asso.errors import (
    CmdbError,
    DuplicateItem,
    GatewayAuthFailed,
    OneToManyViolated,
    OneToOneViolated,
    StoreReadUnavailable,
    StoreWriteUnavailable,
)
from cmdb_asso.export import FORMATS, export_links
from cmdb_asso.keys import MONGO
from cmdb_asso.loader import Loader, LoadFileInvalid, State, Summary
from cmdb_asso.log import setup_logging
from cmdb_asso.service.associations import AssociationService, CreateRequest
from cmdb_asso.service.context import Caller
from cmdb_asso.service.iam import IamClient
from cmdb_asso.service.permission import AllowAll
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.embedded import EMBEDDED, EmbeddedMongo, EmbeddedStartFailed
from cmdb_asso.storage.repair import find_problems, repair
from cmdb_asso.storage.schema import DEMO_LINKS, ShardedTables, ensure_indexes, has_definitions, seed_demo
from cmdb_asso.web.server import port_in_use, run
from cmdb_asso.workbook import SUFFIXES as WORKBOOK_SUFFIXES
from cmdb_asso.workbook import WorkbookLoader
from cmdb_asso.workers import ServiceProcesses

log = structlog.get_logger("cmdb_asso")
EVENT_NODE_MISSING = 1103007


def _at_least(low: float, kind: type[float] | type[int] = float) -> Callable[[str], float]:
    """An argparse type: a number no smaller than `low`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, not {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmdb-asso", description="Instance associations for a BlueKing CMDB.")
    parser.add_argument("--config", help="YAML settings file (default: $CMDB_ASSO_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--seed-demo-if-empty", action="store_true", help="write the demo data into an empty database")
    serve.add_argument(
        "--workers", type=_at_least(1, int), default=1, help="service processes sharing the port (default 1)"
    )
    init_help = "create the indexes of every model's association table (idempotent)"
    commands.add_parser("init-db", help=init_help, description=init_help.capitalize() + ": the unique indexes that "
                        "keep the rules, built where missing; what exists is left as it is. Run it before serving a "
                        "large bk-cmdb database, or let the service prepare tables in the background.")  # fmt: skip
    seed_help = "write the demo models, definitions, instances and links (idempotent)"
    commands.add_parser("seed-demo", help=seed_help, description=seed_help.capitalize() + ": what the README's "
                        "examples and the /graph page use. Links already there are left as they are; a link whose "
                        "mapping another link's place refuses is named.")  # fmt: skip
    hash_help = "print the salted hash of an ESB app secret for auth.apps (reads the secret from stdin)"
    hash_secret_command = commands.add_parser(
        "hash-secret",
        help=hash_help,
        description=hash_help.capitalize() + ". Put the line it prints in "
        "auth.apps as the app's secret_hash; the secret itself is never stored.",
    )
    hash_secret_command.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=argparse.SUPPRESS)
    check_auth_help = "check the BlueKing settings: verify a gateway token, ask IAM once for a user's policy"
    check_auth = commands.add_parser("check-auth", help=check_auth_help, description=check_auth_help.capitalize()
                                     + ". Exit status 0 when every configured part answers, 1 otherwise.")  # fmt: skip
    check_auth.add_argument("--token", default="", help="an X-Bkapi-JWT to verify with auth.gateway's keys")
    check_auth.add_argument("--user", default="admin", help="the user whose IAM policy is asked for (default admin)")
    check_auth.add_argument("--action", default="view_sys_model", help="the IAM action asked for (default "
                            "view_sys_model)")  # fmt: skip
    load = commands.add_parser(
        "load",
        help="load links from a CSV or JSON Lines file, or an Excel workbook's association sheet, through the API",
    )
    load.add_argument("file", type=Path, help="CSV with a header, JSON Lines (.jsonl, .ndjson, .json), or an Excel "
                      "workbook (.xlsx) in bk-cmdb's export layout")  # fmt: skip
    load.add_argument("--url", default=None, help="the service (default: http://<http.host>:<http.port>)")
    load.add_argument("--user", default="admin", help="the user the links are written as (default admin)")
    load.add_argument("--spelling", choices=["native", "esb"], default="native",
                      help="the routes to call: native /api/v3/... or the ESB gateway's (default native)")  # fmt: skip
    load.add_argument("--app-code", default="", help="the ESB app code (with --spelling esb)")
    load.add_argument("--app-secret", default="", help="the ESB app secret (with --spelling esb)")
    load.add_argument("--concurrency", type=_at_least(1, int), default=4, help="batches in flight (default 4)")
    load.add_argument("--batch-size", type=_at_least(1, int), default=200,
                      help="rows per create-many call (default 200; at most limits.create_many_max)")  # fmt: skip
    load.add_argument("--resume", action="store_true", help="skip the rows an earlier run finished")
    load.add_argument("--dry-run", action="store_true",
                      help="judge every row by the service's rules and write nothing (no state kept; the rows it "
                      "would refuse go to the rejects file)")  # fmt: skip
    load.add_argument("--state", type=Path, help="state file (default: FILE.state)")
    load.add_argument("--rejects", type=Path, help="rejected rows (default: FILE.rejects.csv)")
    load.add_argument("--object", default="", help="a workbook's model: the one whose instances it was exported with")
    load.add_argument("--unique", action="append", default=[], metavar="MODEL=ID", type=_unique_rule,
                      help="a workbook's unique rule (cc_ObjectUnique id) naming a model's instances; one for --object "
                      "and one per other model (repeat)")  # fmt: skip
    load.add_argument("--language", choices=["en", "zh"], default="en",
                      help="the language of a workbook's attribute names and of the messages (default en)")  # fmt: skip
    export = commands.add_parser(
        "export", help="write a model's links, filtered as search filters them, as CSV or JSON Lines that load reads"
    )
    export.add_argument("obj_id", help="the model whose links are written (as source or target)")
    export.add_argument("--output", type=Path, help="the file to write (default: standard output)")
    export.add_argument("--format", choices=FORMATS, default="csv", help="csv (with a header) or jsonl (default csv)")
    export.add_argument("--conditions", default="",
                        help="query-builder rules as JSON, as search takes them (default: every link)")  # fmt: skip
    export.add_argument("--url", default=None, help="the service (default: http://<http.host>:<http.port>)")
    export.add_argument("--user", default="admin", help="the user the links are read as (default admin)")
    export.add_argument("--page-size", type=_at_least(1, int), default=500, help="links per read (default 500)")
    watch = commands.add_parser(
        "watch", help="follow the link events and print one JSON line per event (resumes from a cursor file)"
    )
    watch.add_argument("--url", default=None, help="the service (default: http://<http.host>:<http.port>)")
    watch.add_argument("--user", default="admin", help="the user the events are read as (default admin)")
    watch.add_argument("--cursor-file", type=Path, help="where the last event's cursor is kept, and resumed from")
    watch.add_argument("--start-from", type=int, default=0, help="unix seconds (without a cursor): start there")
    watch.add_argument("--event-types", default="", help="comma-separated: create, delete")
    watch.add_argument("--fields", default="", help="comma-separated detail fields")
    watch.add_argument("--sub-resource", default="", help="only links whose source or target is this model")
    check = commands.add_parser(
        "check-links",
        help="report unfinished writes, half links, links without audit, duplicates and missing unique indexes",
    )
    check.add_argument("--repair", action="store_true", help="mend what is found")
    check.add_argument(
        "--grace-seconds",
        type=_at_least(0),
        default=60.0,
        help="writes younger than this may still be in flight: reported, but left alone (default 60; 0 when "
        "the service is stopped)",
    )
    check.add_argument(
        "--since-hours", type=_at_least(0), default=0, help="check only links created this recently (default 0: all)"
    )
    for choice in commands._choices_actions:  # `cmdb-asso COMMAND --help` opens with what the command does
        named = commands.choices[choice.dest]
        named.description = named.description or (choice.help or "").capitalize()
    return parser


def _read_secret() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("secret: ")
    return sys.stdin.readline().rstrip("\n")


def _stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT or SIGTERM, so that a command ends cleanly where it is."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread receives signals (a caller running this in a thread has no Ctrl-C to catch).
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    try:
        conditions = json.loads(args.conditions) if args.conditions else None
    except ValueError:
        print("cmdb-asso export: --conditions must be JSON (query-builder rules)", file=sys.stderr)
        return 2
    url = args.url or f"http://{settings.http.host}:{settings.http.port}"
    stop = asyncio.Event()
    _stop_on_signals(stop)
    output = args.output.open("w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        async with AssociationClient(url, user=args.user) as client:
            written = await export_links(
                client, args.obj_id, output, conditions=conditions, fmt=args.format, page_size=args.page_size,
                stopped=stop.is_set,
            )  # fmt: skip
    except CmdbApiError as exc:
        print(f"cmdb-asso export: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.output:
            output.close()
    print(f"{'stopped after' if stop.is_set() else 'exported'} {written} link(s)", file=sys.stderr)
    return 130 if stop.is_set() else 0


async def _watch(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or f"http://{settings.http.host}:{settings.http.port}"
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with AssociationClient(url, user=args.user) as client:
        try:
            await follow_events(client, args, stop)
        except CmdbApiError as exc:
            print(f"cmdb-asso watch: {exc}", file=sys.stderr)
            if exc.code == EVENT_NODE_MISSING:
                print("the cursor expired: start again with --start-from, or without a cursor file", file=sys.stderr)
            return 1
    return 0


class CursorFile:
    """Where `watch` keeps the last event's cursor (nowhere without a path)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> str:
        """The cursor kept, or "" (then the stream starts from a time, or from now)."""
        if self.path is None or not self.path.is_file():
            return ""
        return self.path.read_text(encoding="ascii").strip()

    def save(self, cursor: str) -> None:
        """Keep `cursor`: written whole, then renamed, so that a crash never leaves half a cursor."""
        if self.path is None:
            return
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(cursor, encoding="ascii")
        partial.replace(self.path)


async def follow_events(client: AssociationClient, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Print each event as one JSON line and keep its cursor in the cursor file, until `stop` is set."""
    cursor_file = CursorFile(args.cursor_file)
    events = client.events(
        cursor=cursor_file.load(), start_from=args.start_from, sub_resource=args.sub_resource,
        event_types=[kind for kind in args.event_types.split(",") if kind],
        fields=[name for name in args.fields.split(",") if name],
    )  # fmt: skip
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following  # the generator stops before it is closed
                return
            event = following.result()
            sys.stdout.write(orjson.dumps(event).decode() + "\n")
            sys.stdout.flush()
            cursor_file.save(str(event["bk_cursor"]))
    finally:
        stopped.cancel()
        await events.aclose()


async def _check_auth(args: argparse.Namespace, settings: Settings) -> int:
    """What an operator checks after configuring the gateway and IAM: one line per part, and its verdict."""
    ok = True
    gateway = gateway_verifier(settings)
    if gateway is None:
        print("gateway: no auth.gateway.public_key; X-Bkapi-JWT is ignored")
    else:
        kids = ", ".join(kid or "(any kid)" for kid in gateway.keys)
        required = "required" if gateway.jwt_required else "optional"
        algorithms = ", ".join(gateway.algorithms)
        print(f"gateway: {len(gateway.keys)} key(s) [{kids}], algorithms {algorithms}, token {required}")
    if args.token:
        if gateway is None:
            print("token: not checked (no gateway key)")
            ok = False
        else:
            try:
                identity = gateway.identity(args.token)
            except GatewayAuthFailed:
                print("token: refused (the reason is in the gateway_token_refused log line above)")
                ok = False
            else:
                print(f"token: valid for user {identity.user!r}, app {identity.app_code!r}")
    iam = settings.auth.iam
    if settings.auth.authorizer != "iam":
        print(f"iam: not used (auth.authorizer is {settings.auth.authorizer})")
        return 0 if ok else 1
    client = IamClient(iam.url, iam.app_code, iam.app_secret, timeout_seconds=iam.timeout_seconds, cache_seconds=0)
    try:
        condition = (await client.conditions(args.user, [args.action]))[args.action]
    except CmdbError as error:
        print(f"iam: {client.state} at {iam.url} as {iam.app_code} ({error.message('en')})")
        ok = False
    else:
        print(f"iam: answers at {iam.url} as {iam.app_code}; {args.user}'s {args.action}: {json.dumps(condition)}")
    finally:
        await client.close()
    return 0 if ok else 1


@dataclass(frozen=True)
class _LoadFiles:
    """What a load reads and writes beside its input: its state (kept, or started afresh) and rejects, and the
    service it calls."""

    source: Path
    state: State
    rejects: Path
    url: str


def _load_files(args: argparse.Namespace, settings: Settings) -> _LoadFiles:
    source: Path = args.file
    state = State(args.state or source.with_name(source.name + ".state"), source)
    if args.resume:
        state.load()
    elif state.path.exists() and not args.dry_run:
        state.path.unlink()
    rejects = args.rejects or source.with_name(source.name + ".rejects.csv")
    return _LoadFiles(source, state, rejects, args.url or f"http://{settings.http.host}:{settings.http.port}")


def _load_outcome(summary: Summary, rejects: Path) -> int:
    """Print a load's summary; its exit status."""
    print(summary.text())
    print(f"rejected rows: {rejects}" if summary.rejected else "no rejected rows")
    if summary.interrupted:
        return 130
    if summary.unsent:
        return 75  # EX_TEMPFAIL: run again with --resume
    return 1 if summary.rejected else 0  # every row was answered; some were refused (see the rejects file)


async def _load_workbook(args: argparse.Namespace, settings: Settings) -> int:
    files = _load_files(args, settings)
    async with AssociationClient(files.url, user=args.user, language=args.language) as client:
        loader = WorkbookLoader(client, args.object, dict(args.unique), batch_size=args.batch_size,
                                language=args.language)  # fmt: skip
        _stop_on_signals(loader.stop)
        try:
            if args.dry_run:
                print(json.dumps(await loader.preview(files.source), ensure_ascii=False))
                return 0
            summary = await loader.run(files.source, files.state, files.rejects)
        except LoadFileInvalid as exc:
            print(f"cmdb-asso load: {exc}", file=sys.stderr)
            return 2
    return _load_outcome(summary, files.rejects)


async def _load(args: argparse.Namespace, settings: Settings) -> int:
    files = _load_files(args, settings)
    async with AssociationClient(
        files.url,
        user=args.user,
        spelling=args.spelling,
        app_code=args.app_code,
        app_secret=args.app_secret,
        concurrency=args.concurrency,
    ) as client:
        loader = Loader(client, batch_size=args.batch_size, concurrency=args.concurrency, dry_run=args.dry_run)
        _stop_on_signals(loader.stop)
        try:
            summary = await loader.run(files.source, files.state, files.rejects)
        except LoadFileInvalid as exc:
            print(f"cmdb-asso load: {exc}", file=sys.stderr)
            return 2
    return _load_outcome(summary, files.rejects)


async def _check_links(
    mongo: MongoConnection, supplier_account: str, *, fix: bool, grace_seconds: float, since_hours: float
) -> int:
    problems = await find_problems(mongo, supplier_account, grace_seconds=grace_seconds, since_hours=since_hours)
    for problem in problems:
        print(problem.describe())
    if problems and fix:
        mended = await repair(mongo, supplier_account, problems, grace_seconds=grace_seconds)
        print(f"repaired {mended} problem(s)")
        left = await find_problems(mongo, supplier_account, grace_seconds=grace_seconds, since_hours=since_hours)
        print(f"{len(left)} problem(s) left" if left else "no problems left")
        return 1 if left else 0
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0


def serve(settings: Settings, *, seed_if_empty: bool) -> None:
    """Run the HTTP service until SIGINT or SIGTERM."""
    app = create_app(settings)
    if seed_if_empty:

        async def seed(app: web.Application) -> None:
            await _seed_if_empty(app[MONGO], settings.supplier_account)

        app.on_startup.append(seed)
    log.info("serving", host=settings.http.host, port=settings.http.port, mongodb=_shown_uri(settings.mongodb.uri))
    run(app, settings)


def _shown_uri(uri: str) -> str:
    return uri.split("@")[-1]


async def _seed_if_empty(mongo: MongoConnection, supplier_account: str) -> None:
    if not await has_definitions(mongo):
        await seed_demo(mongo, supplier_account)
        log.info("demo_data_seeded")


def serve_processes(settings: Settings, *, workers: int, seed_if_empty: bool) -> int:
    """Run `workers` service processes on one port under gunicorn's master until SIGTERM or SIGINT. The
    embedded server, when configured, is started once here, and every worker connects to it."""
    embedded = None
    if settings.mongodb.uri == EMBEDDED:
        embedded = EmbeddedMongo(settings.data_dir)
        settings = replace(settings, mongodb=replace(settings.mongodb, uri=embedded.start_blocking()))
    try:
        if seed_if_empty:
            asyncio.run(_with_mongo(settings, lambda mongo: _seed_if_empty(mongo, settings.supplier_account)))
        log.info("serving", host=settings.http.host, port=settings.http.port, workers=workers)
        try:
            ServiceProcesses(settings, workers=workers).run()
        except SystemExit as stopped:  # gunicorn's master ends by exiting with its status
            return stopped.code if isinstance(stopped.code, int) else 1
        return 0
    finally:
        if embedded is not None:
            embedded.stop_blocking()


async def _with_mongo(settings: Settings, work: Callable[[MongoConnection], Awaitable[None]]) -> None:
    # One-off commands use the service's embedded server when it runs, rather than a second one on its files.
    mongo, embedded = await open_mongo(settings, use_running_server=True)
    try:
        await work(mongo)
    finally:
        await mongo.close()
        if embedded is not None:
            await embedded.stop()


async def _seed_demo_with_links(mongo: MongoConnection, supplier_account: str) -> None:
    """The demo data, and links between its instances written through the service's rules (with their audit
    records), so that /graph has something to draw; links that exist already are left as they are."""
    await seed_demo(mongo, supplier_account)
    store = AssociationStore(mongo, id_block_size=10, definition_cache_seconds=0)
    service = AssociationService(store, AllowAll())
    demo = Caller(user="seed-demo", supplier_account=supplier_account, request_id="seed-demo")
    created = present = 0
    refused: list[str] = []
    for obj_asst_id, src, dst in DEMO_LINKS:
        try:
            await service.create_one(demo, CreateRequest(obj_asst_id, src, dst))
        except DuplicateItem:
            present += 1  # there already: seeding again changes nothing
            continue
        except (OneToOneViolated, OneToManyViolated) as refusal:  # the link itself, or another in its place
            definition = await service.definition(obj_asst_id, supplier_account)
            if await store.link_ids(definition, supplier_account, [(src, dst)]):
                present += 1
            else:
                refused.append(f"{obj_asst_id} {src}->{dst}: {refusal.message('en')}")
            continue
        created += 1
    await service.close()
    print(f"demo links: {created} created, {present} there already, {len(refused)} refused by their mapping")
    for line in refused:
        print(f"  refused: {line}")


async def _init_db(mongo: MongoConnection, supplier_account: str) -> None:
    states = await ensure_indexes(mongo, supplier_account)
    for state in states:
        missing = ", ".join(state.missing) if state.missing else "none"
        print(f"{state.table}: missing indexes: {missing}")
    incomplete = [state.table for state in states if not state.complete]
    print(
        f"{len(states)} table(s) ready"
        + (f"; {len(incomplete)} without every unique index (see check-links)" if incomplete else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cmdb-asso` and `python -m cmdb_asso`."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"cmdb-asso: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log)
    try:
        return _run(args, settings)
    except EmbeddedStartFailed as exc:
        print(f"cmdb-asso: {exc}", file=sys.stderr)
        return 2


def _unique_rule(text: str) -> tuple[str, int]:
    model, _, unique = text.partition("=")
    if not model or not unique.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL=ID, for example host=1")
    return model, int(unique)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "hash-secret":
        secret = _read_secret()
        if not secret:
            print("cmdb-asso: hash-secret needs a non-empty secret", file=sys.stderr)
            return 2
        print(hash_secret(secret, iterations=args.iterations))
        return 0
    if args.command == "check-auth":
        return asyncio.run(_check_auth(args, settings))
    if args.command == "load":
        if not args.file.is_file():
            print(f"cmdb-asso load: no such file: {args.file}", file=sys.stderr)
            return 2
        if args.file.suffix.lower() in WORKBOOK_SUFFIXES:
            if not args.object or args.object not in dict(args.unique):
                print("cmdb-asso load: a workbook needs --object MODEL and --unique MODEL=ID for it (and one per "
                      "other model)", file=sys.stderr)  # fmt: skip
                return 2
            return asyncio.run(_load_workbook(args, settings))
        return asyncio.run(_load(args, settings))
    if args.command == "watch":
        return asyncio.run(_watch(args, settings))
    if args.command == "export":
        return asyncio.run(_export(args, settings))
    if args.command == "serve":
        http = settings.http
        if port_in_use(http.host, http.port):  # before the embedded server is started or used
            print(
                f"cmdb-asso: port {http.port} on {http.host} is in use (another service?); "
                "set http.port (CMDB_ASSO_HTTP_PORT) to a free port",
                file=sys.stderr,
            )
            return 2
        if args.workers > 1:
            return serve_processes(settings, workers=args.workers, seed_if_empty=args.seed_demo_if_empty)
        try:
            serve(settings, seed_if_empty=args.seed_demo_if_empty)
        except ShardedTables as exc:
            print(f"cmdb-asso: {exc}", file=sys.stderr)
            return 2
        return 0
    supplier = settings.supplier_account
    try:
        if args.command == "check-links":
            outcome: list[int] = []

            async def check(mongo: MongoConnection) -> None:
                outcome.append(
                    await _check_links(
                        mongo, supplier, fix=args.repair, grace_seconds=args.grace_seconds, since_hours=args.since_hours
                    )
                )

            asyncio.run(_with_mongo(settings, check))
            return outcome[0]
        if args.command == "init-db":
            asyncio.run(_with_mongo(settings, lambda mongo: _init_db(mongo, supplier)))
        else:
            asyncio.run(_with_mongo(settings, lambda mongo: _seed_demo_with_links(mongo, supplier)))
            log.info("demo_data_ready")
    except CmdbError as exc:
        where = "the embedded server" if settings.mongodb.uri == EMBEDDED else _shown_uri(settings.mongodb.uri)
        hint = ""
        if isinstance(exc, StoreReadUnavailable | StoreWriteUnavailable):
            hint = f"; is MongoDB at {where} running and reachable? (mongodb.uri, CMDB_ASSO_MONGODB_URI)"
        print(f"cmdb-asso: {args.command} failed: {exc.message('en')}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
