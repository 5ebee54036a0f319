"""The local Functions host, started as a subprocess against the emulators."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def base_url(stack_env: dict[str, str], fhir_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v2`` of a local host serving ``function_app.app``."""
    from scripts import devstack

    port = devstack.free_port()
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        **stack_env,
        "DICOM_COSMOS_DATABASE": f"e2e{suffix}",
        "DICOM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "FHIR_URL": fhir_url,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path_factory.mktemp("host") / "host.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.localhost", "--port", str(port), "--blob-poll-interval", "0.3"],
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
            yield f"http://127.0.0.1:{port}/v2"
        finally:
            devstack.stop(proc)
