"""``make run``: the emulators, the FHIR server and the local Functions host, until Ctrl-C.

Ports (override with environment variables): Azurite blob 10000 / queue 10001
(``AZURITE_BLOB_PORT``, ``AZURITE_QUEUE_PORT``), Cosmos DB stand-in 8081
(``COSMOS_PORT``), FHIR 8090 (``FHIR_PORT``), Functions host 7071
(``FUNCTIONS_HTTP_PORT``), OHIF viewer 3000 (``OHIF_PORT``: ``scripts/ohif.py`` serves the pinned
build there, pointed at the host, whose ``DICOM_CORS_ORIGINS`` gets the viewer's origin; in
``DICOM_AUTH_MODE=local`` it sends a token of ``OHIF_TOKEN_ROLE``, ``reader`` unless set, minted
per page load).  Data lives in ``.local/`` (``LOCAL_DATA_DIR``), kept across runs:
Azurite's, the FHIR server's and the Cosmos stand-in's, whose documents are saved to
``cosmos/index.json`` when it stops (and every 30 s when something changed) and loaded when it
starts.  Only when that snapshot is missing, corrupt or older than the last writes (the stand-in
was killed rather than stopped) does the run forget the blob receipts, so the repair trigger
(``ensure_indexed``) re-indexes every instance stored in Azurite and QIDO sees them all again.

Ctrl-C or SIGTERM stops the host first, then the FHIR server and the emulators (each in
its own process group, so nothing is left behind); further signals during that
teardown are ignored so it always completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from scripts import devstack, ohif
from scripts.fhirserver import fhir_server

ROOT = Path(__file__).resolve().parents[1]
#: What infra/modules/functionapp.bicep sets in Azure, so large STOW requests behave the same locally.
REQUEST_BODY_SIZE_LIMIT = "4294967296"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _forget_blob_receipts(connection: str) -> None:
    """Drop the local host's blob receipts so the repair trigger re-indexes every blob."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    from scripts.localhost import RECEIPTS_CONTAINER

    container = BlobServiceClient.from_connection_string(connection).get_container_client(RECEIPTS_CONTAINER)
    try:
        for blob in container.list_blobs(name_starts_with="blobreceipts/"):
            container.delete_blob(blob.name)
    except ResourceNotFoundError:
        pass


def _index_is_complete(data_file: Path) -> bool:
    """Whether the Cosmos stand-in loaded a snapshot written by a clean shutdown (then no re-index)."""
    status = devstack.cosmos_load_status(data_file) or {"result": "unknown"}
    if status["result"] == "loaded":
        print(f"Cosmos DB stand-in: loaded {status['documents']} documents from {data_file}", flush=True)
        return True
    why = {
        "missing": "there is no snapshot yet",
        "corrupt": f"its snapshot was unusable (kept as {status.get('corruptMovedTo')})",
        "loaded-unclean": "its snapshot may lack the last writes of a run that did not stop cleanly",
    }.get(status["result"], "it did not report what it loaded")
    print(f"Cosmos DB stand-in: {why}; re-indexing every stored instance from Azurite", flush=True)
    return False


