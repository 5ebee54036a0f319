"""The local FHIR R4 server: sekmet-fhir in its own virtualenv, started and stopped on demand.

``python -m scripts.fhirserver --port 8090`` runs it in the foreground;
tests and ``make run`` use :func:`fhir_server`.  The virtualenv lives in
``.local/fhir-venv`` and is created from ``requirements-fhir.txt`` on first use
(sekmet-fhir's dependencies must not mix with the function app's).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".local" / "fhir-venv"
REQUIREMENTS = ROOT / "requirements-fhir.txt"


def ensure_venv() -> Path:
    """Create or update ``.local/fhir-venv`` when requirements-fhir.txt changed; return its ``sekmet``."""
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    sekmet = VENV / "bin" / "sekmet"
    if sekmet.exists() and stamp.exists() and stamp.read_text() == digest:
        return sekmet
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"installing the FHIR server failed:\n{pip.stdout}\n{pip.stderr}")
    stamp.write_text(digest)
    return sekmet


@contextmanager
def fhir_server(data_dir: Path, port: int, timeout: float = 60.0) -> Iterator[str]:
    """Run sekmet-fhir on ``127.0.0.1:port``; yields its FHIR base URL and stops it afterwards."""
    sekmet = ensure_venv()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "settings.yaml"
    config.write_text(
        f"host: 127.0.0.1\nport: {port}\ndata_dir: {data_dir / 'data'}\n"
        "simulator:\n  enabled: false\nlog_inbound: false\n"
    )
    log = open(data_dir / "sekmet.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(sekmet), "serve", "-c", str(config)],
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the FHIR server exited: see {data_dir / 'sekmet.log'}")
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the FHIR server did not start on port {port}: see {data_dir / 'sekmet.log'}")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".local" / "fhir")
    args = parser.parse_args()
    with fhir_server(args.data_dir, args.port) as base:
        print(f"FHIR R4: {base}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
