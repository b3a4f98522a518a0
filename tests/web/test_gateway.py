"""Requests through BlueKing's API gateway: the `X-Bkapi-JWT` names the caller, or the request is refused with 401
and 1100004 (CONTRACT-blueking 2), against a fake gateway that signs as the real one does (6.1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cmdb_asso.config import AuthSettings, ConfigError, GatewaySettings, Settings, load_settings
from cmdb_asso.errors import GatewayAuthFailed
from cmdb_asso.keys import GATEWAY
from cmdb_asso.service.gateway import GatewayVerifier
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import audit_records

Client = TestClient[Any, Any]
CREATE = "/api/v3/create/instassociation"
LINK = {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 11, "bk_asst_inst_id": 21}


def _key_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


GATEWAY_KEY, GATEWAY_PUBLIC = _key_pair()
WRONG_KEY, _WRONG_PUBLIC = _key_pair()


def claims(**overrides: Any) -> dict[str, Any]:
    """The gateway's claims (CONTRACT-blueking 2.1), with fields replaced, or removed where the value is None."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "APIGW", "nbf": now - 300, "exp": now + 1500,
        "app": {"version": 1, "app_code": "bk_sops", "verified": True, "valid_error_message": ""},
        "user": {"version": 1, "username": "alice", "verified": False, "valid_error_message": "not verified"},
    }  # fmt: skip
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def token(payload: dict[str, Any] | None = None, *, key: bytes = GATEWAY_KEY, algorithm: str = "RS512") -> str:
    """A token signed as the gateway signs it."""
    headers = {"kid": "bk-cmdb", "iat": int(time.time())}
    return jwt.encode(payload or claims(), key, algorithm=algorithm, headers=headers)


