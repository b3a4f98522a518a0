"""The command line explains itself: every command has a description, every option its help, and a number that
makes no sense is refused before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cmdb_asso.__main__ import _parser, main
from cmdb_asso.client import AssociationClient, ServiceUnavailableError

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_command_says_what_it_does_and_every_option_has_help() -> None:
    silent = [
        f"{name} {' '.join(action.option_strings) or action.dest}"
        for name, command in _commands().items()
        for action in command._actions
        if action.help is None and not isinstance(action, argparse._HelpAction)
    ]

    assert silent == []
    assert [name for name, command in _commands().items() if not command.description] == []


def test_the_readme_command_table_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert [name for name in _commands() if f"| `{name}" not in readme] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["check-links", "--grace-seconds", "-5"],
        ["check-links", "--since-hours", "-1"],
        ["load", "x.csv", "--batch-size", "0"],
        ["load", "x.csv", "--concurrency", "-2"],
        ["serve", "--workers", "0"],
    ],
)
def test_a_number_that_makes_no_sense_is_refused_with_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)

    assert stopped.value.code == 2
    assert "must be at least" in capsys.readouterr().err


def test_a_mongodb_that_does_not_answer_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CMDB_ASSO_MONGODB_URI", "mongodb://nobody:secret@127.0.0.1:1/")
    monkeypatch.setenv("CMDB_ASSO_MONGODB_SERVER_SELECTION_TIMEOUT_MS", "200")

    code = main(["init-db"])

    said = capsys.readouterr().err
    assert code == 1
    assert "is MongoDB at 127.0.0.1:1/ running and reachable?" in said
    assert "secret" not in said  # the URI is shown without its credentials


async def test_the_client_against_a_dead_url_names_it() -> None:
    async with AssociationClient("http://127.0.0.1:1", retries=1, backoff=0.01) as client:
        with pytest.raises(ServiceUnavailableError, match=r"no answer from the service at http://127\.0\.0\.1:1 "):
            await client.count("host", {})
