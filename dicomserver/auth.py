"""Bearer-token authentication and app-role authorization for every DICOMweb call.

Modes (``DICOM_AUTH_MODE``):

``entra`` (the default)
    Entra ID access tokens of the configured tenant.  Signature keys come from
    the tenant's JWKS (``{authority}/{tenant}/discovery/v2.0/keys``), cached by
    :class:`JwksUrlKeys`; the issuer must be the tenant's v2
    (``{authority}/{tenant}/v2.0``) or v1 (``https://sts.windows.net/{tenant}/``)
    issuer; the audience one of ``DICOM_AUTH_AUDIENCE`` (the API's app ID URI
    and its client ID), which has no default when running in Azure.
``local``
    Tokens signed by a key generated under ``DICOM_AUTH_LOCAL_KEY_DIR``
    (``python -m scripts.token`` mints them); same checks otherwise.
``none``
    No authentication: an explicit opt-out for local runs, logged as a warning,
    and refused when running in Azure (:attr:`Settings.running_in_azure`).

Authentication may fetch the JWKS over the network, so HTTP handlers call it in
a worker thread (``functions/_http.py``), never on the event loop.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt

from .errors import Forbidden, Unauthorized
from .settings import Settings

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512")
CLOCK_SKEW_SECONDS = 60
#: A fetched JWKS is used this long, then fetched again even if every token names a known ``kid``
#: (so keys withdrawn in a rollover stop being trusted).
JWKS_TTL_SECONDS = 3600.0
#: At most one JWKS fetch starts per this many seconds, whatever asks for it (first use, TTL, unknown
#: ``kid``) and whether the previous one succeeded or not.
JWKS_MIN_INTERVAL_SECONDS = 10.0
#: After consecutive failed fetches the wait doubles from :data:`JWKS_MIN_INTERVAL_SECONDS` up to this.
JWKS_MAX_BACKOFF_SECONDS = 60.0
#: Timeout of one JWKS fetch (connect, read).
JWKS_TIMEOUT_SECONDS = 5.0
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


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as far as the service needs to know."""

    subject: str
    roles: frozenset[str]
    #: The token's ``oid``: the caller's object id in the tenant (audit records name the caller by it).
    object_id: str | None = None
    #: The client application that asked for the token: ``azp`` (v2 tokens) or ``appid`` (v1).
    app_id: str | None = None


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


class JwksUnusable(Exception):
    """A JWKS fetch gave nothing usable (the reason names no token contents)."""


