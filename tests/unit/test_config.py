"""Settings: YAML, environment overrides, and a clear error naming a bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmdb_asso.__main__ import main
from cmdb_asso.config import ConfigError, load_settings


def test_defaults_apply_without_a_file_or_environment() -> None:
    settings = load_settings(None, environ={})

    assert settings.mongodb.uri == "embedded"
    assert settings.mongodb.database == "cmdb"
    assert settings.mongodb.driver == "pymongo"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert (settings.language, settings.supplier_account, settings.data_dir) == ("en", "0", "./var")


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("http:\n  port: 9000\nmongodb:\n  driver: motor\nlanguage: zh\n")

    settings = load_settings(config, environ={"CMDB_ASSO_HTTP_PORT": "9100", "CMDB_ASSO_LOG_FORMAT": "json"})

    assert settings.http.port == 9100
    assert settings.mongodb.driver == "motor"
    assert settings.language == "zh"
    assert settings.log.format == "json"


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("supplier_account: tenant\n")

    assert load_settings(None, environ={"CMDB_ASSO_CONFIG": str(config)}).supplier_account == "tenant"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CMDB_ASSO_HTTP_PORT": "eighty"}, "http.port"),
        ({"CMDB_ASSO_MONGODB_DRIVER": "odbc"}, "mongodb.driver"),
        ({"CMDB_ASSO_LANGUAGE": "fr"}, "language"),
        ({"CMDB_ASSO_HTTP_PORT": "70000"}, "http.port"),
    ],
)
def test_a_bad_setting_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f"setting '{named}'"):
        load_settings(None, environ=environ)


def test_the_example_config_holds_every_default() -> None:
    example = Path(__file__).parents[2] / "config.example.yaml"

    assert load_settings(example, environ={}) == load_settings(None, environ={})


def test_a_bad_setting_stops_the_command_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CMDB_ASSO_MONGODB_DRIVER", "odbc")

    assert main(["serve"]) == 2
    assert "mongodb.driver" in capsys.readouterr().err
