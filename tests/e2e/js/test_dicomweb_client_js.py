"""The JavaScript dicomweb-client (the library OHIF is built on) against the local host, from Node.

``dicomweb_roundtrip.js`` beside this file stores an instance (``storeInstances``), finds it
(``searchForStudies``, ``searchForInstances``) and retrieves its metadata and the instance; the
Python dicomweb-client does the same in ``tests/e2e/test_dicomweb.py``.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.dicomfiles import make_instance, zero_preamble

SCRIPT = Path(__file__).with_name("dicomweb_roundtrip.js")
ROOT = Path(__file__).resolve().parents[3]


def test_store_search_and_retrieve_with_the_js_client(base_url: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: install Node.js 20 (and `npm ci` for dicomweb-client)", pytrace=False)
    data = make_instance(modality="CT", rows=16, columns=16, patient_id="JS-CLIENT-1")
    ds = pydicom.dcmread(io.BytesIO(data))
    (tmp_path / "in.dcm").write_bytes(data)

    done = subprocess.run(
        [node, str(SCRIPT), base_url, str(tmp_path / "in.dcm"), str(tmp_path / "out.dcm")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID}
    assert result["stored"] == uids
    assert result["studies"] == [ds.StudyInstanceUID]
    assert result["instances"] == [ds.SOPInstanceUID]
    assert result["metadata"] == [{**uids, "patientId": "JS-CLIENT-1"}]
    assert (tmp_path / "out.dcm").read_bytes() == zero_preamble(data)
