"""What the local host reads before it loads the app: host.json, local.settings.json, app settings.

Mirrors the Functions host's configuration sources: :class:`HostConfig` holds the host.json
settings the host acts on (``extensions.http.routePrefix`` and ``extensions.queues``, with the
host's defaults); :func:`load_local_settings` copies ``local.settings.json`` ``Values`` into the
environment as Core Tools does (never overriding variables already set); :func:`resolve_settings`
resolves ``%SETTING%`` binding expressions from app settings; and the ``FUNCTIONS_*`` /
``PYTHON_THREADPOOL_THREAD_COUNT`` settings are read with the host's and worker's defaults.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The repository root: where function_app.py, host.json and local.settings.json live.
ROOT = Path(__file__).resolve().parents[2]

#: The Functions host's default ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` (bytes).
DEFAULT_REQUEST_BODY_LIMIT = 104_857_600
#: The host's shortest polling interval (QueuePollingIntervals.Minimum).
MIN_POLLING_INTERVAL = 0.1
TRUE_VALUES = ("1", "true", "yes")

_SETTING = re.compile(r"%([A-Za-z0-9_.:-]+)%")


def _duration(text: str | None, default: float) -> float:
    """Seconds of a host.json ``[d.]hh:mm:ss[.fff]`` duration."""
    if not text:
        return default
    value = str(text)
    days = 0.0
    if "." in value.split(":")[0]:
        head, _, value = value.partition(".")
        days = float(head)
    parts = [float(p) for p in value.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return days * 86400 + parts[-3] * 3600 + parts[-2] * 60 + parts[-1]


def resolve_settings(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` with app settings, as binding expressions do."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(f"the app setting {name} used in a binding is not set")
        return environ[name]

    return _SETTING.sub(value, text)


@dataclass(frozen=True)
class HostConfig:
    """What the host reads from host.json (defaults are the Functions host's)."""

    route_prefix: str = "api"
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> HostConfig:
        extensions = host_json.get("extensions", {}) or {}
        http = extensions.get("http", {}) or {}
        queues = extensions.get("queues", {}) or {}
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_duration(queues.get("visibilityTimeout"), 0.0),
            batch_size=max(1, min(32, int(queues.get("batchSize", 16)))),
            max_polling_interval=max(MIN_POLLING_INTERVAL, _duration(queues.get("maxPollingInterval"), 60.0)),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )


def read_host_json(path: Path) -> dict[str, Any]:
    """host.json as a dict (empty when the file does not exist)."""
    return json.loads(path.read_text()) if path.exists() else {}


def load_local_settings(path: Path, environ: MutableMapping[str, str]) -> None:
    """Copy ``Values`` of local.settings.json into the environment without overriding it (as Core Tools)."""
    if not path.exists():
        return
    document = json.loads(path.read_text())
    values = document.get("Values", {}) or {}
    for name, value in values.items():
        environ.setdefault(name, "" if value is None else str(value))
    # Host.CORS / Host.CORSCredentials: what func start answers CORS with (see cors.py).
    host = document.get("Host", {}) or {}
    if host.get("CORS"):
        environ.setdefault("DICOM_CORS_ORIGINS", str(host["CORS"]))
    if host.get("CORSCredentials") is not None:
        environ.setdefault("DICOM_CORS_CREDENTIALS", str(host["CORSCredentials"]).lower())


def _request_body_limit(environ: Mapping[str, str]) -> int:
    raw = environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "")
    return int(raw) if raw.strip() else DEFAULT_REQUEST_BODY_LIMIT


def _thread_count(environ: Mapping[str, str]) -> int:
    raw = environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    return int(raw) if raw.strip() else min(32, (os.cpu_count() or 1) + 4)