class JwksUrlKeys:
    """Keys from a JWKS URL, cached; thread-safe, and it blocks the calling thread while it fetches.

    * The first lookup fetches (nothing is cached yet, whatever the clock says).
    * The cached set is used for :data:`JWKS_TTL_SECONDS`, then fetched again; until that fetch
      succeeds the cached keys stay in use (one caller fetches, the others do not wait for it).
    * An unknown ``kid`` waits for a fetch in flight, then asks for at most one fetch of its own.
    * Fetches are rate-limited, failed ones too: one attempt per :data:`JWKS_MIN_INTERVAL_SECONDS`,
      doubling after each consecutive failure up to :data:`JWKS_MAX_BACKOFF_SECONDS`.
    * Only an HTTP 200 whose body is an object with a non-empty ``keys`` list holding at least one
      usable RSA signing key replaces the cached set; anything else is logged (URL and reason only)
      and the previous keys stay.

    PyJWT's ``PyJWKClient`` is not used: once its cache expires, a failed fetch fails every token
    (the last good keys are dropped) and failed fetches are retried on every call.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = JWKS_TIMEOUT_SECONDS,
        ttl: float = JWKS_TTL_SECONDS,
        min_interval: float = JWKS_MIN_INTERVAL_SECONDS,
        max_backoff: float = JWKS_MAX_BACKOFF_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._ttl = ttl
        self._min_interval = min_interval
        self._max_backoff = max_backoff
        self._clock = clock
        self._keys: dict[str, Any] = {}
        #: When the cached keys were fetched; None: never.
        self._fetched_at: float | None = None
        #: When the last fetch (good or not) started; None: never.
        self._attempted_at: float | None = None
        self._failures = 0
        #: Guards the fields above; never held during network I/O.
        self._state = threading.Lock()
        #: Held by the one thread that is fetching.
        self._fetching = threading.Lock()

    def key(self, kid: str) -> Any:
        with self._state:
            cached = self._keys.get(kid)
            fresh = self._fetched_at is not None and self._clock() - self._fetched_at < self._ttl
        if cached is not None and fresh:
            return cached
        if cached is not None:
            # Expired but usable: refresh unless another thread is at it; never wait for one.
            if self._fetching.acquire(blocking=False):
                try:
                    self._refresh()
                finally:
                    self._fetching.release()
        else:
            # Unknown kid (or nothing fetched yet): let a fetch in flight finish, then maybe fetch.
            with self._fetching:
                self._refresh()
        with self._state:
            current = self._keys.get(kid)
        if current is None:
            raise Unauthorized(f"The token is signed with an unknown key '{kid}'.")
        return current

    def _backoff(self) -> float:
        """Seconds between fetch attempts now (call with ``_state`` held)."""
        if self._failures == 0:
            return self._min_interval
        return min(self._min_interval * 2.0 ** min(self._failures - 1, 16), self._max_backoff)

    def _refresh(self) -> None:
        """One fetch, if the rate limit allows (call with ``_fetching`` held)."""
        with self._state:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._backoff():
                return
            self._attempted_at = now
        try:
            keys = self._download()
        except JwksUnusable as exc:
            with self._state:
                self._failures += 1
                kept, wait = len(self._keys), self._backoff()
            log.warning(
                "JWKS refresh failed url=%s reason=%s; keeping %d cached key(s); next attempt in %.0f s or later",
                self.url,
                exc,
                kept,
                wait,
            )
            return
        with self._state:
            self._keys = keys
            self._fetched_at = self._clock()
            self._failures = 0
        log.info("JWKS refreshed url=%s keys=%d", self.url, len(keys))

    def _download(self) -> dict[str, Any]:
        try:
            response = httpx.get(self.url, timeout=self._timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise JwksUnusable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise JwksUnusable(f"HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise JwksUnusable("the body is not JSON") from None
        if not isinstance(document, dict):
            raise JwksUnusable(f"the body is a JSON {type(document).__name__}, not an object")
        entries = document.get("keys")
        if not isinstance(entries, list) or not entries:
            raise JwksUnusable("the body has no non-empty 'keys' list")
        keys = _usable_keys(entries)
        if not keys:
            raise JwksUnusable(f"none of its {len(entries)} key(s) is a usable RSA signing key")
        return keys


class StaticKeys:
    """Keys from a JWKS document (local mode reads the file the token tool writes)."""

    def __init__(self, document: object) -> None:
        entries = document.get("keys") if isinstance(document, dict) else None
        self._keys = _usable_keys(entries) if isinstance(entries, list) else {}
        if not self._keys:
            raise ValueError("the JWKS document has no usable RSA signing key")

    def key(self, kid: str) -> Any:
        if kid not in self._keys:
            raise Unauthorized(f"The token is signed with an unknown key '{kid}'.")
        return self._keys[kid]


def _usable_keys(entries: list[Any]) -> dict[str, Any]:
    """The RSA signing keys of a JWKS ``keys`` list by ``kid``; other and malformed entries are skipped."""
    keys: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK.from_dict(entry).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
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
        object_id = _claim(claims, "oid")
        principal = Principal(
            object_id or _claim(claims, "sub") or "unknown",
            frozenset(map(str, roles)),
            object_id=object_id,
            app_id=_claim(claims, "azp") or _claim(claims, "appid"),
        )
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


def _claim(claims: dict[str, Any], name: str) -> str | None:
    """A string claim, or None when absent or not a non-empty string."""
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


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
        When the mode's settings are missing (tenant, audience, local keys), or when running in
        Azure with ``DICOM_AUTH_MODE=none`` or, in ``entra`` mode, without ``DICOM_AUTH_AUDIENCE``.
    """
    mode = AuthMode(settings.auth_mode)
    if mode is AuthMode.NONE:
        if settings.running_in_azure:
            raise ValueError(
                "DICOM_AUTH_MODE=none is refused when running in Azure (WEBSITE_INSTANCE_ID or "
                "WEBSITE_SITE_NAME is set): use DICOM_AUTH_MODE=entra"
            )
        log.warning("DICOM_AUTH_MODE=none: DICOMweb calls are NOT authenticated (local use only)")
        return NoAuthentication()
    audiences = settings.auth_audiences
    if mode is AuthMode.LOCAL:
        path = local_jwks_path(settings)
        if not path.exists():
            raise ValueError(f"{path} is missing: run `make token` (python -m scripts.token) once to create the key")
        try:
            keys = StaticKeys(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a usable JWKS ({exc}): delete it and run `make token`") from None
        return JwtAuthenticator(
            keys=keys,
            issuers=[LOCAL_ISSUER],
            audiences=audiences,
            owner_roles=settings.auth_owner_roles,
            reader_roles=settings.auth_reader_roles,
        )
    if not settings.auth_tenant_id:
        raise ValueError("DICOM_AUTH_TENANT_ID must be set when DICOM_AUTH_MODE=entra")
    if not audiences:
        raise ValueError(
            "DICOM_AUTH_AUDIENCE must be set when DICOM_AUTH_MODE=entra runs in Azure "
            "(the API's app ID URI and client ID, comma-separated)"
        )
    authority = settings.auth_authority.rstrip("/")
    tenant = settings.auth_tenant_id
    return JwtAuthenticator(
        keys=JwksUrlKeys(f"{authority}/{tenant}/discovery/v2.0/keys"),
        issuers=[f"{authority}/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"],
        audiences=audiences,
        owner_roles=settings.auth_owner_roles,
        reader_roles=settings.auth_reader_roles,
    )
