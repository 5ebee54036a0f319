"""Local emulators: Azurite (Blob, Queue) and the Cosmos DB stand-in, as child processes.

Each emulator runs in its own process group so that stopping it stops
everything it started.  Binaries come from ``node_modules/.bin`` (``npm ci``
installs them from package-lock.json).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "node_modules" / ".bin"

#: The well-known Azurite account (public, documented; emulator only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: The Cosmos DB emulator's well-known key (the stand-in accepts any base64 key).
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DXUyZr8RPBpSBpJ8UjaBmQdvVbz7YnGfJ1BNKPLgkTLd/Gwg=="


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


def start_cosmos(port: int, log_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the Cosmos DB stand-in (in memory, plain HTTP) on ``port``; logs to ``log_dir`` (default .local)."""
    _check_free(port)
    log = (log_dir or ROOT / ".local") / "cosmos.log"
    proc = _spawn([_binary("cosmosdb-server"), "--host", "127.0.0.1", "-p", str(port), "--no-ssl"], log)
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
    except BaseException:  # also KeyboardInterrupt: never leave an emulator behind
        stop(proc)
        raise
    return proc


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
    }


@contextmanager
def local_stack(
    data_dir: Path, blob_port: int = 10000, queue_port: int = 10001, cosmos_port: int = 8081
) -> Iterator[dict[str, str]]:
    """Azurite and the Cosmos stand-in, running for the ``with`` block; yields the app settings."""
    with ExitStack() as stack:
        azurite = start_azurite(data_dir, blob_port, queue_port)
        stack.callback(stop, azurite)
        cosmos = start_cosmos(cosmos_port, data_dir)
        stack.callback(stop, cosmos)
        yield stack_environment(blob_port, queue_port, cosmos_port)
