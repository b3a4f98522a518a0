"""The examples of the README and docs/api.md, run top to bottom against a service started as `make run` starts
it (an empty database seeded with the demo data): each answers what the page shows."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from cmdb_asso.storage.embedded import free_port
from tests.helpers import wait_ready

pytestmark = pytest.mark.wire
ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "api.md"]
SHOWN_URL = "http://127.0.0.1:8080"


@dataclass
class Example:
    """One command of a page, and what the page says it answers (empty: nothing said)."""

    page: str
    command: str
    shown: str


def _examples(page: Path) -> list[Example]:
    examples: list[Example] = []
    for block in re.findall(r"```(sh|python|console)\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL):
        language, text = block
        if language in ("python", "console"):
            examples.append(Example(page.name, language, text))
            continue
        command: list[str] = []
        for line in text.splitlines():
            if command and (command[-1].endswith("\\") or command_open(" ".join(command))):
                command.append(line)
                continue
            if command:
                examples.append(_example(page.name, command))
                command = []
            said = line.lstrip("#").strip()
            answers = said.startswith(("{", "[", '"data"', "data:", "(")) or line.startswith("#  ")
            if line.startswith("#") and answers and examples and examples[-1].page == page.name:
                examples[-1].shown += " " + said
            elif line.startswith(("curl ", "H=")):
                command = [line]
        if command:
            examples.append(_example(page.name, command))
    return examples


def command_open(text: str) -> bool:
    """Whether a single-quoted argument is still open at the end of `text`."""
    return text.split("#")[0].count("'") % 2 == 1 if "#" in text else text.count("'") % 2 == 1


def _example(page: str, lines: list[str]) -> Example:
    text = "\n".join(lines)
    inline = re.search(r"'?\s+# (.*)$", lines[-1])
    shown = ""
    if inline and lines[-1].count("'") % 2 == 0:
        shown = inline.group(1)
        text = (
            text[: len(text) - len(lines[-1])] + lines[-1][: inline.start() + (1 if inline.group(0)[0] == "'" else 0)]
        )
    return Example(page, text, shown)


def _pattern(shown: str) -> str | None:
    """The answer the page shows, as a pattern over the answer with all spaces removed; None when it shows none."""
    shown = re.sub(r"\(.*?\)$", "", shown.strip()).strip()
    if shown.startswith("data: "):
        shown = '"data":' + shown.removeprefix("data: ")
    if not shown.startswith(("{", '"data"')):
        return None
    compact = re.sub(r"\s+", "", shown)
    return ".*?".join(re.escape(part) for part in compact.split("..."))


async def _service(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": str(tmp_path / "var")}
    with (tmp_path / "service.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty",
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def _session(text: str, base: str, where: Path) -> str:
    """A terminal session: `$ cat FILE` shows a file (written first when it does not exist yet), `$ .venv/bin/...`
    runs a command; each shown output must be what it prints, timings aside. Mismatches, or ""."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    wrong = []
    for command, shown in steps:
        words = command.split()
        if words[0] == "cat":
            path = where / words[1]
            if not path.exists():
                path.write_text("\n".join(shown) + "\n", encoding="utf-8")
                continue
            said = path.read_text(encoding="utf-8").splitlines()
        else:
            argv = [sys.executable, "-m", "cmdb_asso", *words[1:], "--url", base]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=where)
            said = (done.stdout + done.stderr).splitlines()
        timing = re.compile(r", [0-9.]+ s, [0-9]+ rows/s$")
        kept = [timing.sub("", line) for line in said if not line.startswith("loaded ")]
        expected = [timing.sub("", line) for line in shown if not line.startswith("loaded ")]
        if kept != expected:
            wrong.append(f"{command}: {kept}")
    return "FAILED: " + "; ".join(wrong) if wrong else ""


def _run(example: Example, base: str, tmp_path: Path) -> str:
    if example.command == "console":
        return _session(example.shown, base, tmp_path)
    if example.command == "python":
        script = tmp_path / "example.py"
        script.write_text(example.shown.replace(SHOWN_URL, base), encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False,
                              cwd=tmp_path)  # fmt: skip
        return done.stdout if done.returncode == 0 else f"FAILED: {done.stderr[-1500:]}"
    command = example.command.replace(SHOWN_URL, base)
    prelude = f"H='-H X-Bkcmdb-User:admin -H Content-Type:application/json'; B={base}\n"
    done = subprocess.run(["bash", "-c", prelude + command], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout if done.returncode == 0 else f"FAILED: {done.stderr[-1500:]}"


async def test_every_example_answers_what_its_page_shows_when_run_in_order(tmp_path: Path) -> None:
    examples = [example for page in PAGES for example in _examples(page)]
    process, base = await _service(tmp_path)
    mismatches = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, seconds=60)
        for example in examples:
            if "<" in example.command or example.command.startswith("H="):
                continue  # a placeholder the reader fills in; the headers every example uses
            answer = await asyncio.to_thread(_run, example, base, tmp_path)
            pattern = _pattern(example.shown) if example.command not in ("python", "console") else None
            failed = answer.startswith("FAILED: ")
            if failed or (pattern is not None and not re.search(pattern, re.sub(r"\s+", "", answer))):
                mismatches.append((example.page, example.command[:120], example.shown[:200], answer[:300]))
    finally:
        process.terminate()
        await process.wait()

    assert len(examples) > 15
    assert mismatches == [], "\n\n".join(
        f"{page}: {command}\n  shows: {shown}\n  got:   {got}" for page, command, shown, got in mismatches
    )
