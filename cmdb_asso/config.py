"""Settings: frozen dataclasses loaded from YAML and the environment, validated by a schema."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

ENV_PREFIX = "CMDB_ASSO_"
CONFIG_ENV = "CMDB_ASSO_CONFIG"


class ConfigError(Exception):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True)
class MongoSettings:
    """Where and how to reach MongoDB."""

    uri: str = "embedded"
    database: str = "cmdb"
    driver: str = "pymongo"
    transactions: str = "auto"
    server_selection_timeout_ms: int = 5000
    socket_timeout_ms: int = 10000
    id_block_size: int = 100
    definition_cache_seconds: float = 5.0


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    shutdown_timeout: float = 10.0


@dataclass(frozen=True)
class LimitSettings:
    """Request size limits."""

    create_many_max: int = 200


@dataclass(frozen=True)
class LogSettings:
    """Log format and level."""

    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    """Every setting of the service."""

    mongodb: MongoSettings = field(default_factory=MongoSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    log: LogSettings = field(default_factory=LogSettings)
    language: str = "en"
    supplier_account: str = "0"
    data_dir: str = "./var"


class _MongoSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    uri = fields.String(validate=validate.Length(min=1))
    database = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,63}$"))
    driver = fields.String(validate=validate.OneOf(["pymongo", "motor"]))
    transactions = fields.String(validate=validate.OneOf(["auto", "always", "never"]))
    server_selection_timeout_ms = fields.Integer(strict=False, validate=validate.Range(min=1))
    socket_timeout_ms = fields.Integer(strict=False, validate=validate.Range(min=1))
    id_block_size = fields.Integer(strict=False, validate=validate.Range(min=1, max=100000))
    definition_cache_seconds = fields.Float(validate=validate.Range(min=0))


class _HttpSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    host = fields.String(validate=validate.Length(min=1))
    port = fields.Integer(strict=False, validate=validate.Range(min=0, max=65535))
    max_body_bytes = fields.Integer(strict=False, validate=validate.Range(min=1024))
    shutdown_timeout = fields.Float(validate=validate.Range(min=0))


class _LimitSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    create_many_max = fields.Integer(strict=False, validate=validate.Range(min=1, max=10000))


class _LogSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    format = fields.String(validate=validate.OneOf(["auto", "json", "console"]))
    level = fields.String(validate=validate.OneOf(["debug", "info", "warning", "error"]))


class _SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    mongodb = fields.Nested(_MongoSchema)
    http = fields.Nested(_HttpSchema)
    limits = fields.Nested(_LimitSchema)
    log = fields.Nested(_LogSchema)
    language = fields.String(validate=validate.OneOf(["en", "zh"]))
    supplier_account = fields.String(validate=validate.Length(min=1, max=64))
    data_dir = fields.String(validate=validate.Length(min=1))


_SECTIONS: dict[str, Any] = {
    "mongodb": MongoSettings,
    "http": HttpSettings,
    "limits": LimitSettings,
    "log": LogSettings,
}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map CMDB_ASSO_<SECTION>_<KEY> and CMDB_ASSO_<KEY> variables onto the settings tree."""
    tree: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        for name in cls.__dataclass_fields__:
            value = environ.get(f"{ENV_PREFIX}{section}_{name}".upper())
            if value is not None:
                tree.setdefault(section, {})[name] = value
    for name in ("language", "supplier_account", "data_dir"):
        value = environ.get(f"{ENV_PREFIX}{name}".upper())
        if value is not None:
            tree[name] = value
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _first_error(messages: Mapping[str, Any], prefix: str = "") -> str:
    key, value = next(iter(messages.items()))
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
        return _first_error(value, f"{name}.")
    text = value[0] if isinstance(value, list) and value else value
    return f"setting '{name}': {text}"


def load_settings(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a YAML file (or $CMDB_ASSO_CONFIG) with environment overrides; raise ConfigError."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file '{path}': {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of settings")
        raw = loaded or {}
    for section in _SECTIONS:
        if section in raw and not isinstance(raw[section], Mapping):
            raise ConfigError(f"setting '{section}': must be a mapping")
    raw = _merge(raw, _env_overrides(environ))
    try:
        data: dict[str, Any] = _SettingsSchema().load(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc.normalized_messages())) from exc  # type: ignore[no-untyped-call]
    sections = {name: cls(**data.pop(name, {})) for name, cls in _SECTIONS.items()}
    return Settings(**sections, **data)
