"""Local-mode tokens: ``python -m scripts.token [--role owner|reader|none] [--minutes N]``.

Creates the signing key on first use (``DICOM_AUTH_LOCAL_KEY_DIR``, default
``.local/auth``: ``signing-key.pem`` and the public ``jwks.json`` the service
trusts in ``DICOM_AUTH_MODE=local``) and prints an RS256 access token shaped
like an Entra ID one (``iss``, ``aud``, ``exp``, ``nbf``, ``roles``, ``oid``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicomserver.auth import LOCAL_ISSUER
from dicomserver.settings import Settings

ROLES = {"owner": ["DICOM.Data.Owner"], "reader": ["DICOM.Data.Reader"], "none": []}


def ensure_key(key_dir: Path) -> tuple[Any, str]:
    """The local signing key and its kid, created (with jwks.json) when missing."""
    pem = key_dir / "signing-key.pem"
    if not pem.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    private_key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))  # type: ignore[arg-type]
    kid = jwt.PyJWK.from_dict(public_jwk).key_id or _thumbprint(public_jwk)
    jwks = {"keys": [{**public_jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}
    (key_dir / "jwks.json").write_text(json.dumps(jwks, indent=2))
    return private_key, kid


def _thumbprint(jwk: dict[str, Any]) -> str:
    import base64
    import hashlib

    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def mint(
    settings: Settings,
    roles: list[str],
    minutes: float = 480,
    *,
    audience: str | None = None,
    issuer: str = LOCAL_ISSUER,
    not_before: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed local-mode token (tests pass odd claims to build attack cases)."""
    private_key, kid = ensure_key(Path(settings.auth_local_key_dir))
    now = time.time()
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience or settings.auth_audiences[0],
        "iat": int(now),
        "nbf": int(not_before if not_before is not None else now),
        "exp": int(now + minutes * 60),
        "oid": str(uuid.uuid4()),
        "sub": "local-developer",
        "roles": roles,
        **(extra or {}),
    }
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=sorted(ROLES), default="owner")
    parser.add_argument("--roles", help="comma-separated role values (instead of --role)")
    parser.add_argument("--minutes", type=float, default=480)
    args = parser.parse_args(argv)
    roles = [r.strip() for r in args.roles.split(",")] if args.roles else ROLES[args.role]
    print(mint(Settings.from_env(), roles, args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
