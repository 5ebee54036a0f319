"""QIDO at every level against the Cosmos emulator, asserting exact result sets."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import qido
from dicomserver.attributes import all_index_tags
from dicomserver.dicomjson import dataset_to_json, select
from dicomserver.identifiers import DEFAULT_PARTITION, Level
from dicomserver.qido import Resource, parse_search, result_dataset
from dicomserver.stores.model import IndexedInstance
from dicomserver.validation import instance_key
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance


def add(services: Services, **kwargs: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(make_instance(**kwargs)), stop_before_pixels=True)  # type: ignore[arg-type]
    services.index.add_instance(
        IndexedInstance(
            key=instance_key(ds, DEFAULT_PARTITION),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            size=1,
            attrs=select(dataset_to_json(ds), all_index_tags()),
        )
    )
    return ds


class World:
    """Two patients, three studies, five series, eight instances, under one test tag."""

    def __init__(self, services: Services) -> None:
        self.tag = generate_uid()[-10:]
        self.s1, self.s2, self.s3 = generate_uid(), generate_uid(), generate_uid()
        self.ct1, self.mr1, self.ct2, self.sr2, self.ct3 = (generate_uid() for _ in range(5))
        p1 = {"patient_id": f"A-{self.tag}", "patient_name": "Müller^Jürgen", "birth_date": "19600101"}
        p2 = {"patient_id": f"B-{self.tag}", "patient_name": "Doe^John", "birth_date": "19900515"}
        self.instances: dict[str, list[str]] = {}
        layout = [
            (self.s1, self.ct1, "CT", p1, "20200105", "Scanner X", 3),
            (self.s1, self.mr1, "MR", p1, "20200105", "Magnet Y", 1),
            (self.s2, self.ct2, "CT", p2, "20221231", "Scanner X", 2),
            (self.s2, self.sr2, "SR", p2, "20221231", "Reporter", 1),
            (self.s3, self.ct3, "CT", p1, "20230301", "Scanner Z", 1),
        ]
        for study, series, modality, patient, day, model, count in layout:
            for _ in range(count):
                ds = add(
                    services,
                    study=study,
                    series=series,
                    modality=modality,
                    study_date=day,
                    accession=f"ACC-{study[-6:]}",
                    ManufacturerModelName=model,
                    PerformedProcedureStepStartDate=day,
                    **patient,
                )
                self.instances.setdefault(series, []).append(str(ds.SOPInstanceUID))


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    yield World(services)


def run(
    services: Services, resource: Resource, *pairs: tuple[str, str], study: str | None = None, series: str | None = None
) -> list[dict]:  # type: ignore[type-arg]
    parsed = parse_search(resource, pairs, study_instance_uid=study, series_instance_uid=series)
    return [result_dataset(r, parsed.include) for r in services.index.search(parsed.query).items]


def values(results: list[dict], tag: str) -> list[str]:  # type: ignore[type-arg]
    return [r[tag]["Value"][0] for r in results]


SERIES = Resource(Level.SERIES)
INSTANCES = Resource(Level.INSTANCE)


def test_series_search_by_study_and_series_attributes(services: Services, world: World) -> None:
    w = world
    mine = ("PatientID", f"A-{w.tag}")
    assert values(run(services, SERIES, mine), "0020000E") == [w.ct1, w.mr1, w.ct3]
    assert values(run(services, SERIES, mine, ("Modality", "ct")), "0020000E") == [w.ct1, w.ct3]
    assert values(
        run(
            services,
            SERIES,
            ("PatientName", "jurg"),
            ("fuzzymatching", "true"),
            ("Modality", "CT"),
            ("StudyDate", "20230101-"),
        ),
        "0020000E",
    ) == [w.ct3]
    assert values(run(services, SERIES, ("ModalitiesInStudy", "SR"), ("Modality", "CT")), "0020000E") == [w.ct2]
    assert values(run(services, SERIES, ("ManufacturerModelName", "Scanner X"), mine), "0020000E") == [w.ct1]
    assert values(run(services, SERIES, ("ManufacturerModelName", "scanner*"), mine), "0020000E") == [w.ct1, w.ct3]
    assert values(
        run(services, SERIES, ("PerformedProcedureStepStartDate", "20200101-20201231"), mine), "0020000E"
    ) == [w.ct1, w.mr1]
    assert run(services, SERIES, mine, ("Modality", "SR")) == []


def test_series_results_carry_study_attributes_and_counts(services: Services, world: World) -> None:
    (ct1,) = run(services, SERIES, ("SeriesInstanceUID", world.ct1), ("includefield", "all"))
    assert ct1["00100020"]["Value"] == [f"A-{world.tag}"]  # study level, from the study document
    assert ct1["0020000D"]["Value"] == [world.s1]
    assert ct1["00201209"]["Value"] == [3]


def test_series_in_study(services: Services, world: World) -> None:
    scoped = Resource(Level.SERIES, study_in_path=True)
    results = run(services, scoped, study=world.s2)
    assert values(results, "0020000E") == [world.ct2, world.sr2]
    assert "00100020" not in results[0]  # /studies/{s}/series returns series attributes
    assert values(run(services, scoped, ("Modality", "SR"), study=world.s2), "0020000E") == [world.sr2]


def test_instance_searches_at_every_scope(services: Services, world: World) -> None:
    w = world
    mine = ("PatientID", f"A-{w.tag}")
    assert values(run(services, INSTANCES, mine, ("Modality", "MR")), "00080018") == w.instances[w.mr1]
    assert (
        values(run(services, INSTANCES, mine), "00080018")
        == w.instances[w.ct1] + w.instances[w.mr1] + w.instances[w.ct3]
    )
    in_study = Resource(Level.INSTANCE, study_in_path=True)
    assert values(run(services, in_study, ("Modality", "CT"), study=w.s2), "00080018") == w.instances[w.ct2]
    in_series = Resource(Level.INSTANCE, study_in_path=True, series_in_path=True)
    results = run(services, in_series, study=w.s1, series=w.ct1)
    assert values(results, "00080018") == w.instances[w.ct1]
    target = w.instances[w.ct1][1]
    assert values(run(services, in_series, ("SOPInstanceUID", target), study=w.s1, series=w.ct1), "00080018") == [
        target
    ]
    assert run(services, in_series, study=w.s1, series=w.ct2) == []  # series of another study


def test_instance_paging_never_repeats_or_skips(services: Services, world: World) -> None:
    mine = ("PatientID", f"A-{world.tag}")
    pages = [values(run(services, INSTANCES, mine, ("limit", "2"), ("offset", str(o))), "00080018") for o in (0, 2, 4)]
    everything = world.instances[world.ct1] + world.instances[world.mr1] + world.instances[world.ct3]
    assert pages[0] + pages[1] + pages[2] == everything


BASE = "https://dicom.example/v2"


def search(call: Any, services: Services, *pairs: tuple[str, str], **uids: str) -> list[dict[str, Any]]:
    """One qido.search_for_* call, as the HTTP functions make it (with the public base URL)."""
    return asyncio.run(call(index=services.index, params=list(pairs), base_url=BASE, **uids))  # type: ignore[no-any-return]


def test_defaults_are_what_a_viewer_needs_at_every_level(services: Services) -> None:
    """PS3.18 Tables 10.6.3-3/-4/-5 without includefield (the "Viewer-ready" issue)."""
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    patient = f"V-{study[-10:]}"
    common = {"study": study, "patient_id": patient, "StudyID": "S-42", "PatientSex": "F", "StudyTime": "093000"}
    cts = [
        add(
            services,
            series=ct,
            modality="CT",
            SeriesNumber=3,
            SeriesDescription="Axial",
            InstanceNumber=n,
            **common,
        )
        for n in (1, 2)
    ]
    add(services, series=mr, modality="MR", SeriesNumber=4, SeriesDescription="T1", InstanceNumber=1, **common)

    (found,) = search(qido.search_for_studies, services, ("PatientID", patient))
    assert found["00080030"]["Value"] == ["093000"]  # StudyTime
    assert found["00200010"]["Value"] == ["S-42"]  # StudyID
    assert found["00100040"]["Value"] == ["F"]  # PatientSex
    assert found["00080061"]["Value"] == ["CT", "MR"]  # ModalitiesInStudy
    assert found["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert found["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert found["00080056"]["Value"] == ["ONLINE"]  # InstanceAvailability
    assert found["00081190"]["Value"] == [f"{BASE}/studies/{study}"]  # RetrieveURL
    assert found["00080005"]["Value"] == ["ISO_IR 192"]  # SpecificCharacterSet
    assert "00101010" not in found  # PatientAge: not in the instance, so omitted

    series_url = f"{BASE}/studies/{study}/series/{ct}"
    (everywhere,) = search(qido.search_for_series, services, ("SeriesInstanceUID", ct))
    (in_study,) = search(qido.search_for_series, services, ("Modality", "CT"), study_instance_uid=study)
    for series in (everywhere, in_study):
        assert series["00200011"]["Value"] == [3]  # SeriesNumber
        assert series["0008103E"]["Value"] == ["Axial"]  # SeriesDescription
        assert series["00201209"]["Value"] == [2]  # NumberOfSeriesRelatedInstances
        assert series["00081190"]["Value"] == [series_url]
    assert everywhere["00080061"]["Value"] == ["CT", "MR"]  # /series also carries the study's attributes
    assert everywhere["00200010"]["Value"] == ["S-42"]
    assert "00200010" not in in_study and "00080061" not in in_study

    second = str(cts[1].SOPInstanceUID)
    instance_url = f"{series_url}/instances/{second}"
    (anywhere,) = search(qido.search_for_instances, services, ("SOPInstanceUID", second))
    (in_series,) = search(
        qido.search_for_instances,
        services,
        ("SOPInstanceUID", second),
        study_instance_uid=study,
        series_instance_uid=ct,
    )
    for instance in (anywhere, in_series):
        assert instance["00200013"]["Value"] == [2]  # InstanceNumber
        assert instance["00080016"]["Value"] == [str(cts[1].SOPClassUID)]  # SOPClassUID
        assert (instance["00280010"]["Value"], instance["00280011"]["Value"]) == ([8], [8])  # Rows, Columns
        assert instance["00280100"]["Value"] == [16]  # BitsAllocated
        assert instance["00081190"]["Value"] == [instance_url]
    assert anywhere["00200011"]["Value"] == [3]  # /instances: the series' and study's attributes too
    assert anywhere["00100040"]["Value"] == ["F"]
    assert anywhere["00201208"]["Value"] == [3]
    assert "00201209" not in anywhere  # the series count is not kept on instances: omitted, not 0
    assert "00200011" not in in_series and "00100040" not in in_series
