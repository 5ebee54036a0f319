"""The token attack suite: every forged, stale or misdirected token is refused."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicomserver.auth import Action, JwksUrlKeys, JwtAuthenticator, action_for_method, build_authenticator
from dicomserver.errors import Forbidden, Unauthorized
from dicomserver.settings import Settings
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


def test_methods_map_to_actions() -> None:
    assert [action_for_method(m) for m in ("GET", "HEAD", "POST", "PUT", "DELETE")] == [
        Action.READ,
        Action.READ,
        Action.WRITE,
        Action.WRITE,
        Action.DELETE,
    ]


def test_entra_mode_trusts_the_tenant_v1_and_v2_issuers_and_needs_its_settings() -> None:
    with pytest.raises(ValueError, match="DICOM_AUTH_TENANT_ID"):
        build_authenticator(Settings(auth_mode="entra"))
    built = build_authenticator(Settings(auth_mode="entra", auth_tenant_id="tid", auth_audiences=("api://x", "cid")))
    assert isinstance(built, JwtAuthenticator)
    assert built._issuers == {"https://login.microsoftonline.com/tid/v2.0", "https://sts.windows.net/tid/"}


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, object]]]:
    """A loopback JWKS endpoint whose key set the test can rotate."""
    state: dict[str, object] = {"jwks": {"keys": []}, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state["hits"] = int(state["hits"]) + 1  # type: ignore[call-overload]
            body = json.dumps(state["jwks"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/keys", state
    server.shutdown()
    server.server_close()


def test_jwks_is_cached_and_refreshed_on_an_unknown_kid(jwks_server: tuple[str, dict[str, object]]) -> None:
    url, state = jwks_server

    def jwk_of(private: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
        return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())), "kid": kid}

    first, second = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    state["jwks"] = {"keys": [jwk_of(first, "k1")]}
    keys = JwksUrlKeys(url)
    auth = JwtAuthenticator(keys=keys, issuers=["iss"], audiences=["aud"], owner_roles=OWNER, reader_roles=READER)

    def token(private: rsa.RSAPrivateKey, kid: str) -> str:
        claims = {"iss": "iss", "aud": "aud", "exp": int(time.time()) + 60, "roles": OWNER}
        return bearer(jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid}))

    auth.authenticate(token(first, "k1"), Action.READ)
    auth.authenticate(token(first, "k1"), Action.READ)
    assert state["hits"] == 1  # cached
    state["jwks"] = {"keys": [jwk_of(first, "k1"), jwk_of(second, "k2")]}  # key rotation
    keys._fetched -= 3600  # the refresh interval has passed
    auth.authenticate(token(second, "k2"), Action.READ)
    assert state["hits"] == 2
    with pytest.raises(Unauthorized, match="unknown key"):
        auth.authenticate(token(second, "k3"), Action.READ)
    assert state["hits"] == 2  # unknown kids cannot make us hammer the tenant's JWKS endpoint
