"""The token attack suite: every forged, stale or misdirected token is refused."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicomserver.auth import (
    JWKS_MIN_INTERVAL_SECONDS,
    JWKS_TTL_SECONDS,
    Action,
    JwksUrlKeys,
    JwtAuthenticator,
    build_authenticator,
)
from dicomserver.errors import Forbidden, Unauthorized
from dicomserver.settings import AZURE_INSTANCE_VARIABLES, Settings
from scripts.token import ensure_key, mint

OWNER, READER = ["DICOM.Data.Owner"], ["DICOM.Data.Reader"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(auth_mode="local", auth_local_key_dir=str(tmp_path / "auth"))


@pytest.fixture
def auth(settings: Settings) -> JwtAuthenticator:
    ensure_key(Path(settings.auth_local_key_dir))
    built = build_authenticator(settings)
    assert isinstance(built, JwtAuthenticator)
    return built


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(auth: JwtAuthenticator, header: str | None, action: Action = Action.READ) -> str:
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(header, action)
    return caught.value.message


class TestValidTokens:
    def test_owner_may_read_write_and_delete(self, auth: JwtAuthenticator, settings: Settings) -> None:
        token = bearer(mint(settings, OWNER))
        for action in Action:
            assert auth.authenticate(token, action).roles == frozenset(OWNER)

    def test_reader_may_read(self, auth: JwtAuthenticator, settings: Settings) -> None:
        auth.authenticate(bearer(mint(settings, READER)), Action.READ)

    def test_display_name_roles_are_accepted(self, auth: JwtAuthenticator, settings: Settings) -> None:
        auth.authenticate(bearer(mint(settings, ["DICOM Data Owner"])), Action.DELETE)

    def test_small_clock_skew_is_tolerated(self, auth: JwtAuthenticator, settings: Settings) -> None:
        auth.authenticate(bearer(mint(settings, OWNER, minutes=-0.5)), Action.READ)  # expired 30 s ago


class TestAttacks:
    """Each case must be refused; the closing note counts them."""

    def test_expired(self, auth: JwtAuthenticator, settings: Settings) -> None:
        assert "expired" in refused(auth, bearer(mint(settings, OWNER, minutes=-5)))

    def test_not_yet_valid(self, auth: JwtAuthenticator, settings: Settings) -> None:
        assert "not valid yet" in refused(auth, bearer(mint(settings, OWNER, not_before=time.time() + 600)))

    def test_wrong_audience(self, auth: JwtAuthenticator, settings: Settings) -> None:
        assert "audience" in refused(auth, bearer(mint(settings, OWNER, audience="api://someone-else")))

    def test_wrong_issuer(self, auth: JwtAuthenticator, settings: Settings) -> None:
        token = mint(settings, OWNER, issuer="https://login.microsoftonline.com/evil/v2.0")
        assert "issuer" in refused(auth, bearer(token))

    def test_signed_by_an_unknown_key(self, auth: JwtAuthenticator, settings: Settings) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        claims = jwt.decode(mint(settings, OWNER), options={"verify_signature": False})
        token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "attacker-key"})
        assert "unknown key" in refused(auth, bearer(token))

    def test_signed_by_another_key_under_the_trusted_kid(self, auth: JwtAuthenticator, settings: Settings) -> None:
        trusted = jwt.get_unverified_header(mint(settings, OWNER))["kid"]
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        claims = jwt.decode(mint(settings, READER), options={"verify_signature": False})
        token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": trusted})
        assert "signature" in refused(auth, bearer(token))

    def test_tampered_payload(self, auth: JwtAuthenticator, settings: Settings) -> None:
        header, payload, signature = mint(settings, READER).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["roles"] = OWNER
        assert "signature" in refused(auth, bearer(f"{header}.{b64(claims)}.{signature}"), Action.DELETE)

    def test_alg_none(self, auth: JwtAuthenticator, settings: Settings) -> None:
        claims = jwt.decode(mint(settings, OWNER), options={"verify_signature": False})
        kid = jwt.get_unverified_header(mint(settings, OWNER))["kid"]
        token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."
        assert "algorithm 'none'" in refused(auth, bearer(token))

    def test_hs256_with_the_public_key_as_secret(self, auth: JwtAuthenticator, settings: Settings) -> None:
        jwks = json.loads((Path(settings.auth_local_key_dir) / "jwks.json").read_text())
        public_pem = jwt.PyJWK.from_dict(jwks["keys"][0]).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        claims = jwt.decode(mint(settings, OWNER), options={"verify_signature": False})
        header = b64({"alg": "HS256", "typ": "JWT", "kid": jwks["keys"][0]["kid"]})
        body = b64(claims)
        import hashlib
        import hmac

        mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
        assert "HS256" in refused(auth, bearer(token))

    def test_missing_roles_is_403(self, auth: JwtAuthenticator, settings: Settings) -> None:
        with pytest.raises(Forbidden):
            auth.authenticate(bearer(mint(settings, [])), Action.READ)

    def test_unknown_role_is_403(self, auth: JwtAuthenticator, settings: Settings) -> None:
        with pytest.raises(Forbidden):
            auth.authenticate(bearer(mint(settings, ["DICOM.Data.Admin"])), Action.READ)

    @pytest.mark.parametrize("action", [Action.WRITE, Action.DELETE])
    def test_reader_cannot_store_or_delete(self, auth: JwtAuthenticator, settings: Settings, action: Action) -> None:
        with pytest.raises(Forbidden, match="DICOM Data Owner"):
            auth.authenticate(bearer(mint(settings, READER)), action)

    def test_no_header(self, auth: JwtAuthenticator) -> None:
        assert "no Authorization header" in refused(auth, None)

    @pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "Bearer a b", "Token abc"])
    def test_malformed_header(self, auth: JwtAuthenticator, header: str) -> None:
        assert "Bearer <token>" in refused(auth, header)

    def test_garbage_token(self, auth: JwtAuthenticator) -> None:
        assert "well-formed" in refused(auth, "Bearer not-a-jwt")

    def test_missing_exp(self, auth: JwtAuthenticator, settings: Settings) -> None:
        private_key, kid = ensure_key(Path(settings.auth_local_key_dir))
        claims = jwt.decode(mint(settings, OWNER), options={"verify_signature": False})
        del claims["exp"]
        token = jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})
        assert "exp" in refused(auth, bearer(token))

    def test_missing_kid(self, auth: JwtAuthenticator, settings: Settings) -> None:
        private_key, _ = ensure_key(Path(settings.auth_local_key_dir))
        claims = jwt.decode(mint(settings, OWNER), options={"verify_signature": False})
        assert "kid" in refused(auth, bearer(jwt.encode(claims, private_key, algorithm="RS256")))


def test_entra_mode_trusts_the_tenant_v1_and_v2_issuers_and_needs_its_settings() -> None:
    with pytest.raises(ValueError, match="DICOM_AUTH_TENANT_ID"):
        build_authenticator(Settings(auth_mode="entra"))
    built = build_authenticator(Settings(auth_mode="entra", auth_tenant_id="tid", auth_audiences=("api://x", "cid")))
    assert isinstance(built, JwtAuthenticator)
    assert built._issuers == {"https://login.microsoftonline.com/tid/v2.0", "https://sts.windows.net/tid/"}


class JwksEndpoint:
    """A real loopback JWKS endpoint (http.server in a thread) whose reply the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b'{"keys": []}'
        self.hits = 0
        #: When set, each request waits for this event (at most 5 s) before it is answered.
        self.hold: threading.Event | None = None
        self.requested = threading.Event()
        #: Per held request: whether the test released it (False: it timed out).
        self.released: list[bool] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                endpoint.hits += 1
                if endpoint.hold is not None:
                    endpoint.requested.set()
                    endpoint.released.append(endpoint.hold.wait(5))
                body, status = endpoint.body, endpoint.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.authority = f"http://127.0.0.1:{self._server.server_port}"
        self.url = f"{self.authority}/tid/discovery/v2.0/keys"

    def serve(self, document: object, status: int = 200) -> None:
        self.body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.status = status

    def stop(self) -> None:
        """Stop listening: later fetches fail to connect."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


@pytest.fixture
def endpoint() -> Iterator[JwksEndpoint]:
    served = JwksEndpoint()
    yield served
    if served.hold is not None:
        served.hold.set()
    served.stop()


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2")}


def jwk_of(private: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())), "kid": kid, "use": "sig"}


def jwks(signing_keys: dict[str, rsa.RSAPrivateKey], *kids: str) -> dict[str, object]:
    return {"keys": [jwk_of(signing_keys[kid], kid) for kid in kids]}


def signed(signing_keys: dict[str, rsa.RSAPrivateKey], kid: str, *, signer: str | None = None) -> str:
    claims = {"iss": "iss", "aud": "aud", "exp": int(time.time()) + 600, "roles": OWNER}
    return bearer(jwt.encode(claims, signing_keys[signer or kid], algorithm="RS256", headers={"kid": kid}))


class FakeClock:
    """The cache's monotonic clock, moved by the test (no sleeping)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def authenticator_for(url: str, clock: FakeClock) -> JwtAuthenticator:
    keys = JwksUrlKeys(url, clock=clock)
    return JwtAuthenticator(keys=keys, issuers=["iss"], audiences=["aud"], owner_roles=OWNER, reader_roles=READER)


