"""Local emulators: Azurite (Blob, Queue) and the Cosmos DB stand-in, as child processes.

Each emulator runs in its own process group so that stopping it stops
everything it started.  Binaries come from ``node_modules/.bin`` (``npm ci``
installs them from package-lock.json); the Cosmos stand-in runs through
``scripts/cosmos_server.js``, which can keep its data in a snapshot file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "node_modules" / ".bin"

#: The well-known Azurite account (public, documented; emulator only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: The Cosmos DB emulator's well-known key (the stand-in accepts any base64 key).
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DXUyZr8RPBpSBpJ8UjaBmQdvVbz7YnGfJ1BNKPLgkTLd/Gwg=="
#: The Cosmos stand-in loads its snapshot before it listens and writes it when stopped: both take
#: a few seconds for tens of MB, so it gets this long to start and to stop (seconds).
COSMOS_TIMEOUT = 60.0


class StackError(RuntimeError):
    """An emulator could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts connections (or ``proc`` exits, or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"the process for port {port} exited with code {proc.returncode}")
        if port_in_use(port, host):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def _binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise StackError(f"{path} is missing: run `npm ci` (or `make node_modules`) first")
    return str(path)


def _check_free(*ports: int) -> None:
    for port in ports:
        if port_in_use(port):
            raise StackError(f"port {port} is already in use (another `make run`, Azurite or emulator?)")


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def start_azurite(data_dir: Path, blob_port: int, queue_port: int) -> subprocess.Popen[bytes]:
    """Start Azurite (Blob + Queue) with its data under ``data_dir`` (kept across restarts)."""
    _check_free(blob_port, queue_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        _binary("azurite"),
        "--silent",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob_port),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue_port),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(free_port()),
        "--location",
        str(data_dir),
    ]
    proc = _spawn(args, data_dir / "azurite.log")
    try:
        wait_for_port("127.0.0.1", blob_port, 30, proc)
        wait_for_port("127.0.0.1", queue_port, 30, proc)
    except BaseException:  # also KeyboardInterrupt: never leave an emulator behind
        stop(proc)
        raise
    return proc


def start_cosmos(port: int, log_dir: Path | None = None, data_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the Cosmos DB stand-in (plain HTTP) on ``port``; logs to ``log_dir`` (default .local).

    Without ``data_file`` it keeps everything in memory.  With it, it loads the snapshot in
    ``data_file`` before it listens, writes it every 30 s when something changed and when stopped
    (SIGTERM), and reports what it loaded in ``<data_file>.status`` (:func:`cosmos_load_status`).
    """
    _check_free(port)
    _binary("cosmosdb-server")  # the package scripts/cosmos_server.js runs
    node = shutil.which("node")
    if node is None:
        raise StackError("node is not on PATH: install Node.js 20")
    args = [node, str(ROOT / "scripts" / "cosmos_server.js"), "--host", "127.0.0.1", "--port", str(port)]
    if data_file is not None:
        data_file = data_file.resolve()
        _status_file(data_file).unlink(missing_ok=True)  # never read a previous run's report
        args += ["--data", str(data_file)]
    log = (log_dir or ROOT / ".local") / "cosmos.log"
    proc = _spawn(args, log)
    try:
        wait_for_port("127.0.0.1", port, COSMOS_TIMEOUT, proc)
    except BaseException:  # also KeyboardInterrupt: never leave an emulator behind
        stop(proc, COSMOS_TIMEOUT)
        raise
    return proc


def _status_file(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".status")


def cosmos_load_status(data_file: Path) -> dict[str, Any] | None:
    """What the stand-in started with ``data_file`` loaded, or ``None`` if it has not said.

    ``result`` is ``"loaded"`` (the snapshot, complete as of a clean shutdown), ``"loaded-unclean"``
    (the snapshot, but the run that wrote it was killed after later writes, so up to 30 s of them
    may be missing), ``"missing"`` (no snapshot: started empty) or ``"corrupt"`` (the snapshot
    could not be loaded, was renamed to ``corruptMovedTo``, started empty); ``documents`` counts
    the documents loaded.
    """
    try:
        status: dict[str, Any] = json.loads(_status_file(data_file.resolve()).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return status


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a child and its process group: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def azurite_connection_string(blob_port: int, queue_port: int) -> str:
    """The connection string of Azurite's well-known development account on these ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{AZURITE_ACCOUNT};"
    )


def stack_environment(blob_port: int, queue_port: int, cosmos_port: int) -> dict[str, str]:
    """The app settings that point the service at the local emulators."""
    connection = azurite_connection_string(blob_port, queue_port)
    return {
        "DICOM_STORAGE": connection,
        "AzureWebJobsStorage": connection,
        "DICOM_COSMOS_ENDPOINT": f"http://127.0.0.1:{cosmos_port}/",
        "DICOM_COSMOS_KEY": COSMOS_EMULATOR_KEY,
        "DICOM_COSMOS_EMULATOR": "true",
        "DICOM_PROVISION_RESOURCES": "true",
        # Named by the trigger bindings (%DICOM_...%), so they must be set, as in Azure.
        "DICOM_INSTANCE_CONTAINER": "dicom",
        "DICOM_IMPORT_CONTAINER": "dicom-import",
        "DICOM_FHIR_SYNC_QUEUE": "fhir-sync",
        "DICOM_OPERATIONS_QUEUE": "dicom-operations",
        "DICOM_EXPIRY_SCHEDULE": "0 */5 * * * *",
        # FHIR follows a store within a few seconds locally (10 s by default in Azure).
        "DICOM_FHIR_SYNC_DELAY_SECONDS": "2",
    }


@contextmanager
def local_stack(
    data_dir: Path,
    blob_port: int = 10000,
    queue_port: int = 10001,
    cosmos_port: int = 8081,
    cosmos_data_file: Path | None = None,
) -> Iterator[dict[str, str]]:
    """Azurite and the Cosmos stand-in, running for the ``with`` block; yields the app settings.

    The stand-in keeps its data in ``cosmos_data_file`` across runs when given, else in memory.
    """
    with ExitStack() as stack:
        azurite = start_azurite(data_dir, blob_port, queue_port)
        stack.callback(stop, azurite)
        cosmos = start_cosmos(cosmos_port, data_dir, cosmos_data_file)
        stack.callback(stop, cosmos, COSMOS_TIMEOUT)
        yield stack_environment(blob_port, queue_port, cosmos_port)
