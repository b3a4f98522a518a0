"""Who a request from BlueKing's API gateway comes from: its `X-Bkapi-JWT`, verified against the gateway's public
keys (CONTRACT-blueking 2), with a bounded cache of the tokens verified."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from cachetools import TLRUCache

from cmdb_asso.errors import GatewayAuthFailed
from cmdb_asso.inputs import is_plain_text

log = structlog.get_logger(__name__)

# A token longer than this is refused before it is decoded (the gateway's are well under 2 KiB).
MAX_TOKEN_BYTES = 8 * 1024
# How long a verified token is trusted without being verified again (never past its `exp`).
CACHE_SECONDS = 300.0
# A user name as long as a header's user may be (README "Strict input").
MAX_USER_LENGTH = 256


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    """The verified claims that name the caller."""

    user: str
    app_code: str
    # Unix time after which the token is no longer trusted.
    expires: float


class GatewayVerifier:
    """Verifies gateway tokens: RS512 (or the configured RSA algorithms) only, the algorithm never taken from the
    token; `exp` required unless configured otherwise, `nbf`, the issuer where configured; the app verified, the
    user named (and verified, where required)."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        algorithms: tuple[str, ...] = ("RS512",),
        issuer: str = "",
        leeway_seconds: float = 60.0,
        require_exp: bool = True,
        require_verified_user: bool = False,
        cache_entries: int = 10000,
        jwt_required: bool = False,
        trusted_networks: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = dict(keys)
        self.jwt_required = jwt_required
        self.trusted = [ipaddress.ip_network(network, strict=False) for network in trusted_networks]
        self.algorithms = list(algorithms)
        self.issuer = issuer
        self.leeway = leeway_seconds
        self.require_exp = require_exp
        self.require_verified_user = require_verified_user
        self.clock = clock
        self._verified: TLRUCache[str, GatewayIdentity] = TLRUCache(
            cache_entries, ttu=lambda _key, identity, now: min(identity.expires, now + CACHE_SECONDS), timer=clock
        )
        self.cache_hits = 0
        self.cache_misses = 0

    def requires_token(self, remote: str | None) -> bool:
        """Whether a request from `remote` without a token is refused (`jwt_required`, but from a trusted network)."""
        if not self.jwt_required:
            return False
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return True
        return not any(address in network for network in self.trusted)

    def identity(self, token: str) -> GatewayIdentity:
        """The caller a token names; GatewayAuthFailed (401, 1100004) for any token that does not verify."""
        if len(token) > MAX_TOKEN_BYTES:
            raise _refused("token too long")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        cached = self._verified.get(digest)
        if cached is not None:
            self.cache_hits += 1
            return cached
        self.cache_misses += 1
        identity = self._verify(token)
        self._verified[digest] = identity
        return identity

    def _verify(self, token: str) -> GatewayIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused(f"not a token: {exc}") from None
        key = self._key_for(header.get("kid"))
        options: dict[str, Any] = {"require": ["exp"] if self.require_exp else [], "verify_iss": bool(self.issuer)}
        try:
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, leeway=self.leeway, issuer=self.issuer or None,
                options=options,  # type: ignore[arg-type]
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise _refused(f"{type(exc).__name__}: {exc}") from None
        app, user = claims.get("app"), claims.get("user")
        if not isinstance(app, dict):
            raise _refused("app info is not set")
        if app.get("verified") is not True:
            raise _refused("app is not verified")
        app_code = app.get("app_code")
        if not isinstance(app_code, str) or not app_code or not is_plain_text(app_code, max_length=128):
            raise _refused("app code is not set")
        if not isinstance(user, dict):
            raise _refused("user info is not set")
        username = user.get("username")
        if not isinstance(username, str) or not username or not is_plain_text(username, max_length=MAX_USER_LENGTH):
            raise _refused("user is not set")
        if self.require_verified_user and user.get("verified") is not True:
            raise _refused("user is not verified")
        exp = claims.get("exp")
        expires = float(exp) + self.leeway if isinstance(exp, int | float) else float("inf")
        return GatewayIdentity(username, app_code, expires)

    def _key_for(self, kid: Any) -> str:
        """The key of the token's `kid`; the one key when there is one and the kid names none."""
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        if len(self.keys) == 1:
            return next(iter(self.keys.values()))
        if "" in self.keys:
            return self.keys[""]
        raise _refused(f"no key for kid {kid!r}")


def _refused(reason: str) -> GatewayAuthFailed:
    # The reason goes to the log (never the token); the caller gets bk-cmdb's catalogue text.
    log.warning("gateway_token_refused", reason=reason)
    return GatewayAuthFailed()
