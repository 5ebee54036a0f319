"""Bearer-token authentication and app-role authorization for every DICOMweb call.

Modes (``DICOM_AUTH_MODE``):

``entra`` (the default)
    Entra ID access tokens of the configured tenant.  Signature keys come from
    the tenant's JWKS (``{authority}/{tenant}/discovery/v2.0/keys``), cached and
    refreshed when a token names an unknown ``kid``; the issuer must be the
    tenant's v2 (``{authority}/{tenant}/v2.0``) or v1
    (``https://sts.windows.net/{tenant}/``) issuer; the audience one of
    ``DICOM_AUTH_AUDIENCE`` (the API's app ID URI and its client ID).
``local``
    Tokens signed by a key generated under ``DICOM_AUTH_LOCAL_KEY_DIR``
    (``python -m scripts.token`` mints them); same checks otherwise.
``none``
    No authentication: an explicit opt-out for local runs, logged as a warning.

Checks, in order: ``Authorization: Bearer <jwt>`` present and well formed;
algorithm RS256, RS384 or RS512 (``none`` and HMAC are refused before any key
is used); a known signing key; a valid signature; ``exp`` and ``nbf`` with
:data:`CLOCK_SKEW_SECONDS` leeway; issuer; audience.  Failures are 401 with
``WWW-Authenticate: Bearer``.  Then the ``roles`` claim must grant the action
(Owner: read, write, delete; Reader: read), else 403 — as ``StoreHandler``
checks in the Azure DICOM service.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import jwt

from .errors import Forbidden, Unauthorized
from .settings import Settings

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512")
CLOCK_SKEW_SECONDS = 60
#: An unknown ``kid`` triggers a JWKS refresh at most this often.
_REFRESH_INTERVAL_SECONDS = 60
LOCAL_ISSUER = "urn:dicomserver:local"


class AuthMode(Enum):
    """``DICOM_AUTH_MODE``."""

    ENTRA = "entra"
    LOCAL = "local"
    NONE = "none"


class Action(Enum):
    """What a request does; each app role grants a set of actions."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"


def action_for_method(method: str) -> Action:
    """GET/HEAD read, DELETE deletes, everything else writes."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return Action.READ
    if method == "DELETE":
        return Action.DELETE
    return Action.WRITE


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as far as the service needs to know."""

    subject: str
    roles: frozenset[str]


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None, action: Action) -> Principal:
        """Return the caller, or raise Unauthorized (401) / Forbidden (403)."""


class NoAuthentication:
    """``DICOM_AUTH_MODE=none``: every call is allowed."""

    def authenticate(self, authorization: str | None, action: Action) -> Principal:
        return Principal("anonymous", frozenset())


class KeySource(Protocol):
    def key(self, kid: str) -> Any:
        """The verification key for ``kid`` (raises Unauthorized when unknown)."""


class JwksUrlKeys:
    """Keys from a JWKS URL: cached, refreshed on an unknown ``kid`` (at most once a minute)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self._timeout = timeout
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        import httpx

        try:
            document = httpx.get(self.url, timeout=self._timeout).json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch failed url=%s: %s", self.url, exc)
            return
        self._keys = _keys_from_jwks(document)
        self._fetched = time.monotonic()

    def key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched > _REFRESH_INTERVAL_SECONDS:
                self._refresh()
            if kid not in self._keys:
                raise Unauthorized(f"The token is signed with an unknown key '{kid}'.")
            return self._keys[kid]


class StaticKeys:
    """Keys from a JWKS document (local mode reads the file the token tool writes)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._keys = _keys_from_jwks(document)

    def key(self, kid: str) -> Any:
        if kid not in self._keys:
            raise Unauthorized(f"The token is signed with an unknown key '{kid}'.")
        return self._keys[kid]


def _keys_from_jwks(document: dict[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for entry in document.get("keys", []):
        if entry.get("kty") != "RSA" or "kid" not in entry:
            continue
        keys[entry["kid"]] = jwt.PyJWK.from_dict(entry).key
    return keys


class JwtAuthenticator:
    """Validates RS256-family JWTs and maps app roles to actions."""

    def __init__(
        self,
        *,
        keys: KeySource,
        issuers: Iterable[str],
        audiences: Iterable[str],
        owner_roles: Iterable[str],
        reader_roles: Iterable[str],
    ) -> None:
        self._keys = keys
        self._issuers = frozenset(issuers)
        self._audiences = [a for a in audiences if a]
        self._owner = frozenset(owner_roles)
        self._reader = frozenset(reader_roles)
        if not self._audiences:
            raise ValueError("DICOM_AUTH_AUDIENCE must name at least one audience")

    def authenticate(self, authorization: str | None, action: Action) -> Principal:
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Unauthorized(f"The token algorithm '{algorithm}' is not accepted; use RS256.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("The token header has no key id (kid).")
        key = self._keys.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audiences,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The token is not valid yet (nbf).") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The token is not meant for this service (audience).") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("The token signature is invalid.") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The token is invalid: {exc}.") from None
        if claims.get("iss") not in self._issuers:
            raise Unauthorized(f"The token issuer '{claims.get('iss')}' is not trusted.")
        roles = claims.get("roles") or []
        if not isinstance(roles, list):
            roles = [roles]
        principal = Principal(str(claims.get("oid") or claims.get("sub") or "unknown"), frozenset(map(str, roles)))
        self.authorize(principal, action)
        return principal

    def authorize(self, principal: Principal, action: Action) -> None:
        """Owner may do everything, Reader may read (raises Forbidden)."""
        if principal.roles & self._owner:
            return
        if action is Action.READ and principal.roles & self._reader:
            return
        needed = "DICOM Data Owner" if action is not Action.READ else "DICOM Data Reader or Owner"
        raise Forbidden(f"The caller lacks the app role for {action.value}: {needed} is required.")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("The request has no Authorization header; send an Entra ID bearer token.")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def local_jwks_path(settings: Settings) -> Path:
    return Path(settings.auth_local_key_dir) / "jwks.json"


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator for ``settings.auth_mode``.

    Raises
    ------
    ValueError
        When the mode's settings are missing (tenant, audience, local keys).
    """
    mode = AuthMode(settings.auth_mode)
    if mode is AuthMode.NONE:
        log.warning("DICOM_AUTH_MODE=none: DICOMweb calls are NOT authenticated (local use only)")
        return NoAuthentication()
    audiences = settings.auth_audiences
    if mode is AuthMode.LOCAL:
        path = local_jwks_path(settings)
        if not path.exists():
            raise ValueError(f"{path} is missing: run `make token` (python -m scripts.token) once to create the key")
        return JwtAuthenticator(
            keys=StaticKeys(json.loads(path.read_text())),
            issuers=[LOCAL_ISSUER],
            audiences=audiences,
            owner_roles=settings.auth_owner_roles,
            reader_roles=settings.auth_reader_roles,
        )
    if not settings.auth_tenant_id:
        raise ValueError("DICOM_AUTH_TENANT_ID must be set when DICOM_AUTH_MODE=entra")
    authority = settings.auth_authority.rstrip("/")
    tenant = settings.auth_tenant_id
    return JwtAuthenticator(
        keys=JwksUrlKeys(f"{authority}/{tenant}/discovery/v2.0/keys"),
        issuers=[f"{authority}/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"],
        audiences=audiences,
        owner_roles=settings.auth_owner_roles,
        reader_roles=settings.auth_reader_roles,
    )
