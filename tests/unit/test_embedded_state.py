"""The embedded server's state file is replaced whole: a process looking for a data directory's server (another
service process, a one-off command, a test) reads the old state or the new one, never a half-written file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cmdb_asso.storage.embedded import STATE_FILE, EmbeddedMongo


def test_a_new_state_replaces_the_file_instead_of_rewriting_it_in_place(tmp_path: Path) -> None:
    embedded = EmbeddedMongo(tmp_path)
    state_path = tmp_path / STATE_FILE
    state_path.write_text(json.dumps({"pid": 1, "port": 1, "parent": 1}), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    with state_path.open(encoding="utf-8") as held:  # a reader that opened the old file before the write
        try:
            embedded._process = process
            embedded.port = 4321
            embedded._started()
        finally:
            process.wait()
        seen = held.read()

    assert json.loads(seen) == {"pid": 1, "port": 1, "parent": 1}  # untouched, not truncated under it
    assert json.loads(state_path.read_text(encoding="utf-8"))["port"] == 4321
    assert sorted(path.name for path in tmp_path.iterdir()) == [STATE_FILE]  # nothing left aside
