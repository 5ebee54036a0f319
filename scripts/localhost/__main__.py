"""``python -m scripts.localhost [--port 7071] [--no-triggers] [--app module:attribute]``: run the host.

What ``func start`` does: load ``local.settings.json`` into the environment, claim the port, fork
the ``FUNCTIONS_WORKER_PROCESS_COUNT`` workers, load ``function_app.app`` (after
``DICOM_PROVISION_RESOURCES`` provisioning), print the functions and serve them until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ROOT, load_local_settings, read_host_json
from .functions import load_app
from .host import _serve_local_jwks, build_host, provision_resources
from .workers import _bound_socket, _fork_workers, _stop_workers, worker_process_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Azure Functions host for function_app.app")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUNCTIONS_HTTP_PORT", "7071")))
    parser.add_argument("--no-triggers", action="store_true", help="serve HTTP only")
    parser.add_argument("--blob-poll-interval", type=float, default=1.0, help="seconds between blob scans")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sys.path.insert(0, str(ROOT))
    load_local_settings(ROOT / "local.settings.json", os.environ)
    workers = worker_process_count(os.environ)
    sock = _bound_socket(args.host, args.port)
    provision_resources(os.environ)
    worker, children = _fork_workers(workers)
    host = build_host(load_app(args.app), read_host_json(ROOT / "host.json"), os.environ, args.blob_poll_interval)
    _serve_local_jwks(host)
    base = f"http://{args.host}:{args.port}"
    if worker == 0:
        print("Functions:", *host.describe(base), sep="\n", flush=True)
        print(f"DICOMweb: {base}/v2 ({workers} worker process{'es' if workers > 1 else ''})", flush=True)
    try:
        # Triggers run in the first worker only, as one host instance's listeners would.
        host.server(args.host, args.port, triggers=not args.no_triggers and worker == 0).run(sockets=[sock])
    finally:
        if worker:
            os._exit(0)
        _stop_workers(children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
