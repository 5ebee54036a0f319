"""QIDO over HTTP returns what a viewer's study list needs without includefield (issue "Viewer-ready").

OHIF reads ModalitiesInStudy and NumberOfStudyRelatedInstances from a plain
``GET /studies``; PS3.18 Tables 10.6.3-3/-4/-5 require them (and RetrieveURL)
by default, which Azure v2's minimal defaults do not return.
"""

from __future__ import annotations

import io

import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.dicomfiles import make_instance


def test_default_study_series_and_instance_results_are_viewer_ready(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, ct = generate_uid(), generate_uid()
    patient = f"OHIF-{study[-8:]}"
    datasets = [
        pydicom.dcmread(
            io.BytesIO(
                make_instance(
                    study=study,
                    series=ct if modality == "CT" else None,
                    patient_id=patient,
                    modality=modality,
                    PatientSex="M",
                    StudyID="7",
                    SeriesDescription=f"{modality} series",
                )
            )
        )
        for modality in ("CT", "CT", "MR")
    ]
    assert len(client.store_instances(datasets).ReferencedSOPSequence) == 3

    (found,) = (pydicom.Dataset.from_json(s) for s in client.search_for_studies(search_filters={"PatientID": patient}))
    assert sorted(found.ModalitiesInStudy) == ["CT", "MR"]
    assert found.NumberOfStudyRelatedInstances == 3
    assert found.NumberOfStudyRelatedSeries == 2
    assert (found.StudyTime, found.StudyID, found.PatientSex) == ("101500", "7", "M")
    assert found.RetrieveURL == f"{base_url}/studies/{study}"

    series = [pydicom.Dataset.from_json(s) for s in client.search_for_series(study_instance_uid=study)]
    by_uid = {s.SeriesInstanceUID: s for s in series}
    assert by_uid[ct].NumberOfSeriesRelatedInstances == 2
    assert by_uid[ct].SeriesDescription == "CT series"
    assert by_uid[ct].SeriesNumber == 1
    assert by_uid[ct].RetrieveURL == f"{base_url}/studies/{study}/series/{ct}"

    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=ct)
    first = pydicom.Dataset.from_json(instances[0])
    assert first.SOPClassUID == datasets[0].SOPClassUID
    assert first.InstanceNumber == 1
    assert first.RetrieveURL == f"{base_url}/studies/{study}/series/{ct}/instances/{first.SOPInstanceUID}"
