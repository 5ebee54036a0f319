"""Bulk import from the import container: valid files are stored, rejects moved with a reason."""

from __future__ import annotations

import io

import pydicom

from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.ingest import Outcome, import_instance
from dicomserver.wiring import Services
from tests.dicomfiles import bundled, deeply_nested, make_instance, zero_preamble
from tests.importdrop import list_imports, put_import, read_error


def run_import(services: Services, name: str) -> Outcome:
    return import_instance(services.blobs, services.index, services.sync_queue, services.imports, name)


def key_of(data: bytes) -> InstanceKey:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_any_file_name_is_imported_to_its_canonical_place(services: Services) -> None:
    data = bundled("MR_small.dcm").read_bytes()
    put_import(services.settings, "scanner 7/export (1)/IMG0001", data)
    assert run_import(services, "scanner 7/export (1)/IMG0001") is Outcome.INDEXED
    key = key_of(data)
    assert b"".join(services.blobs.iter_instance(key)) == zero_preamble(data)
    assert services.index.get_instance(key) is not None
    assert list_imports(services.settings) == []


def test_invalid_file_moves_to_errors_with_a_json_reason(services: Services) -> None:
    bad = make_instance(sop="1.2.3.abc")
    put_import(services.settings, "bad.dcm", bad)
    assert run_import(services, "bad.dcm") is Outcome.REJECTED
    moved, reason = read_error(services.settings, "bad.dcm")
    assert moved == bad
    assert reason["failureReason"] == 43264 and "1.2.3.abc" in str(reason["message"])
    assert list_imports(services.settings) == []


def test_import_is_idempotent_and_a_different_duplicate_is_rejected(services: Services) -> None:
    data = make_instance()
    put_import(services.settings, "a.dcm", data)
    assert run_import(services, "a.dcm") is Outcome.INDEXED
    put_import(services.settings, "a-again.dcm", data)  # same bytes: a retried drop
    assert run_import(services, "a-again.dcm") is Outcome.INDEXED
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientID = "CHANGED"
    changed = io.BytesIO()
    ds.save_as(changed)
    put_import(services.settings, "a-changed.dcm", changed.getvalue())
    assert run_import(services, "a-changed.dcm") is Outcome.REJECTED
    assert read_error(services.settings, "a-changed.dcm")[1]["failureReason"] == 45070
    assert run_import(services, "a-changed.dcm") is Outcome.GONE


def test_a_file_that_crashes_the_parser_is_rejected_with_272_not_retried_forever(services: Services) -> None:
    nested = deeply_nested(400)
    put_import(services.settings, "nested.dcm", nested)
    assert run_import(services, "nested.dcm") is Outcome.REJECTED
    moved, reason = read_error(services.settings, "nested.dcm")
    assert moved == nested and reason["failureReason"] == 272
    assert list_imports(services.settings) == []
