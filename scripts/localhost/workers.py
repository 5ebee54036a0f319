"""The listening socket and ``FUNCTIONS_WORKER_PROCESS_COUNT`` pre-forked worker processes.

The port is claimed before the app loads; then ``count - 1`` more workers are forked to accept on
the same socket, as the Functions host spreads invocations over its language workers.  Each worker
loads the app itself; triggers run in the first worker only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping


def _bound_socket(host: str, port: int) -> socket.socket:
    """Claim the port before the app loads (a clear error if it is taken); uvicorn starts listening when ready."""
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on connections of sockets whose
    # proto says TCP; with proto 0 every response written in two parts waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"cannot listen on {host}:{port}: {exc.strerror} (is another host or `make run` running?)"
        ) from None
    return sock


def worker_process_count(environ: Mapping[str, str]) -> int:
    """``FUNCTIONS_WORKER_PROCESS_COUNT`` as the Functions host reads it: 1 (default) to 10."""
    text = environ.get("FUNCTIONS_WORKER_PROCESS_COUNT", "").strip()
    try:
        count = int(text) if text else 1
    except ValueError:
        raise SystemExit(f"FUNCTIONS_WORKER_PROCESS_COUNT must be an integer, got {text!r}") from None
    return max(1, min(count, 10))


def _fork_workers(count: int) -> tuple[int, list[int]]:
    """Fork ``count - 1`` more workers sharing the listening socket; returns (this worker's number, children).

    The kernel spreads connections over the processes accepting on the socket, as the
    Functions host spreads invocations over its language workers; each worker loads the
    app and builds its own clients.
    """
    children: list[int] = []
    for number in range(1, count):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return number, []
        children.append(pid)
    return 0, children


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker if the first worker dies (never an orphan on the port)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_workers(children: list[int], timeout: float = 15) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in children:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
