"""The one STOW-RS-over-HTTP helper of the end-to-end tests (in-process STOW: ``tests/integration/test_stow.store``)."""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence

import httpx
import pydicom

from tests.dicomfiles import multipart_body


def stow(
    base_url: str,
    parts: Sequence[bytes],
    *,
    study: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> httpx.Response:
    """POST ``parts`` as ``multipart/related; type="application/dicom"`` to ``/studies[/{study}]``."""
    body, ctype = multipart_body(list(parts))
    url = f"{base_url}/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=body, headers={**(headers or {}), "Content-Type": ctype}, timeout=timeout)


def stored(
    base_url: str,
    parts: Sequence[bytes],
    *,
    study: str | None = None,
    headers: Mapping[str, str] | None = None,
    replace: bool = False,
    ok: Collection[int] = (200,),
) -> list[pydicom.Dataset]:
    """STOW ``parts`` and assert the status; ``replace`` first deletes their studies (files with fixed UIDs).

    Returns the datasets sent (headers only), in order.
    """
    datasets = [pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True) for p in parts]
    if replace:
        for uid in dict.fromkeys(ds.StudyInstanceUID for ds in datasets):
            httpx.delete(f"{base_url}/studies/{uid}", headers=dict(headers or {}))
    response = stow(base_url, parts, study=study, headers=headers)
    assert response.status_code in ok, response.text
    return datasets
