"""Search on any top-level attribute (``DICOM_SEARCH_ANY_ATTRIBUTE``) against the Cosmos stand-in."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import qido
from dicomserver.attributes import all_index_tags
from dicomserver.dicomjson import dataset_to_json, select
from dicomserver.errors import BadRequest
from dicomserver.identifiers import DEFAULT_PARTITION, Level
from dicomserver.qido import Resource, parse_search
from dicomserver.settings import Settings
from dicomserver.stores.model import IndexedInstance
from dicomserver.validation import instance_key
from dicomserver.wiring import Services, build_services, provision_services
from tests.dicomfiles import make_instance

STUDIES, SERIES, INSTANCES = Resource(Level.STUDY), Resource(Level.SERIES), Resource(Level.INSTANCE)


def add(services: Services, **kwargs: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(make_instance(**kwargs)), stop_before_pixels=True)  # type: ignore[arg-type]
    full = dataset_to_json(ds)
    services.index.add_instance(
        IndexedInstance(
            key=instance_key(ds, DEFAULT_PARTITION),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            size=1,
            attrs=select(full, all_index_tags()),
            metadata_json=json.dumps(full),
        )
    )
    return ds


def uids(services: Services, resource: Resource, key: str, value: str, tag: str) -> list[str]:
    parsed = parse_search(resource, [(key, value)], any_attribute=True)
    return sorted(r.attrs[tag]["Value"][0] for r in services.index.search(parsed.query).items)


def test_any_attribute_at_every_level(services: Services) -> None:
    studies = [generate_uid(), generate_uid()]
    series = [generate_uid(), generate_uid(), generate_uid()]
    sops = []
    for study, se, protocol, thickness, day, echo in (
        (studies[0], series[0], "Head Routine", "1.25", "20200101", 3),
        (studies[0], series[1], "Chest Lung", "5", "20210615", 4),
        (studies[1], series[2], "Abdomen", "2.5", "20221231", 3),
    ):
        ds = add(
            services,
            study=study,
            series=se,
            ProtocolName=protocol,
            SliceThickness=thickness,
            AcquisitionDate=day,
            EchoNumbers=echo,
        )
        sops.append(str(ds.SOPInstanceUID))
    st, se_, sop = "0020000D", "0020000E", "00080018"
    # instance level
    assert uids(services, INSTANCES, "ProtocolName", "head routine", sop) == [sops[0]]
    assert uids(services, INSTANCES, "00181030", "*lung", sop) == [sops[1]]
    assert uids(services, INSTANCES, "SliceThickness", "5.0", sop) == [sops[1]]
    assert uids(services, INSTANCES, "SliceThickness", "1.25", sop) == [sops[0]]
    assert uids(services, INSTANCES, "AcquisitionDate", "20210101-", sop) == sorted(sops[1:])
    assert uids(services, INSTANCES, "EchoNumbers", "3", sop) == sorted([sops[0], sops[2]])
    # series level: series with a matching instance
    assert uids(services, SERIES, "ProtocolName", "Chest Lung", se_) == [series[1]]
    assert uids(services, SERIES, "SliceThickness", "2.5", se_) == [series[2]]
    assert uids(services, SERIES, "AcquisitionDate", "-20201231", se_) == [series[0]]
    assert uids(services, SERIES, "EchoNumbers", "4", se_) == [series[1]]
    # study level: studies with a matching instance
    assert uids(services, STUDIES, "ProtocolName", "abdomen", st) == [studies[1]]
    assert uids(services, STUDIES, "SliceThickness", "5", st) == [studies[0]]
    assert uids(services, STUDIES, "AcquisitionDate", "20200101-20221231", st) == sorted(studies)
    assert uids(services, STUDIES, "EchoNumbers", "3", st) == sorted(studies)
    assert uids(services, STUDIES, "ProtocolName", "nothing", st) == []
    # combined with a core key, and counted
    parsed = parse_search(SERIES, [("ProtocolName", "*"), ("StudyInstanceUID", studies[0])], any_attribute=True)
    assert len(services.index.search(parsed.query).items) == 2
    parsed = parse_search(INSTANCES, [("EchoNumbers", "3")], any_attribute=True, count_only=True)
    assert services.index.search(parsed.query).count == 2


def test_turned_off(settings: Settings) -> None:
    assert Settings.from_env({"DICOM_SEARCH_ANY_ATTRIBUTE": "false"}).search_any_attribute is False
    services = build_services(dataclasses.replace(settings, search_any_attribute=False))
    provision_services(services)
    ds = add(services, ProtocolName="Head")
    with pytest.raises(BadRequest):
        asyncio.run(qido.search_for_instances(index=services.index, params=[("ProtocolName", "Head")]))
    doc = services.index._instances.read_item(  # type: ignore[attr-defined]
        f"{ds.SeriesInstanceUID}|{ds.SOPInstanceUID}", partition_key=f"{DEFAULT_PARTITION}|{ds.StudyInstanceUID}"
    )
    assert "x" not in doc
