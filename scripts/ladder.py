"""The growth ladder: reads that concern one instance, timed as the links grow.

    python -m scripts.ladder [--sizes 1000,10000,100000] [--runs 3] [--mongodb-uri URI] [--json FILE]

For each size it seeds that many links straight into the store (in both models' tables, as the service writes
them): the same neighbourhood at every size (a hub instance with 20 links, and within three hops of it 621
instances and 620 links), and the rest spread over instances outside it. It starts the service as its own
process, and times each read through the service and, beside it, the same work done with the raw driver in its
best form on this server. It prints
per read the medians of `--runs` and their ratio, and the service's memory. 1,000,000 links take the embedded
store several minutes to seed: ask for them with `--sizes 1000,10000,100000,1000000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from bson.int64 import Int64
from pymongo import AsyncMongoClient

from cmdb_asso.config import MongoSettings
from cmdb_asso.storage.client import connect
from cmdb_asso.storage.documents import link_oid
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.schema import ensure_indexes
from cmdb_asso.storage.tables import dense_runs, run_filter
from scripts.bench import DATABASE, DST, HEADERS, NN, SRC, rss_mib, service
from scripts.bench import seed as seed_models

HUB = 1
HUB_LINKS = 20
# The hub's neighbourhood, the same at every size: hub -> 20 targets <- 10 sources each -> 2 targets each.
FIRST_SOURCES, FIRST_TARGETS = 100, 100
OUTSIDE = 1000  # instances from this id on carry the rest of the links
DEPTH = 3
WARM_UP = 3
SRC_TABLE, DST_TABLE = f"cc_InstAsst_0_pub_{SRC}", f"cc_InstAsst_0_pub_{DST}"
OWNER = {"bk_supplier_account": "0"}


def neighbourhood() -> list[tuple[int, int]]:
    """The (source, target) pairs within three hops of the hub: 620 links, 621 instances."""
    pairs = [(HUB, target) for target in range(1, HUB_LINKS + 1)]
    sources = iter(range(FIRST_SOURCES, FIRST_SOURCES + 10 * HUB_LINKS))
    targets = iter(range(FIRST_TARGETS, FIRST_TARGETS + 20 * HUB_LINKS))
    for target in range(1, HUB_LINKS + 1):
        for source in (next(sources) for _ in range(10)):
            pairs += [(source, target), (source, next(targets)), (source, next(targets))]
    return pairs


async def seed_links(uri: str, size: int, instances: int, runs: int) -> int:
    """`size` links of the n:n definition, the hub's neighbourhood among them, in both tables, as the service writes
    them on this server (`_id` keyed by id on the embedded one); the first id of those to delete."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    embedded = (await client.admin.command("buildInfo")).get("process") == "nx_27017"
    try:
        db = client[DATABASE]
        for table in (SRC_TABLE, DST_TABLE):
            await db[table].delete_many({})
        pairs = neighbourhood()
        outside = instances - OUTSIDE
        pairs += [
            # distinct for any size below `outside` squared: each round of sources takes targets shifted by one
            (OUTSIDE + number % outside, OUTSIDE + (number // outside + number * 7919) % outside)
            for number in range(size - len(pairs))
        ]
        docs = []
        for number, (src, dst) in enumerate(pairs):
            doc = {"id": Int64(10 + number), "bk_obj_asst_id": NN, "bk_asst_id": "connect", "bk_obj_id": SRC,
                   "bk_inst_id": Int64(src), "bk_asst_obj_id": DST, "bk_asst_inst_id": Int64(dst),
                   "bk_biz_id": Int64(0), **OWNER}  # fmt: skip
            docs.append({"_id": link_oid(10 + number), **doc} if embedded else doc)
        for start in range(0, size, 5000):
            chunk = docs[start : start + 5000]
            for table in (SRC_TABLE, DST_TABLE):
                await db[table].insert_many([dict(doc) for doc in chunk])
        return 10 + size - 4 * (runs + WARM_UP)
    finally:
        await client.close()


# The Association tab's page: 200 links of the definition with both ends' instances.
DETAILS_PAGE = {
    "bk_obj_id": SRC,
    "condition": {"asst_filter": {"condition": "AND", "rules": [{"field": "bk_obj_asst_id", "operator": "equal",
                                                                  "value": NN}]},
                  "src_detail": True, "dst_detail": True},
    "page": {"start": 0, "limit": 200, "sort": "id"},
}  # fmt: skip


async def instances_by_id(db: Any, by_model: dict[str, list[int]]) -> list[dict[str, Any]]:
    """The instances of each model with these ids: one indexed read per run of close ids."""
    reads = [
        db[f"cc_ObjectBase_0_pub_{obj}"].find({"bk_obj_id": obj, "bk_inst_id": run_filter(run)}, {"_id": 0})
        for obj, ids in by_model.items()
        for run in dense_runs(ids)
    ]
    return [doc for docs in await asyncio.gather(*(read.to_list(None) for read in reads)) for doc in docs]


async def raw_graph(db: Any) -> int:
    """The hub's neighbourhood, three hops both ways, as the raw driver reads it best here: per hop and model, one
    indexed read per run of close ids and direction; then the instances, as `instances_by_id`."""
    seen = {(SRC, HUB)}
    frontier: dict[str, list[int]] = {SRC: [HUB]}
    sides = (("bk_obj_id", "bk_inst_id"), ("bk_asst_obj_id", "bk_asst_inst_id"))
    for _ in range(DEPTH):
        reads = [
            db[f"cc_InstAsst_0_pub_{obj}"].find({**OWNER, model: obj, inst: run_filter(run)}, {"_id": 0})
            for obj, ids in frontier.items()
            for run in dense_runs(ids)
            for model, inst in sides
        ]
        frontier = {}
        for link in (link for links in await asyncio.gather(*(read.to_list(None) for read in reads)) for link in links):
            for model, inst in sides:
                if (end := (link[model], int(link[inst]))) not in seen:
                    seen.add(end)
                    frontier.setdefault(end[0], []).append(end[1])
    by_model: dict[str, list[int]] = {}
    for obj, inst_id in seen:
        by_model.setdefault(obj, []).append(inst_id)
    await instances_by_id(db, by_model)
    return len(seen)


async def raw_details(db: Any) -> None:
    """The page of `DETAILS_PAGE`: the links, then both ends' instances."""
    cursor = db[SRC_TABLE].find({"bk_obj_asst_id": NN, **OWNER}, {"_id": 0}).sort("id", 1).limit(200)
    links = await cursor.to_list(None)
    await instances_by_id(
        db, {SRC: [link["bk_inst_id"] for link in links], DST: [link["bk_asst_inst_id"] for link in links]}
    )


async def median_ms(step: Callable[[], Awaitable[Any]], runs: int) -> float:
    """The median time of `runs` calls of `step`, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await step()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def settle(read: Callable[[], Awaitable[Any]]) -> None:
    """Call `read` until three calls in a row take at most 1.5 times the fastest yet (at most 200 calls): the
    service's start-up work (index checks, the first recovery pass over the tables) is done by then, and the
    embedded server no longer serialises the timed reads behind it."""
    fastest, steady = float("inf"), 0
    for _ in range(200):
        started = time.perf_counter()
        await read()
        took = time.perf_counter() - started
        fastest = min(fastest, took)
        steady = steady + 1 if took <= 1.5 * fastest else 0
        if steady == 3:
            return


async def one_size(args: argparse.Namespace, uri: str, embedded: bool, size: int) -> dict[str, dict[str, float]]:
    """Every read at one size: the service's median, the raw driver's, their ratio."""
    doomed = await seed_links(uri, size, args.instances, args.runs)
    mongo = await connect(MongoSettings(database=DATABASE), uri)
    try:
        await ensure_indexes(mongo, "0")  # the tables' indexes built before anything is timed
    finally:
        await mongo.close()
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = raw[DATABASE]
    keyed = (await raw.admin.command("buildInfo")).get("process") == "nx_27017"
    rows: dict[str, dict[str, float]] = {}
    try:
        # The event feed off: links seeded straight into the store while no service ran would otherwise be replayed
        # by it during the timings (the embedded server records a tracked table's changes with no stream open).
        # What the feed costs is the benchmark's to say (`make bench`, with CMDB_ASSO_WATCH_ENABLED on and off).
        feed_off = {"CMDB_ASSO_WATCH_ENABLED": "off"}
        async with service(uri, "pymongo", embedded, feed_off) as (base, pid), aiohttp.ClientSession() as session:

            async def post(path: str, body: dict[str, Any], method: str = "POST") -> Any:
                async with session.request(method, f"{base}{path}", data=orjson.dumps(body), headers=HEADERS) as reply:
                    answer = await reply.json(loads=orjson.loads)
                if answer.get("bk_error_code") != 0:
                    raise RuntimeError(f"{path}: {answer}")
                return answer["data"]

            related = {"condition": {"bk_obj_id": SRC, "bk_inst_id": HUB}, "fields": ["id", "bk_inst_id"],
                       "page": {"start": 0, "limit": 50}}  # fmt: skip
            rules = {"condition": "AND", "rules": [{"field": "bk_inst_id", "operator": "equal", "value": HUB}]}
            as_source = {"bk_obj_id": SRC, "bk_inst_id": HUB, **OWNER}
            as_target = {"bk_asst_obj_id": SRC, "bk_asst_inst_id": HUB, **OWNER}

            async def raw_related() -> None:
                await asyncio.gather(db[SRC_TABLE].find(as_source).sort("id", 1).limit(50).to_list(None),
                                     db[SRC_TABLE].find(as_target).sort("id", 1).limit(50).to_list(None))  # fmt: skip

            async def raw_topology() -> None:
                """The hub's links both ways, then the instances at their other ends (what the topology shows)."""
                sides = await asyncio.gather(db[SRC_TABLE].find(as_source, {"_id": 0}).to_list(None),
                                             db[SRC_TABLE].find(as_target, {"_id": 0}).to_list(None))  # fmt: skip
                targets = [link["bk_asst_inst_id"] for link in sides[0]]
                await instances_by_id(db, {DST: targets, SRC: [link["bk_inst_id"] for link in sides[1]]})

            deleted = iter(range(doomed, doomed + 4 * (args.runs + WARM_UP)))

            async def raw_delete() -> None:
                link_id = next(deleted)
                # By the key this server indexes: the `_id` keyed by id on the embedded one, `id` on MongoDB.
                key = {"_id": link_oid(link_id)} if keyed else {"id": link_id}
                for table in (SRC_TABLE, DST_TABLE):
                    await db[table].delete_one(key)

            reads: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
                "find related (both directions)": (
                    lambda: post("/api/v3/find/instassociation/related", related), raw_related),
                "count for one instance's filter": (
                    lambda: post(f"/api/v3/count/instance_associations/object/{SRC}", {"conditions": rules}),
                    # `$eq`, as the query builder writes it: the embedded server's count command scans for a plain
                    # equality (100 ms at 100,000 links) and uses the index for `$eq` (1 ms).
                    lambda: db.command("count", SRC_TABLE, query={"bk_inst_id": {"$eq": HUB}, **OWNER})),
                "delete one by id": (
                    lambda: post(f"/api/v3/delete/instassociation/{SRC}/{next(deleted)}", {}, "DELETE"), raw_delete),
                "instance topology of the hub": (
                    lambda: post(f"/api/v3/find/insttopo/object/{SRC}/inst/{HUB}", {}), raw_topology),
                f"graph, depth {DEPTH} ({len(neighbourhood()) + 1} instances)": (
                    lambda: post("/api/v3/find/instassociation/graph",
                                 {"bk_obj_id": SRC, "bk_inst_id": HUB, "direction": "both", "depth": DEPTH}),
                    lambda: raw_graph(db)),
                "a page of 200 links with details": (
                    lambda: post(f"/api/v3/find/instassociation/object/{SRC}/inst/detail", DETAILS_PAGE),
                    lambda: raw_details(db)),
                "search, first page of 500": (
                    lambda: post(f"/api/v3/search/instance_associations/object/{SRC}",
                                 {"conditions": {"condition": "AND", "rules": [
                                     {"field": "bk_obj_asst_id", "operator": "equal", "value": NN}]},
                                  "page": {"start": 0, "limit": 500}}),
                    lambda: db[SRC_TABLE].find({"bk_obj_asst_id": NN, **OWNER}).sort("id", 1).limit(500).to_list(None)),
            }  # fmt: skip
            await settle(reads["find related (both directions)"][0])
            for name, (through_service, best) in reads.items():
                # Warm: definitions and model rows cached, and the service's start-up work (index checks, the
                # first recovery pass) done, which the embedded server serialises with the reads.
                for _ in range(WARM_UP):
                    await through_service()
                    await best()
                mine = await median_ms(through_service, args.runs)
                theirs = await median_ms(best, args.runs)
                rows[name] = {"service_ms": mine, "raw_ms": theirs, "ratio": mine / theirs if theirs else 0.0}
            rows["service RSS MiB"] = {"service_ms": rss_mib(pid), "raw_ms": 0.0, "ratio": 0.0}
    finally:
        await raw.close()
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Start the store, seed the models once, climb the ladder."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cmdb-asso-ladder-") as data_dir:
        embedded = None
        uri = args.mongodb_uri
        if uri == "embedded":
            embedded = EmbeddedMongo(data_dir)
            uri = await embedded.start()
        try:
            await seed_models(uri, args.instances * 2)
            for size in args.sizes:
                started = time.monotonic()
                results[str(size)] = await one_size(args, uri, embedded is not None, size)
                print(f"{size} links done in {time.monotonic() - started:.0f} s", file=sys.stderr)
        finally:
            if embedded is not None:
                await embedded.stop()
    return {"store": "embedded nx-27017" if args.mongodb_uri == "embedded" else "MongoDB", "ladder": results}


def render(result: dict[str, Any]) -> str:
    """One line per read: the service's and the raw driver's medians at every size, and their ratio."""
    sizes = list(result["ladder"])
    names = list(next(iter(result["ladder"].values())))
    lines = [f"{'read (ms: service / raw driver, ratio)':42s} " + " ".join(f"{size + ' links':>24s}" for size in sizes)]
    for name in names:
        cells = []
        for size in sizes:
            row = result["ladder"][size][name]
            if name.startswith("service RSS"):
                cells.append(f"{row['service_ms']:>20.1f} MiB")
            else:
                cells.append(f"{row['service_ms']:>8.1f} / {row['raw_ms']:7.1f} {row['ratio']:4.1f}x")
        lines.append(f"{name:42s} " + " ".join(f"{cell:>24s}" for cell in cells))
    return "\n".join(lines)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mongodb-uri", default="embedded")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=5000, help="instances of each model the links join")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",") if size]
    result = asyncio.run(main_async(args))
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
