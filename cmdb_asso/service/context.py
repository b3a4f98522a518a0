"""Who is calling: the identity every service operation acts for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request: user, supplier account, ESB app code and request id."""

    user: str
    supplier_account: str
    app_code: str = ""
    request_id: str = ""
