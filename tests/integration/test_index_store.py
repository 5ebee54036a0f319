from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pydicom
from pydicom.uid import generate_uid

from dicomserver.attributes import all_index_tags
from dicomserver.dicomjson import dataset_to_json, select
from dicomserver.identifiers import DEFAULT_PARTITION
from dicomserver.stores.model import IndexedInstance
from dicomserver.validation import instance_key
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance
from tests.search import study_search


def indexed(**kwargs: object) -> IndexedInstance:
    ds = pydicom.dcmread(io.BytesIO(make_instance(**kwargs)), stop_before_pixels=True)  # type: ignore[arg-type]
    return IndexedInstance(
        key=instance_key(ds, DEFAULT_PARTITION),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        size=100,
        attrs=select(dataset_to_json(ds), all_index_tags()),
    )


def search(services: Services, *pairs: tuple[str, str]) -> list[str]:
    page = services.index.search(study_search(pairs).query)
    return [r.attrs["0020000D"]["Value"][0] for r in page.items]


def test_instance_is_indexed_and_read_back(services: Services) -> None:
    inst = indexed()
    services.index.add_instance(inst)
    again = services.index.get_instance(inst.key)
    assert again is not None
    assert again.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert again.attrs == inst.attrs


def test_missing_instance_is_none(services: Services) -> None:
    assert services.index.get_instance(indexed().key) is None


def test_study_aggregates_stay_exact_under_parallel_stores(services: Services) -> None:
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    modalities = ["CT", "MR", "CT"]
    instances = [indexed(study=study, series=series[i % 3], modality=modalities[i % 3]) for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(services.index.add_instance, instances))
    page = services.index.search(study_search([("StudyInstanceUID", study)]).query)
    (record,) = page.items
    assert record.number_of_study_instances == 12
    assert record.number_of_study_series == 3
    assert record.modalities_in_study == ("CT", "MR")


def test_removing_instances_updates_and_finally_removes_the_study(services: Services) -> None:
    study = generate_uid()
    a, b = indexed(study=study, modality="CT"), indexed(study=study, modality="MR")
    services.index.add_instance(a)
    services.index.add_instance(b)
    services.index.remove_instance(b.key)
    (record,) = services.index.search(study_search([("StudyInstanceUID", study)]).query).items
    assert (record.number_of_study_instances, record.modalities_in_study) == (1, ("CT",))
    services.index.remove_instance(a.key)
    assert search(services, ("StudyInstanceUID", study)) == []


def test_search_matches_each_study_attribute(services: Services) -> None:
    one = indexed(patient_id="P-1", patient_name="Müller^Jürgen", study_date="20200105", accession="A1", modality="CT")
    two = indexed(patient_id="P-2", patient_name="Doe^John", study_date="20221231", accession="A2", modality="MR")
    for inst in (one, two):
        services.index.add_instance(inst)
    s1, s2 = one.key.study_instance_uid, two.key.study_instance_uid
    assert search(services, ("PatientID", "p-1")) == [s1]
    assert search(services, ("PatientName", "muller^jurgen")) == [s1]
    assert search(services, ("PatientName", "jur"), ("fuzzymatching", "true")) == [s1]
    assert search(services, ("PatientName", "ohn"), ("fuzzymatching", "true")) == []
    assert search(services, ("PatientName", "jo do"), ("fuzzymatching", "true")) == [s2]
    assert search(services, ("StudyDate", "20200105")) == [s1]
    assert search(services, ("StudyDate", "20200101-20201231")) == [s1]
    assert search(services, ("StudyDate", "20210101-")) == [s2]
    assert search(services, ("StudyDate", "-20200105")) == [s1]
    assert search(services, ("AccessionNumber", "A2")) == [s2]
    assert search(services, ("ModalitiesInStudy", "mr")) == [s2]
    assert sorted(search(services, ("StudyInstanceUID", f"{s1},{s2}"))) == sorted([s1, s2])
    assert search(services, ("PatientID", "P-1"), ("ModalitiesInStudy", "MR")) == []


def test_paging_is_in_arrival_order_without_repeats(services: Services) -> None:
    stored = []
    for _i in range(7):
        inst = indexed(patient_id="PAGING")
        services.index.add_instance(inst)
        stored.append(inst.key.study_instance_uid)
    pages = [search(services, ("PatientID", "PAGING"), ("limit", "3"), ("offset", str(o))) for o in (0, 3, 6, 9)]
    assert pages[0] + pages[1] + pages[2] == stored
    assert pages[3] == []
