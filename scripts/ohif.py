"""The OHIF viewer for the service: ``python -m scripts.ohif install | serve | config``.

The prebuilt viewer is the ``dist/`` folder of the npm package ``@ohif/app`` (pinned below with its
registry integrity).  Its npm dependencies are only the sources it was built from (39 direct ones,
and ``@ohif/i18n`` 3.13.2 among them is not on the registry this project reaches), so it is not a
``package.json`` dependency: ``install`` fetches the one tarball with ``npm pack``, checks its sha512
and unpacks ``dist/`` to ``.local/ohif/`` (``make ohif-installed``).

``serve`` runs a small static file server for that folder on its own port (default 3000) with:

* ``/app-config.js`` generated per request: one DICOMweb data source on the service's base URL (QIDO,
  WADO-RS frames, the service's thumbnails) and either a bearer token, sent by a small inline
  extension on every DICOMweb request (local tokens are minted per page load, so a reload always has
  a fresh one; refused to pages of other sites), or Entra ID sign-in (:class:`Entra`);
* the SPA fallback: a path that is no file gets ``index.html`` (OHIF's router handles it).

``config`` prints such an ``app-config.js``, to host ``dist/`` elsewhere (the service in Azure).
The service must allow the viewer's origin by CORS (``DICOM_CORS_ORIGINS`` locally, and ``make run``
sets it; ``corsAllowedOrigins`` / ``deploy.sh --cors-origin`` in Azure).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import mimetypes
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
#: The pinned viewer build: bump both together (``npm view @ohif/app@VERSION dist.integrity``).
OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
OHIF_INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
CACHE_DIR = ROOT / ".local" / "ohif"
DEFAULT_PORT = 3000
DEFAULT_DICOMWEB_ROOT = "http://127.0.0.1:7071/v2"
#: The data source's name in the viewer's URLs (``/viewer/dicomweb?StudyInstanceUIDs=...``).
SOURCE_NAME = "dicomweb"

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/json", ".json")


class OhifError(RuntimeError):
    """The viewer could not be installed."""


def dist_dir(cache_dir: Path = CACHE_DIR) -> Path:
    """Where the pinned build's ``dist/`` is unpacked."""
    return cache_dir / f"app-{OHIF_VERSION}" / "dist"