#: JWKS replies that must never replace the cached keys: (HTTP status, body).
BAD_REPLIES = {
    "error status with a valid key set": (500, {"keys": []}),
    "service unavailable": (503, b"<html>down</html>"),
    "empty object": (200, {}),
    "list instead of object": (200, [{"kty": "RSA", "kid": "k1"}]),
    "empty keys list": (200, {"keys": []}),
    "keys not a list": (200, {"keys": "k1"}),
    "no usable key": (200, {"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}, {"kty": "RSA", "kid": "x"}]}),
    "not JSON": (200, b"<html>sign in</html>"),
}


class TestJwksCache:
    """``JwksUrlKeys`` against a real HTTP endpoint, with the clock under the test's control."""

    def test_the_first_token_after_boot_fetches_the_keys_even_at_clock_zero(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        auth = authenticator_for(endpoint.url, FakeClock(0.0))  # a fresh machine: monotonic() is near 0
        auth.authenticate(signed(signing_keys, "k1"), Action.READ)
        assert endpoint.hits == 1

    def test_keys_are_cached_for_the_ttl_then_fetched_again_although_every_kid_is_known(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock(1000.0)
        auth = authenticator_for(endpoint.url, clock)
        token = signed(signing_keys, "k1")
        auth.authenticate(token, Action.READ)
        clock.now += JWKS_TTL_SECONDS - 1
        auth.authenticate(token, Action.READ)
        assert endpoint.hits == 1
        clock.now += 1
        auth.authenticate(token, Action.READ)
        assert endpoint.hits == 2
        auth.authenticate(token, Action.READ)
        assert endpoint.hits == 2

    def test_a_key_withdrawn_in_a_rollover_is_refused_once_the_ttl_has_passed(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        auth.authenticate(signed(signing_keys, "k1"), Action.READ)
        endpoint.serve(jwks(signing_keys, "k2"))  # rollover: k1 is withdrawn
        clock.now += JWKS_TTL_SECONDS
        assert "unknown key" in refused(auth, signed(signing_keys, "k1"))
        auth.authenticate(signed(signing_keys, "k2"), Action.READ)
        assert endpoint.hits == 2

    def test_a_token_naming_a_new_key_fetches_it_once_the_interval_has_passed(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        auth.authenticate(signed(signing_keys, "k1"), Action.READ)
        endpoint.serve(jwks(signing_keys, "k1", "k2"))  # rollover: k2 is published
        clock.now += JWKS_MIN_INTERVAL_SECONDS
        auth.authenticate(signed(signing_keys, "k2"), Action.READ)
        auth.authenticate(signed(signing_keys, "k1"), Action.READ)
        assert endpoint.hits == 2

    def test_unknown_kids_trigger_at_most_one_fetch_per_interval(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        auth.authenticate(signed(signing_keys, "k1"), Action.READ)
        hits = []
        for at, kid in ((5, "a"), (10, "b"), (11, "c"), (19.9, "d"), (20, "e"), (20, "f")):
            clock.now = at
            assert "unknown key" in refused(auth, signed(signing_keys, kid, signer="k1"))
            hits.append(endpoint.hits)
        assert hits == [1, 2, 2, 2, 3, 3]

    @pytest.mark.parametrize("status,body", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
    def test_a_bad_reply_keeps_the_cached_keys_and_logs_no_token_contents(
        self,
        endpoint: JwksEndpoint,
        signing_keys: dict[str, rsa.RSAPrivateKey],
        caplog: pytest.LogCaptureFixture,
        status: int,
        body: object,
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        token = signed(signing_keys, "k1")
        auth.authenticate(token, Action.READ)
        endpoint.serve(body, status)
        clock.now += JWKS_TTL_SECONDS
        with caplog.at_level(logging.WARNING, logger="dicomserver.auth"):
            auth.authenticate(token, Action.READ)
            auth.authenticate(token, Action.READ)
        assert endpoint.hits == 2  # one attempt; the next waits for the interval
        [record] = [r for r in caplog.records if r.name == "dicomserver.auth"]
        text = record.getMessage()
        assert "JWKS refresh failed" in text and endpoint.url in text and "keeping 1 cached key" in text
        for part in token.removeprefix("Bearer ").split("."):
            assert part not in text

    @pytest.mark.parametrize("status,body", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
    def test_a_bad_reply_before_any_good_one_is_a_401_not_a_crash(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey], status: int, body: object
    ) -> None:
        endpoint.serve(body, status)
        auth = authenticator_for(endpoint.url, FakeClock())
        assert "unknown key" in refused(auth, signed(signing_keys, "k1"))

    def test_failed_fetches_are_rate_limited_with_a_short_backoff(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve({"error": "outage"}, 500)
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        token = signed(signing_keys, "k1")
        seen = []
        # Attempts at 0, then 10 s, 20 s, 40 s and 60 s (the cap) after each failure.
        for at in (0, 5, 9.9, 10, 29.9, 30, 69.9, 70, 129.9, 130, 189.9, 190):
            clock.now = at
            assert "unknown key" in refused(auth, token)
            seen.append(endpoint.hits)
        assert seen == [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
        endpoint.serve(jwks(signing_keys, "k1"))  # the endpoint recovers
        clock.now = 250
        auth.authenticate(token, Action.READ)
        assert endpoint.hits == 7
        clock.now = 260  # a success resets the backoff to the minimum interval
        assert "unknown key" in refused(auth, signed(signing_keys, "k9", signer="k1"))
        assert endpoint.hits == 8

    def test_an_unreachable_endpoint_keeps_the_cached_keys(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey], caplog: pytest.LogCaptureFixture
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        clock = FakeClock()
        auth = authenticator_for(endpoint.url, clock)
        token = signed(signing_keys, "k1")
        auth.authenticate(token, Action.READ)
        endpoint.stop()
        clock.now += JWKS_TTL_SECONDS
        with caplog.at_level(logging.WARNING, logger="dicomserver.auth"):
            auth.authenticate(token, Action.READ)
        assert "ConnectError" in caplog.text

    def test_concurrent_first_requests_share_one_fetch(
        self, endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        endpoint.serve(jwks(signing_keys, "k1"))
        endpoint.hold = threading.Event()
        auth = authenticator_for(endpoint.url, FakeClock())
        token = signed(signing_keys, "k1")
        results: list[object] = []

        def call() -> None:
            try:
                results.append(auth.authenticate(token, Action.READ).roles)
            except Unauthorized as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        assert endpoint.requested.wait(5)
        endpoint.hold.set()
        for thread in threads:
            thread.join(10)
        assert results == [frozenset(OWNER)] * 8
        assert endpoint.hits == 1


def test_authentication_runs_off_the_event_loop_while_the_keys_are_fetched(
    endpoint: JwksEndpoint, signing_keys: dict[str, rsa.RSAPrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request handler awaits authentication in a worker thread: a slow JWKS never stalls other requests."""
    from azurefunctions.extensions.http.fastapi import Request, Response

    from dicomserver import wiring
    from functions._http import handle

    for name in AZURE_INSTANCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DICOM_AUTH_MODE", "entra")
    monkeypatch.setenv("DICOM_AUTH_AUTHORITY", endpoint.authority)
    monkeypatch.setenv("DICOM_AUTH_TENANT_ID", "tid")
    monkeypatch.setenv("DICOM_AUTH_AUDIENCE", "aud")
    wiring.reset_authenticator_for_tests()
    endpoint.serve(jwks(signing_keys, "k1"))
    endpoint.hold = threading.Event()
    claims = {"iss": f"{endpoint.authority}/tid/v2.0", "aud": "aud", "exp": int(time.time()) + 600, "roles": []}
    token = jwt.encode(claims, signing_keys["k1"], algorithm="RS256", headers={"kid": "k1"})
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/v2/studies",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
        }
    )

    async def never(svc: wiring.Services) -> Response:
        raise AssertionError("a token without roles must not reach the handler")

    async def scenario() -> int:
        answered = asyncio.create_task(handle(request, never, Action.READ))
        # This coroutine runs on while the JWKS request is held: the loop is free.
        assert await asyncio.to_thread(endpoint.requested.wait, 5)
        assert endpoint.hold is not None
        endpoint.hold.set()
        return (await answered).status_code

    try:
        assert asyncio.run(scenario()) == 403
        assert endpoint.released == [True]
    finally:
        wiring.reset_authenticator_for_tests()
