"""A fault-injecting MongoDB wire proxy, in the spirit of MongoDB's own `failCommand` fail point.

It sits between the driver and the embedded server, forwards every message, and can answer chosen commands
itself with the error documents a real server sends (code, codeName, errmsg, errorLabels, writeErrors), so
that the service meets a real server's failures without one. It can also make the server look like a
replica-set member (`setName` in `hello`), so that the transaction path runs against the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
_HEADER = struct.Struct("<iiii")

Predicate = Callable[[dict[str, Any]], bool]


def command_error(code: int, code_name: str, errmsg: str, *labels: str) -> dict[str, Any]:
    """A command failure as a real server answers it."""
    reply: dict[str, Any] = {"ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name}
    if labels:
        reply["errorLabels"] = list(labels)
    return reply


def write_error(code: int, errmsg: str, *, index: int = 0) -> dict[str, Any]:
    """A write command whose write failed (the command itself succeeds), as for E11000."""
    return {"ok": 1.0, "n": 0, "writeErrors": [{"index": index, "code": code, "errmsg": errmsg}]}


DUPLICATE_KEY_INDEX_BUILD = command_error(
    11000, "DuplicateKey", "Index build failed: E11000 duplicate key error collection: cmdb.cc_InstAsst_0_pub_x"
)
UNAUTHORIZED = command_error(13, "Unauthorized", "not authorized on cmdb to execute command { createIndexes: ... }")
INDEX_OPTIONS_CONFLICT = command_error(
    85, "IndexOptionsConflict", "Index with name: x already exists with a different name"
)
WRITE_CONFLICT = command_error(
    112, "WriteConflict", "WriteConflict error: this operation conflicted with another operation",
    "TransientTransactionError",
)  # fmt: skip
MAX_TIME_EXPIRED = command_error(50, "MaxTimeMSExpired", "operation exceeded time limit")
NOT_PRIMARY = command_error(10107, "NotWritablePrimary", "not primary", "RetryableWriteError")
FAILED_TO_SATISFY_READ_PREFERENCE = command_error(133, "FailedToSatisfyReadPreference", "Could not find host")
# A commit whose majority acknowledgement timed out: the transaction may or may not be committed.
UNKNOWN_COMMIT: dict[str, Any] = {
    "ok": 1.0,
    "writeConcernError": {
        "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out",
        "errInfo": {"wtimeout": True},
    },
}  # fmt: skip


@dataclass
class Rule:
    """Answer `command` (when `when` holds for its document) with `reply`, `times` times (None: always), after
    `delay` seconds (a server busy until the client's time ran out)."""

    command: str
    reply: dict[str, Any]
    when: Predicate | None = None
    times: int | None = 1
    hits: int = 0
    delay: float = 0.0

    def matches(self, name: str, document: dict[str, Any]) -> bool:
        """Whether this rule answers this command now."""
        if name != self.command or (self.times is not None and self.hits >= self.times):
            return False
        return self.when is None or self.when(document)


@dataclass
class FaultProxy:
    """The proxy: `port` to give the driver, rules to apply, and the commands it saw."""

    upstream_port: int
    replica_set: str | None = None
    mongos: bool = False
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def uri(self) -> str:
        """The URI to give the driver."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def fail(
        self,
        command: str,
        reply: dict[str, Any],
        *,
        when: Predicate | None = None,
        times: int | None = 1,
        delay: float = 0.0,
    ) -> Rule:
        """Answer the next `times` matching `command`s with `reply` (after `delay` seconds)."""
        rule = Rule(command, reply, when, times, delay=delay)
        self.rules.append(rule)
        return rule

    async def start(self) -> FaultProxy:
        """Listen on a free port of the loopback."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        try:
            while True:
                message = await _read_message(client_reader)
                if message is None:
                    break
                request_id, op_code, body = message
                name, document = _command_of(op_code, body)
                self.seen.append(name)
                rule = next((rule for rule in self.rules if rule.matches(name, document)), None)
                if rule is not None:
                    rule.hits += 1
                    await asyncio.sleep(rule.delay)
                    client_writer.write(_reply(op_code, request_id, rule.reply))
                    await client_writer.drain()
                    continue
                server_writer.write(_HEADER.pack(16 + len(body), request_id, 0, op_code) + body)
                await server_writer.drain()
                answer = await _read_message(server_reader)
                if answer is None:
                    break
                _, answer_op, answer_body = answer
                if self.replica_set and name in ("hello", "ismaster", "isMaster"):
                    answer_body = self._as_replica_set_member(answer_op, answer_body)
                if self.mongos and name in ("hello", "ismaster", "isMaster"):
                    answer_body = self._as_mongos(answer_op, answer_body)
                client_writer.write(_HEADER.pack(16 + len(answer_body), 0, request_id, answer_op) + answer_body)
                await client_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def _as_mongos(self, op_code: int, body: bytes) -> bytes:
        document = _reply_document(op_code, body)
        document["msg"] = "isdbgrid"
        document.pop("setName", None)
        return _encode_reply(op_code, document)

    def _as_replica_set_member(self, op_code: int, body: bytes) -> bytes:
        document = _reply_document(op_code, body)
        host = f"127.0.0.1:{self.port}"
        document.update(
            setName=self.replica_set, setVersion=1, hosts=[host], me=host, primary=host,
            isWritablePrimary=True, ismaster=True, secondary=False, logicalSessionTimeoutMinutes=30,
        )  # fmt: skip
        document.setdefault("maxWireVersion", 17)
        return _encode_reply(op_code, document)


async def _read_message(reader: asyncio.StreamReader) -> tuple[int, int, bytes] | None:
    try:
        header = await reader.readexactly(16)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length, request_id, _response_to, op_code = _HEADER.unpack(header)
    body = await reader.readexactly(length - 16)
    return request_id, op_code, body


def _command_of(op_code: int, body: bytes) -> tuple[str, dict[str, Any]]:
    """The command's name and document (the section-0 body of OP_MSG, the query of OP_QUERY)."""
    if op_code == OP_MSG:
        # flagBits, then sections; section kind 0 carries the command document.
        offset = 4
        while offset < len(body):
            kind = body[offset]
            offset += 1
            size = struct.unpack_from("<i", body, offset)[0]
            if kind == 0:
                document = bson.decode(body[offset : offset + size])
                return (next(iter(document), ""), document)
            offset += size
        return ("", {})
    if op_code == OP_QUERY:
        offset = 4
        offset = body.index(b"\x00", offset) + 1 + 8  # collection name, numberToSkip, numberToReturn
        size = struct.unpack_from("<i", body, offset)[0]
        document = bson.decode(body[offset : offset + size])
        if "$query" in document:
            document = document["$query"]
        return (next(iter(document), ""), document)
    return ("", {})


def _reply_document(op_code: int, body: bytes) -> dict[str, Any]:
    if op_code == OP_MSG:
        return dict(bson.decode(body[5:]))
    # OP_REPLY: responseFlags, cursorID, startingFrom, numberReturned, then the documents.
    return dict(bson.decode(body[20:]))


def _encode_reply(op_code: int, document: dict[str, Any]) -> bytes:
    encoded = bson.encode(document)
    if op_code == OP_MSG:
        return struct.pack("<I", 0) + b"\x00" + encoded
    return struct.pack("<iqii", 0, 0, 0, 1) + encoded


def _reply(request_op: int, request_id: int, document: dict[str, Any]) -> bytes:
    op_code = OP_MSG if request_op == OP_MSG else OP_REPLY
    body = _encode_reply(op_code, document)
    return _HEADER.pack(16 + len(body), 0, request_id, op_code) + body