def _integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def install(cache_dir: Path = CACHE_DIR, *, quiet: bool = False) -> Path:
    """The pinned viewer's ``dist/`` folder, fetched with ``npm pack`` and unpacked when missing."""
    dist = dist_dir(cache_dir)
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise OhifError("npm is missing: install Node.js 20 with npm")
    if not quiet:
        print(f"fetching the OHIF viewer {OHIF_PACKAGE}@{OHIF_VERSION} (about 50 MB) with npm pack", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        done = subprocess.run(
            [npm, "pack", f"{OHIF_PACKAGE}@{OHIF_VERSION}", "--pack-destination", tmp, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise OhifError(f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION} failed: {done.stderr.strip() or done.stdout}")
        if (actual := _integrity(tarballs[0])) != OHIF_INTEGRITY:
            raise OhifError(f"{tarballs[0].name}: integrity {actual} is not the pinned {OHIF_INTEGRITY}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
            tar.extractall(unpacked, members=members, filter="data")
        if not (unpacked / "package" / "dist" / "index.html").is_file():
            raise OhifError(f"{OHIF_PACKAGE}@{OHIF_VERSION} has no dist/index.html")
        dist.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dist, ignore_errors=True)
        (unpacked / "package" / "dist").rename(dist)
    return dist


@dataclass(frozen=True)
class Entra:
    """Sign-in with Entra ID (OHIF's OpenID Connect client, authorization code with PKCE).

    ``client_id`` is the viewer's own app registration (platform "Single-page application", redirect
    URI ``<viewer origin>/callback``); ``api`` the service's app ID URI (``api://<appId>``), whose
    ``user_impersonation`` scope the viewer requests: OHIF then sends the user's access token, with
    the app roles assigned to the user, on every DICOMweb request.
    """

    tenant: str
    client_id: str
    api: str
    authority_host: str = "https://login.microsoftonline.com"

    def oidc(self) -> dict[str, Any]:
        return {
            "authority": f"{self.authority_host.rstrip('/')}/{self.tenant}/v2.0",
            "client_id": self.client_id,
            "redirect_uri": "/callback",
            "silent_redirect_uri": "/silent-refresh.html",
            "post_logout_redirect_uri": "/",
            "response_type": "code",
            "scope": f"openid profile offline_access {self.api.rstrip('/')}/user_impersonation",
            "automaticSilentRenew": True,
        }


def app_config(dicomweb_root: str, token: str | None = None, entra: Entra | None = None) -> str:
    """OHIF's ``app-config.js``: the service as its only data source, with a bearer token if given
    (local tokens), or Entra sign-in (the service in Azure)."""
    root = dicomweb_root.rstrip("/")
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": SOURCE_NAME,
        "configuration": {
            "friendlyName": "dicomserver",
            "name": "dicomserver",
            "qidoRoot": root,
            "wadoRoot": root,
            "wadoUriRoot": root,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            # The service's own /thumbnail (JPEG), fetched with the Authorization header.
            "thumbnailRendering": "thumbnail",
            "thumbnailRequestStrategy": "fetch",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config: dict[str, Any] = {
        "routerBasename": None,
        "modes": [],
        # No onboarding tour over the first viewport.
        "customizationService": [{"ohif.tours": {"$set": []}}],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": SOURCE_NAME,
        "dataSources": [source],
    }
    if entra is not None:
        config["oidc"] = [entra.oidc()]
    token_js = json.dumps(token)
    return f"""/* Generated by scripts/ohif.py for the DICOMweb service at {root} */
(function () {{
  const token = {token_js};
  const config = {json.dumps(config, indent=2)};
  // OHIF asks its user authentication service for the Authorization header of every DICOMweb request.
  config.extensions = token ? [{{
    id: 'dicomserver-bearer-token',
    preRegistration({{ servicesManager }}) {{
      servicesManager.services.userAuthenticationService.setServiceImplementation({{
        getAuthorizationHeader: () => ({{ Authorization: 'Bearer ' + token }}),
      }});
    }},
  }}] : [];
  config.httpErrorHandler = error => console.warn('DICOMweb request failed', error && error.status);
  window.config = config;
}})();
"""


def _handler(
    dist: Path, dicomweb_root: str, token: Callable[[], str | None], entra: Entra | None
) -> type[BaseHTTPRequestHandler]:
    root = dist.resolve()

    class Handler(BaseHTTPRequestHandler):
        server_version = "dicomserver-ohif"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = posixpath.normpath(unquote(urlsplit(self.path).path))
            if path == "/app-config.js":
                # It may carry a token: only for the viewer's own pages, not a <script> on another site.
                if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                    return self._send(b"forbidden\n", "text/plain", body, cache=False, status=HTTPStatus.FORBIDDEN)
                data = app_config(dicomweb_root, token(), entra).encode()
                return self._send(data, "text/javascript; charset=utf-8", body, cache=False)
            file = (root / path.lstrip("/")).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                # SPA fallback: OHIF's router handles /viewer, /callback, ...
                file = root / "index.html"
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/json", "image/svg+xml"):
                ctype += "; charset=utf-8"
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(file.stat().st_size))
                self.send_header("Cache-Control", "no-cache" if file.name == "index.html" else "max-age=3600")
                self.end_headers()
                if body:
                    with open(file, "rb") as f:
                        shutil.copyfileobj(f, self.wfile)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send(self, data: bytes, ctype: str, body: bool, cache: bool, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@contextmanager
def serve(
    port: int = DEFAULT_PORT,
    dicomweb_root: str = DEFAULT_DICOMWEB_ROOT,
    token: Callable[[], str | None] = lambda: None,
    *,
    dist: Path | None = None,
    host: str = "127.0.0.1",
    entra: Entra | None = None,
) -> Iterator[str]:
    """Serve the viewer on ``host:port`` in a background thread; yields its URL (``http://host:port``)."""
    folder = dist or install()
    server = ThreadingHTTPServer((host, port), _handler(folder, dicomweb_root, token, entra))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def local_token_provider(env: dict[str, str], role: str = "reader", minutes: float = 480) -> Callable[[], str]:
    """Mints a local-mode token (``DICOM_AUTH_MODE=local``) per call, with the key the host trusts."""
    from dicomserver.settings import Settings
    from scripts.token import ROLES, mint

    settings = Settings.from_env(env)
    return lambda: mint(settings, ROLES[role], minutes)


def _entra(args: argparse.Namespace) -> Entra | None:
    given = [args.entra_tenant, args.entra_client_id, args.entra_api]
    if not any(given):
        return None
    if not all(given):
        raise OhifError("Entra sign-in needs --entra-tenant, --entra-client-id and --entra-api")
    return Entra(args.entra_tenant, args.entra_client_id, args.entra_api)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.ohif", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("install", help=f"fetch {OHIF_PACKAGE}@{OHIF_VERSION} into {dist_dir().parent}")
    fetch.add_argument("--quiet", action="store_true", help="print nothing when it is there already")
    run = sub.add_parser("serve", help="serve the viewer")
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    config = sub.add_parser("config", help="print an app-config.js (to host the dist/ elsewhere)")
    for command in (run, config):
        command.add_argument("--dicomweb", default=DEFAULT_DICOMWEB_ROOT, help="the service's DICOMweb base URL")
        command.add_argument("--entra-tenant", help="sign in with Entra ID: the tenant (ID or domain)")
        command.add_argument("--entra-client-id", help="the viewer's app registration (single-page application)")
        command.add_argument("--entra-api", help="the service's app ID URI, api://<appId>")
    auth = run.add_mutually_exclusive_group()
    auth.add_argument("--token", help="a bearer token to send (e.g. from `make -s token`)")
    auth.add_argument(
        "--local-token", choices=["owner", "reader"], help="mint a local-mode token of this role per page load"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            dist = install(quiet=False)
            if not args.quiet:
                print(dist)
            return 0
        entra = _entra(args)
        if args.command == "config":
            print(app_config(args.dicomweb, None, entra), end="")
            return 0
        provider: Callable[[], str | None] = lambda: args.token  # noqa: E731
        if args.local_token:
            provider = local_token_provider(dict(os.environ), args.local_token)
        with serve(args.port, args.dicomweb, provider, entra=entra) as url:
            print(f"OHIF viewer: {url}   (DICOMweb {args.dicomweb}; Ctrl-C stops)", flush=True)
            threading.Event().wait()
    except OhifError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
