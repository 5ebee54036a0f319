from __future__ import annotations

import io

import pydicom

from dicomserver.dicomjson import dataset_to_json
from tests.dicomfiles import bundled, make_instance


def test_metadata_leaves_out_binary_attributes_and_pixel_data() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    out = dataset_to_json(ds)
    assert "7FE00010" not in out
    assert all(element["vr"] not in {"OB", "OW", "OF", "OD", "OL", "OV", "UN"} for element in out.values())
    assert out["0020000D"] == {"vr": "UI", "Value": [ds.StudyInstanceUID]}
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(ds.PatientName)}]}


def test_sequences_are_converted_recursively() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    item = pydicom.Dataset()
    item.CodeValue = "T-04000"
    item.add_new(0x60003000, "OW", b"\x00\x01")  # binary inside an item is left out too
    ds.AnatomicRegionSequence = [item]
    out = dataset_to_json(ds)
    assert out["00082218"]["Value"] == [{"00080100": {"vr": "SH", "Value": ["T-04000"]}}]


def test_non_ascii_names_survive() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance(patient_name="Müller^Jürgen")))
    assert dataset_to_json(ds)["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


def test_unencodable_value_is_left_out_and_reported() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    from pydicom.dataelem import RawDataElement

    # A raw element as read from a file whose IS value is not a number.
    ds._dict[pydicom.tag.Tag(0x00200013)] = RawDataElement(
        pydicom.tag.Tag(0x00200013), "IS", 12, b"not a number", 0, False, True
    )
    invalid: list[int] = []
    out = dataset_to_json(ds, invalid)
    assert "00200013" not in out
    assert invalid == [0x00200013]