def hand_made(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token built by hand (algorithms PyJWT would not sign with: none, HS512 keyed with the public PEM)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    if header.get("alg") == "HS512":
        signature = hmac.new(GATEWAY_PUBLIC.encode(), signed.encode(), hashlib.sha512).digest()
    return f"{signed}.{part(signature)}"


def gateway_settings(settings: Settings, **gateway: Any) -> Settings:
    """The settings with the fake gateway's key (and any other gateway setting)."""
    section = GatewaySettings(public_key={"bk-cmdb": GATEWAY_PUBLIC}, **gateway)
    return replace(settings, auth=replace(settings.auth, gateway=section))


async def send(client: Client, jwt_token: str | None, *, headers: dict[str, str] | None = None,
               body: dict[str, Any] | None = None, path: str = CREATE) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """Send as the gateway forwards a request: its token, the supplier and the request ids."""
    sent = {"X-Bkcmdb-Supplier-Account": "0", "X-Bkapi-Request-Id": str(uuid.uuid4()), **(headers or {})}
    if jwt_token is not None:
        sent["X-Bkapi-JWT"] = jwt_token
    response = await client.post(path, json=body or LINK, headers=sent)
    return response.status, await response.json()


@pytest.fixture
async def gateway_client(make_client: MakeClient, settings: Settings) -> Client:
    """The service with the fake gateway's key."""
    return await make_client(app_settings=gateway_settings(settings))


async def test_a_valid_token_names_the_caller_whatever_the_headers_and_body_say(
    gateway_client: Client, mock_mongo: MongoConnection
) -> None:
    status, answer = await send(gateway_client, token(), headers={"X-Bkcmdb-User": "mallory"},
                                body={**LINK, "bk_username": "mallory", "bk_app_code": "evil"})  # fmt: skip

    assert status == 200
    assert list(answer) == ["result", "code", "message", "permission", "data"]  # the gateway path's spelling
    assert (answer["result"], answer["code"]) == (True, 0)
    (record,) = await audit_records(mock_mongo)
    assert (record["user"], record["code"]) == ("alice", "bk_sops")


async def test_bk_cmdbs_web_server_behind_the_gateway_keeps_the_native_spelling(gateway_client: Client) -> None:
    status, answer = await send(gateway_client, token(), headers={"X-Bkcmdb-Request-From-Web": "true"})

    assert (status, answer["bk_error_code"]) == (200, 0)


def _refused_tokens() -> dict[str, Callable[[], str]]:
    """Each refused token by name, signed when asked for (signing costs a key load): times are relative to then."""
    now = int(time.time())
    rs512 = {"alg": "RS512", "typ": "JWT", "kid": "bk-cmdb"}
    return {
        "signed with another key": lambda: token(key=WRONG_KEY),
        "expired past the leeway": lambda: token(claims(exp=now - 90)),  # 60 s of leeway, and margin for a slow run
        "not valid yet past the leeway": lambda: token(claims(nbf=now + 90)),
        "without exp": lambda: token(claims(exp=None)),
        "HS512 keyed with the public key": lambda: hand_made({**rs512, "alg": "HS512"}, claims()),
        "alg none": lambda: hand_made({**rs512, "alg": "none"}, claims()),
        "RS256, not configured": lambda: token(algorithm="RS256"),
        "garbage": lambda: "not.a.token",
        "no app": lambda: token(claims(app=None)),
        "app not verified": lambda: token(claims(app={"app_code": "bk_sops", "verified": False})),
        "app verified as a string": lambda: token(claims(app={"app_code": "bk_sops", "verified": "true"})),
        "empty app code": lambda: token(claims(app={"app_code": "", "verified": True})),
        "no user": lambda: token(claims(user=None)),
        "empty user": lambda: token(claims(user={"username": "", "verified": True})),
        "user with a newline": lambda: token(claims(user={"username": "alice\nadmin", "verified": True})),
        "payload of another signature": lambda: ".".join(
            [*token().split(".")[:2], token(claims(exp=now + 9)).split(".")[2]]
        ),
    }


@pytest.mark.parametrize("name", list(_refused_tokens()))
async def test_a_token_that_does_not_verify_answers_401_with_1100004_and_writes_nothing(
    gateway_client: Client, mock_mongo: MongoConnection, name: str
) -> None:
    status, answer = await send(gateway_client, _refused_tokens()[name]())

    assert status == 401, (name, answer)
    assert answer == {"result": False, "code": 1100004, "message": "call source authentication failed.",
                      "permission": None, "data": None}  # fmt: skip
    assert await audit_records(mock_mongo) == []


async def test_a_token_just_past_exp_inside_the_leeway_is_accepted(gateway_client: Client) -> None:
    status, answer = await send(gateway_client, token(claims(exp=int(time.time()) - 30)))

    assert (status, answer["code"]) == (200, 0)


async def test_verified_users_and_tokens_without_exp_as_configured(make_client: MakeClient, settings: Settings) -> None:
    strict = await make_client(app_settings=gateway_settings(settings, require_verified_user=True))
    lenient = await make_client(app_settings=gateway_settings(settings, require_exp=False))

    unverified, _ = await send(strict, token())
    verified, _ = await send(strict, token(claims(user={"username": "alice", "verified": True})))
    without_exp, answer = await send(lenient, token(claims(exp=None)), body={**LINK, "bk_asst_inst_id": 22})

    assert (unverified, verified, without_exp) == (401, 200, 200)
    assert answer["code"] == 0


async def test_without_a_token_the_legacy_headers_serve_unless_a_token_is_required(
    make_client: MakeClient, settings: Settings
) -> None:
    open_ = await make_client(app_settings=gateway_settings(settings))
    closed = await make_client(app_settings=gateway_settings(settings, jwt_required=True))
    trusting = await make_client(
        app_settings=gateway_settings(settings, jwt_required=True, trusted_networks=("127.0.0.0/8", "::1/128"))
    )

    legacy, legacy_answer = await send(open_, None, headers={"BK_User": "bob"})
    refused, refused_answer = await send(closed, None, headers={"BK_User": "bob"})
    esb = await closed.post("/api/c/compapi/v2/cc/add_instance_association/",
                            json={**LINK, "bk_app_code": "a", "bk_app_secret": "b", "bk_username": "bob"})  # fmt: skip
    trusted, _ = await send(trusting, None, headers={"BK_User": "bob"})
    with_token, _ = await send(closed, token())

    assert (legacy, legacy_answer["bk_error_code"]) == (200, 0)
    assert (refused, refused_answer["bk_error_code"]) == (401, 1100004)  # no token: bk-cmdb's native spelling
    assert (esb.status, (await esb.json())["code"]) == (401, 1100004)
    assert (trusted, with_token) == (200, 200)


async def test_the_esb_spelling_with_a_token_takes_its_caller_from_the_token(
    gateway_client: Client, mock_mongo: MongoConnection
) -> None:
    response = await gateway_client.post("/api/c/compapi/v2/cc/add_instance_association/", json=LINK,
                                         headers={"X-Bkapi-JWT": token()})  # fmt: skip

    assert ((await response.json())["code"], response.status) == (0, 200)
    assert [record["user"] for record in await audit_records(mock_mongo)] == ["alice"]


async def test_a_verified_token_is_verified_once_while_it_is_cached(gateway_client: Client) -> None:
    signed = token()
    for _ in range(3):
        assert (await send(gateway_client, signed))[0] == 200
    verifier = gateway_client.app[GATEWAY]

    assert verifier is not None
    assert (verifier.cache_misses, verifier.cache_hits) == (1, 2)


def test_the_key_is_taken_as_pem_or_as_bk_cmdbs_base64_of_pem_by_kid_from_a_file_or_the_environment(
    tmp_path: Any,
) -> None:
    encoded = base64.b64encode(GATEWAY_PUBLIC.encode()).decode()
    key_file = tmp_path / "gateway.pem"
    key_file.write_text(encoded)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"auth": {"gateway": {"public_key": {"bk-cmdb": GATEWAY_PUBLIC, "web": encoded}}}}))

    by_kid = load_settings(config, {}).auth.gateway.public_key
    from_env = load_settings(None, {"CMDB_ASSO_AUTH_GATEWAY_PUBLIC_KEY": encoded}).auth.gateway.public_key
    from_file = load_settings(None, {"CMDB_ASSO_AUTH_GATEWAY_PUBLIC_KEY_FILE": str(key_file)}).auth.gateway.public_key

    assert by_kid == {"bk-cmdb": GATEWAY_PUBLIC, "web": GATEWAY_PUBLIC}
    assert from_env == from_file == {"": GATEWAY_PUBLIC}
    with pytest.raises(ConfigError, match=r"auth\.gateway\.public_key"):
        load_settings(None, {"CMDB_ASSO_AUTH_GATEWAY_PUBLIC_KEY": "bm90IGEga2V5"})
    with pytest.raises(ConfigError, match=r"auth\.gateway\.jwt_required"):
        load_settings(None, {"CMDB_ASSO_AUTH_GATEWAY_JWT_REQUIRED": "true"})
    assert AuthSettings().gateway.public_key == {}


def test_a_token_longer_than_8_kib_is_refused_before_it_is_decoded() -> None:
    # aiohttp's own header limit (http.max_header_bytes) stops such a header first unless it is raised.
    verifier = GatewayVerifier({"bk-cmdb": GATEWAY_PUBLIC})

    with pytest.raises(GatewayAuthFailed):
        verifier.identity(token(claims(pad="x" * 9 * 1024)))
    assert verifier.cache_misses == 0


async def test_without_a_token_the_legacy_esb_headers_name_the_user_and_the_app(
    client: Client, mock_mongo: MongoConnection
) -> None:
    response = await client.post(CREATE, json=LINK, headers={"BK_User": "bob", "Bk-App-Code": "bk_sops"})

    assert (await response.json())["bk_error_code"] == 0
    (record,) = await audit_records(mock_mongo)
    assert (record["user"], record["code"]) == ("bob", "bk_sops")
