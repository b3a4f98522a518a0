"""Settings: YAML, environment overrides, and a clear error naming a bad setting."""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmdb_asso.__main__ import main
from cmdb_asso.config import ConfigError, load_settings, setting_names


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


def test_apps_and_policy_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "auth:\n  authorizer: static\n  policy:\n    alice: {edit: [host], view: ['*']}\n"
        "  apps:\n    - {code: app1, secret_hash: 'pbkdf2_sha256$1$YQ$YQ'}\n"
        "http:\n  cors_origins: [https://a.example]\n"
    )

    from_file = load_settings(config, environ={})
    from_env = load_settings(
        None,
        environ={
            "CMDB_ASSO_AUTH_APPS": "app1:pbkdf2_sha256$1$YQ$YQ,app2:pbkdf2_sha256$1$Yg$Yg",
            "CMDB_ASSO_AUTH_POLICY": '{"bob": {"view": ["host"]}}',
            "CMDB_ASSO_HTTP_CORS_ORIGINS": "https://a.example, https://b.example",
        },
    )

    assert from_file.auth.authorizer == "static"
    assert from_file.auth.policy["alice"].edit == ("host",)
    assert [app.code for app in from_file.auth.apps] == ["app1"]
    assert from_file.http.cors_origins == ("https://a.example",)
    assert [app.code for app in from_env.auth.apps] == ["app1", "app2"]
    assert from_env.auth.policy["bob"].view == ("host",)
    assert from_env.http.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CMDB_ASSO_AUTH_APPS": "app1:plaintext-secret"}, "auth.apps"),
        ({"CMDB_ASSO_AUTH_APPS": "no-colon"}, "auth.apps"),
        ({"CMDB_ASSO_AUTH_POLICY": "{not json"}, "auth.policy"),
        ({"CMDB_ASSO_AUTH_POLICY": '{"bob": {"delete": ["host"]}}'}, "auth.policy"),
        ({"CMDB_ASSO_AUTH_AUTHORIZER": "iam"}, "auth.authorizer"),
    ],
)
def test_a_bad_auth_setting_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f"setting '{named}'"):
        load_settings(None, environ=environ)


def test_hash_secret_prints_a_hash_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from cmdb_asso.credentials import verify_secret

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))

    assert main(["hash-secret", "--iterations", "1000"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert verify_secret("s3cret", printed)
    assert "s3cret" not in printed


def test_recovery_must_wait_longer_than_any_request_and_its_undo_can_last() -> None:
    for too_short in ("5", "11", "15"):  # the deadline is 10 s, and an undo may take 5 s more
        with pytest.raises(ConfigError, match="recovery_grace_seconds"):
            load_settings(environ={"CMDB_ASSO_MONGODB_RECOVERY_GRACE_SECONDS": too_short})
    settings = load_settings(environ={"CMDB_ASSO_MONGODB_RECOVERY_GRACE_SECONDS": "16"})
    assert settings.mongodb.recovery_grace_seconds == 16


@pytest.mark.parametrize(
    ("file", "environ", "message"),
    [
        ("mongodb:\n  urii: mongodb://prod\n", {},
         "setting 'mongodb.urii' is not a setting; did you mean 'mongodb.uri'?"),
        ("http:\n  prot: 9000\n", {}, "setting 'http.prot' is not a setting; did you mean 'http.port'?"),
        ("langauge: zh\n", {}, "setting 'langauge' is not a setting; did you mean 'language'?"),
        ("mongdb:\n  uri: x\n", {}, "setting 'mongdb' is not a setting; did you mean 'mongodb'?"),
        ("", {"CMDB_ASSO_HTTP_PROT": "9000"},
         "environment variable 'CMDB_ASSO_HTTP_PROT' is not a setting; did you mean 'CMDB_ASSO_HTTP_PORT'?"),
        ("", {"CMDB_ASSO_MONGO_URI": "x"},
         "environment variable 'CMDB_ASSO_MONGO_URI' is not a setting; did you mean 'CMDB_ASSO_MONGODB_URI'?"),
    ],
)  # fmt: skip
def test_an_unknown_setting_stops_start_up_naming_it_and_the_closest_known_one(
    tmp_path: Path, file: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(file, encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ)

    assert str(raised.value) == message


def test_the_example_file_names_every_setting_and_nothing_else() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    loaded = yaml.safe_load(example.read_text(encoding="utf-8"))

    settings = load_settings(example, {})  # an unknown key would stop it

    def flattened(tree: dict[str, Any], prefix: str = "") -> set[str]:
        names: set[str] = set()
        for key, value in tree.items():
            is_section = isinstance(value, dict) and f"{prefix}{key}" not in setting_names()
            names |= flattened(value, f"{prefix}{key}.") if is_section else {f"{prefix}{key}"}
        return names

    def declared(value: Any, prefix: str = "") -> set[str]:
        names: set[str] = set()
        for key in value.__dataclass_fields__:
            member = getattr(value, key)
            names |= declared(member, f"{prefix}{key}.") if is_dataclass(member) else {f"{prefix}{key}"}
        return names

    assert flattened(loaded) == declared(settings)


@pytest.mark.parametrize("command", [["init-db"], ["serve"], ["serve", "--workers", "2"], ["check-links"]])
def test_a_data_directory_the_embedded_server_cannot_use_is_named_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CMDB_ASSO_DATA_DIR", str(blocker / "var"))

    code = main(command)

    said = capsys.readouterr().err
    assert code == 2
    assert f"cannot keep its files in {blocker / 'var'}: Not a directory" in said
    assert "CMDB_ASSO_DATA_DIR" in said
    assert "Traceback" not in said


def test_the_readme_table_names_every_setting_with_its_variable_and_default() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    missing = []
    for name, path in setting_names().items():
        variable = f"CMDB_ASSO_{'_'.join(path).upper()}"
        if name not in rows or f"`{variable}`" not in rows[name]:
            missing.append(name)

    assert missing == []
