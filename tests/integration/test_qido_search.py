"""PS3.18 Table 10.6.1-5 search keys, ``orderby`` and ``/count`` against the Cosmos stand-in."""

from __future__ import annotations

import asyncio

import pytest
from pydicom.uid import generate_uid

from dicomserver import qido
from dicomserver.errors import BadRequest
from dicomserver.identifiers import Level
from dicomserver.qido import Resource, parse_search, result_dataset
from dicomserver.wiring import Services
from tests.integration.test_qido_levels import add, values

STUDIES, SERIES, INSTANCES = Resource(Level.STUDY), Resource(Level.SERIES), Resource(Level.INSTANCE)


class Data:
    """Three studies (distinct times and IDs); study 1 has series 2, 10 and 1 of 1, 3 and 1 instances."""

    def __init__(self, services: Services) -> None:
        self.studies = [generate_uid() for _ in range(3)]
        self.series = [generate_uid() for _ in range(3)]
        self.sops: list[str] = []
        for study, time, sid, day in (
            (self.studies[1], "101500.5", "S-2", "20210101"),
            (self.studies[2], "231000", "S-3", "20220101"),
        ):
            add(services, study=study, StudyTime=time, StudyID=sid, study_date=day, patient_name=f"Pat^{sid}")
        s1 = self.studies[0]
        for series, number, description, count in zip(
            self.series, (2, 10, 1), ("Axial", "Coronal", "Scout"), (1, 3, 1), strict=True
        ):
            for n in range(count):
                ds = add(
                    services,
                    study=s1,
                    series=series,
                    StudyTime="083000",
                    StudyID="S-1",
                    study_date="20200101",
                    patient_name="Pat^S-1",
                    SeriesNumber=number,
                    SeriesDescription=description,
                    PerformedProcedureStepStartTime="0700",
                    InstanceNumber=(1, 10, 2)[n],
                )
                self.sops.append(str(ds.SOPInstanceUID))


@pytest.fixture
def data(services: Services) -> Data:
    return Data(services)


def run(services: Services, resource: Resource, *pairs: tuple[str, str], study: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    parsed = parse_search(resource, pairs, study_instance_uid=study)
    return [result_dataset(r, parsed.include) for r in services.index.search(parsed.query).items]


def count(services: Services, resource: Resource, *pairs: tuple[str, str], study: str | None = None) -> int:
    parsed = parse_search(resource, pairs, study_instance_uid=study, count_only=True)
    result = services.index.search(parsed.query).count
    assert result is not None
    return result


def test_every_new_key_matches(services: Services, data: Data) -> None:
    s1, s2, s3 = data.studies
    uid = lambda results: values(results, "0020000D")  # noqa: E731
    assert uid(run(services, STUDIES, ("StudyTime", "101500.5"))) == [s2]
    assert uid(run(services, STUDIES, ("StudyTime", "10"))) == [s2]  # to the precision given
    assert uid(run(services, STUDIES, ("StudyTime", "0800-1100"))) == [s2, s1]  # arrival order
    assert uid(run(services, STUDIES, ("StudyTime", "1200-"))) == [s3]
    assert uid(run(services, STUDIES, ("StudyID", "s-3"))) == [s3]
    assert uid(run(services, STUDIES, ("StudyID", "S-*"))) == [s2, s3, s1]
    series = lambda results: values(results, "0020000E")  # noqa: E731
    assert series(run(services, SERIES, ("SeriesNumber", "10"))) == [data.series[1]]
    assert series(run(services, SERIES, ("SeriesNumber", "010"))) == [data.series[1]]  # numeric
    assert series(run(services, SERIES, ("SeriesDescription", "cor*"))) == [data.series[1]]
    assert len(run(services, SERIES, ("PerformedProcedureStepStartTime", "0600-0800"))) == 3
    assert series(run(services, SERIES, ("StudyTime", "0830"), ("SeriesNumber", "1"))) == [data.series[2]]
    sops = lambda results: values(results, "00080018")  # noqa: E731
    assert len(run(services, INSTANCES, ("InstanceNumber", "10"))) == 1
    assert sops(run(services, INSTANCES, ("InstanceNumber", "2"), ("SeriesNumber", "10"))) == [data.sops[3]]
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert len(run(services, INSTANCES, ("SOPClassUID", ct))) == 7
    assert run(services, INSTANCES, ("SOPClassUID", "1.2.3")) == []


def test_orderby_sorts_and_pages_stably(services: Services, data: Data) -> None:
    s1, s2, s3 = data.studies
    uid = lambda results: values(results, "0020000D")  # noqa: E731
    assert uid(run(services, STUDIES, ("orderby", "-StudyTime"))) == [s3, s2, s1]
    assert uid(run(services, STUDIES, ("orderby", "StudyDate"))) == [s1, s2, s3]
    assert uid(run(services, STUDIES, ("orderby", "-PatientName"))) == [s3, s2, s1]
    in_study = Resource(Level.SERIES, study_in_path=True)
    paged = [
        run(services, in_study, ("orderby", "SeriesNumber"), ("limit", "1"), ("offset", str(o)), study=s1)[0]
        for o in range(3)
    ]
    assert [r["00200011"]["Value"][0] for r in paged] == [1, 2, 10]  # numerically, page by page
    everywhere = values(run(services, SERIES, ("orderby", "-SeriesNumber")), "00200011")
    assert everywhere == sorted(everywhere, reverse=True) and everywhere[:2] == [10, 2]
    by_study = run(services, SERIES, ("StudyID", "S-1"), ("orderby", "-SeriesNumber"))
    assert values(by_study, "00200011") == [10, 2, 1]  # merged over study batches
    instances = Resource(Level.INSTANCE, study_in_path=True)
    pages = [
        values(
            run(services, instances, ("orderby", "-InstanceNumber"), ("limit", "2"), ("offset", str(o)), study=s1),
            "00080018",
        )
        for o in (0, 2, 4)
    ]
    flat = [sop for page in pages for sop in page]
    assert sorted(flat) == sorted(data.sops) and len(set(flat)) == 5  # no repeat, no skip
    ordered = values(run(services, instances, ("orderby", "-InstanceNumber"), study=s1), "00200013")
    assert ordered == [10, 2, 1, 1, 1]
    assert values(run(services, instances, ("orderby", "-InstanceNumber"), study=s1), "00080018") == flat


def test_counts_equal_the_results(services: Services, data: Data) -> None:
    s1 = data.studies[0]
    assert count(services, STUDIES) == 3 == len(run(services, STUDIES))
    assert count(services, STUDIES, ("StudyTime", "-1100")) == 2
    assert count(services, SERIES) == 5  # three series in study 1, one in each other study
    assert count(services, SERIES, ("StudyID", "S-1")) == 3 == len(run(services, SERIES, ("StudyID", "S-1")))
    assert count(services, Resource(Level.SERIES, study_in_path=True), study=s1) == 3
    assert count(services, INSTANCES) == 7
    assert count(services, INSTANCES, ("SeriesNumber", "10")) == 3
    assert count(services, Resource(Level.INSTANCE, study_in_path=True), ("InstanceNumber", "1"), study=s1) == 3
    assert count(services, STUDIES, ("StudyID", "nope")) == 0
    found = asyncio.run(qido.search_for_studies_count(index=services.index, params=[("StudyID", "S-2")]))
    assert found == {"count": 1}


def test_unsupported_orderby_is_a_400(services: Services) -> None:
    for bad in ("Modality", "PatientSex", "StudyDate,StudyTime", "Nonsense"):
        with pytest.raises(BadRequest):
            parse_search(STUDIES, [("orderby", bad)])
