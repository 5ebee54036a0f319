"""Bulk import from the import container: valid files are stored, rejects moved with a reason."""

from __future__ import annotations

import io

import pydicom

from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.ingest import Outcome, import_instance
from dicomserver.wiring import Services
from tests.dicomfiles import bundled, deeply_nested, make_instance, zero_preamble


def run_import(services: Services, name: str) -> Outcome:
    return import_instance(services.blobs, services.index, services.sync_queue, services.imports, name)


def key_of(data: bytes) -> InstanceKey:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_any_file_name_is_imported_to_its_canonical_place(services: Services) -> None:
    data = bundled("MR_small.dcm").read_bytes()
    services.imports.put_import("scanner 7/export (1)/IMG0001", data)
    assert run_import(services, "scanner 7/export (1)/IMG0001") is Outcome.INDEXED
    key = key_of(data)
    assert b"".join(services.blobs.iter_instance(key)) == zero_preamble(data)
    assert services.index.get_instance(key) is not None
    assert services.imports.list_imports() == []


def test_invalid_file_moves_to_errors_with_a_json_reason(services: Services) -> None:
    bad = make_instance(sop="1.2.3.abc")
    services.imports.put_import("bad.dcm", bad)
    assert run_import(services, "bad.dcm") is Outcome.REJECTED
    moved, reason = services.imports.read_error("bad.dcm")
    assert moved == bad
    assert reason["failureReason"] == 43264 and "1.2.3.abc" in str(reason["message"])
    assert services.imports.list_imports() == []


def test_import_is_idempotent_and_a_different_duplicate_is_rejected(services: Services) -> None:
    data = make_instance()
    services.imports.put_import("a.dcm", data)
    assert run_import(services, "a.dcm") is Outcome.INDEXED
    services.imports.put_import("a-again.dcm", data)  # same bytes: a retried drop
    assert run_import(services, "a-again.dcm") is Outcome.INDEXED
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientID = "CHANGED"
    changed = io.BytesIO()
    ds.save_as(changed)
    services.imports.put_import("a-changed.dcm", changed.getvalue())
    assert run_import(services, "a-changed.dcm") is Outcome.REJECTED
    assert services.imports.read_error("a-changed.dcm")[1]["failureReason"] == 45070
    assert run_import(services, "a-changed.dcm") is Outcome.GONE


def test_a_file_that_crashes_the_parser_is_rejected_with_272_not_retried_forever(services: Services) -> None:
    nested = deeply_nested(400)
    services.imports.put_import("nested.dcm", nested)
    assert run_import(services, "nested.dcm") is Outcome.REJECTED
    moved, reason = services.imports.read_error("nested.dcm")
    assert moved == nested and reason["failureReason"] == 272
    assert services.imports.list_imports() == []
