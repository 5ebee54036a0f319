"""Local Functions hosts, started as subprocesses against the emulators."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_PIDS: dict[str, int] = {}


@contextmanager
def local_host(env_overrides: dict[str, str], log_dir: Path, *extra_args: str) -> Iterator[str]:
    """Run ``python -m scripts.localhost`` on a free port; yields its ``.../v2`` base URL.

    The host's PID is recorded in :data:`HOST_PIDS` under that URL (memory tests sample it).
    """
    from scripts import devstack

    port = devstack.free_port()
    env = {
        **os.environ,
        "DICOM_COSMOS_DATABASE": f"e2e{uuid.uuid4().hex[:8]}",
        "DICOM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
        **env_overrides,
    }
    log_path = log_dir / "host.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scripts.localhost",
                "--port",
                str(port),
                "--blob-poll-interval",
                "0.3",
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"local host exited early:\n{log_path.read_text()}")
                try:
                    httpx.get(f"http://127.0.0.1:{port}/v2/studies", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"local host did not start:\n{log_path.read_text()}") from None
                    time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/v2"
            HOST_PIDS[url] = proc.pid
            yield url
        finally:
            devstack.stop(proc)


@pytest.fixture(scope="session")
def base_url(stack_env: dict[str, str], fhir_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host with authentication explicitly off (``DICOM_AUTH_MODE=none``), syncing to FHIR."""
    env = {**stack_env, "FHIR_URL": fhir_url, "DICOM_AUTH_MODE": "none"}
    with local_host(env, tmp_path_factory.mktemp("host")) as url:
        yield url


@pytest.fixture(scope="session")
def auth_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.token import ensure_key

    key_dir = tmp_path_factory.mktemp("auth")
    ensure_key(key_dir)
    return key_dir


@pytest.fixture(scope="session")
def secure_base_url(
    stack_env: dict[str, str], auth_key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A host in ``DICOM_AUTH_MODE=local``: every call needs a token from scripts.token.

    HTTP only, with its own containers and queue, so it never takes trigger work from ``base_url``'s host.
    """
    env = {
        **stack_env,
        "DICOM_AUTH_MODE": "local",
        "DICOM_AUTH_LOCAL_KEY_DIR": str(auth_key_dir),
        "DICOM_INSTANCE_CONTAINER": "secure-dicom",
        "DICOM_METADATA_CONTAINER": "secure-dicom-metadata",
        "DICOM_IMPORT_CONTAINER": "secure-dicom-import",
        "DICOM_IMPORT_ERRORS_CONTAINER": "secure-dicom-import-errors",
        "DICOM_FHIR_SYNC_QUEUE": "secure-fhir-sync",
    }
    with local_host(env, tmp_path_factory.mktemp("secure-host"), "--no-triggers") as url:
        yield url