def _stop_on_signals() -> None:
    """SIGINT/SIGTERM end the run once: the first raises KeyboardInterrupt, later ones are ignored."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def _start_viewer(port: int, dicomweb: str, env: dict[str, str]) -> ExitStack | None:
    """The OHIF viewer on ``port`` (in a thread), or None with the reason printed when it cannot run.

    The service runs without it rather than not at all: the viewer is a convenience.
    """
    token: Callable[[], str | None] = lambda: None  # noqa: E731
    if env["DICOM_AUTH_MODE"] == "local":
        token = ohif.local_token_provider(env, os.environ.get("OHIF_TOKEN_ROLE", "reader"))
    stack = ExitStack()
    try:
        if devstack.port_in_use(port):
            raise OSError(f"port {port} is already in use (OHIF_PORT picks another)")
        stack.enter_context(ohif.serve(port, dicomweb, token, dist=ohif.install()))
    except (ohif.OhifError, OSError) as exc:
        print(f"no OHIF viewer: {exc}", file=sys.stderr, flush=True)
        return None
    return stack


def main() -> int:
    blob, queue, cosmos = (
        _port("AZURITE_BLOB_PORT", 10000),
        _port("AZURITE_QUEUE_PORT", 10001),
        _port("COSMOS_PORT", 8081),
    )
    fhir_port, http_port = _port("FHIR_PORT", 8090), _port("FUNCTIONS_HTTP_PORT", 7071)
    viewer_port = _port("OHIF_PORT", ohif.DEFAULT_PORT)
    viewer_origin = f"http://127.0.0.1:{viewer_port}"
    for port, what in ((http_port, "the Functions host"), (fhir_port, "the FHIR server")):
        if devstack.port_in_use(port):
            print(f"port {port} (for {what}) is already in use: is another `make run` still running?", file=sys.stderr)
            return 1
    local = Path(os.environ.get("LOCAL_DATA_DIR") or ROOT / ".local").resolve()
    cosmos_data = local / "cosmos" / "index.json"
    _stop_on_signals()
    try:
        with (
            devstack.local_stack(local / "azurite", blob, queue, cosmos, cosmos_data_file=cosmos_data) as env,
            fhir_server(local / "fhir", fhir_port) as fhir_url,
        ):
            env = {
                **os.environ,
                **env,
                "FHIR_URL": fhir_url,
                "DICOM_PUBLIC_BASE_URL": os.environ.get("DICOM_PUBLIC_BASE_URL", f"http://127.0.0.1:{http_port}"),
                "FUNCTIONS_HTTP_PORT": str(http_port),
                "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": os.environ.get(
                    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", REQUEST_BODY_SIZE_LIMIT
                ),
                "DICOM_AUTH_MODE": os.environ.get("DICOM_AUTH_MODE", "local"),
                # The viewer calls the host from its own origin (and any origins already set).
                "DICOM_CORS_ORIGINS": ",".join(
                    dict.fromkeys(o for o in [*os.environ.get("DICOM_CORS_ORIGINS", "").split(","), viewer_origin] if o)
                ),
                # One Python worker per core (at most 4), as a Functions host with this setting runs them.
                "FUNCTIONS_WORKER_PROCESS_COUNT": os.environ.get(
                    "FUNCTIONS_WORKER_PROCESS_COUNT", str(min(4, os.cpu_count() or 1))
                ),
            }
            if "LOCAL_DATA_DIR" in os.environ and "DICOM_AUTH_LOCAL_KEY_DIR" not in os.environ:
                env["DICOM_AUTH_LOCAL_KEY_DIR"] = str(local / "auth")
            if env["DICOM_AUTH_MODE"] == "local":
                from dicomserver.settings import Settings
                from scripts.token import ensure_key

                ensure_key(Path(Settings.from_env(env).auth_local_key_dir))
            print(f"Azurite blob :{blob} queue :{queue}, Cosmos DB stand-in :{cosmos}, FHIR {fhir_url}", flush=True)
            if not _index_is_complete(cosmos_data):
                _forget_blob_receipts(env["DICOM_STORAGE"])
            host = subprocess.Popen(
                [sys.executable, "-m", "scripts.localhost", "--port", str(http_port)],
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
            viewer: ExitStack | None = None
            try:
                devstack.wait_for_port("127.0.0.1", http_port, 120, host)
                viewer = _start_viewer(viewer_port, f"http://127.0.0.1:{http_port}/v2", env)
                print(f"\nDICOMweb base URL: http://127.0.0.1:{http_port}/v2   (Ctrl-C stops everything)", flush=True)
                if viewer is not None:
                    print(f"OHIF viewer:       {viewer_origin}", flush=True)
                if env["DICOM_AUTH_MODE"] == "local":
                    print(
                        "Calls need a token:  TOKEN=$(make -s token)   (make -s token ROLE=reader for a reader)",
                        flush=True,
                    )
                    print(
                        f'  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{http_port}/v2/studies\n',
                        flush=True,
                    )
                code = host.wait()
                print(f"the local Functions host exited with code {code}; stopping", file=sys.stderr, flush=True)
                return 1
            finally:
                if viewer is not None:
                    viewer.close()
                devstack.stop(host)
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except (devstack.StackError, RuntimeError) as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
