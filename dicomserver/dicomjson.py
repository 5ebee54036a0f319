"""DICOM JSON (PS3.18 Annex F) for metadata and search results.

Binary attributes (OB, OD, OF, OL, OV, OW, UN) never carry their value: when
the store path located the value in the file (:mod:`dicomserver.bulkdata`) they
become a BulkDataURI (PS3.18 §F.2.6), otherwise they are left out, as the Azure
DICOM service v2 does; so a metadata document never carries pixel data.  An
attribute whose value pydicom cannot encode is left out and reported, mirroring
Azure v2, which does not return attributes that failed validation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from . import bulkdata

log = logging.getLogger(__name__)

JsonElement = dict[str, Any]
JsonDataset = dict[str, JsonElement]

#: Value representations never included in metadata (Azure v2).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})


def tag_key(tag: int | BaseTag) -> str:
    """Return the 8-hex-digit DICOM JSON key of ``tag``."""
    return f"{int(tag):08X}"


def element_to_json(elem: DataElement, bulk: bulkdata.BulkTable | None = None, path: str = "") -> JsonElement | None:
    """Convert one element; ``None`` when it cannot be encoded, or is binary without a bulk data entry.

    ``path`` is the element's bulk data path (:mod:`dicomserver.bulkdata`), ``bulk`` the file's table.
    """
    if elem.VR in BINARY_VRS:
        return _bulk_element(str(elem.VR), bulk, path or tag_key(elem.tag))
    if elem.VR == "SQ":
        items: list[JsonDataset] = []
        for i, item in enumerate(elem.value or []):
            items.append(dataset_to_json(item, bulk=bulk, prefix=f"{path or tag_key(elem.tag)}/{i}/"))
        out: JsonElement = {"vr": "SQ"}
        if items:
            out["Value"] = items
        return out
    try:
        return elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=2**62)
    except Exception as exc:  # pydicom raises many types for bad values
        log.debug("element %s left out of DICOM JSON: %s", elem.tag, exc)
        return None


def _bulk_element(vr: str, bulk: bulkdata.BulkTable | None, path: str) -> JsonElement | None:
    entry = bulk.get(path) if bulk else None
    if entry is None:
        return None
    vr = vr if vr in bulkdata.BULK_VRS else str(entry[2])
    if entry[1] == 0:
        return {"vr": vr}  # present but empty: nothing to fetch
    return dict(bulkdata.element(vr, path))


def dataset_to_json(
    ds: Dataset, invalid: list[int] | None = None, bulk: bulkdata.BulkTable | None = None, prefix: str = ""
) -> JsonDataset:
    """Convert ``ds`` to a DICOM JSON object; binary attributes as BulkDataURI when ``bulk`` locates them.

    Parameters
    ----------
    ds:
        The dataset (file meta information is not included).
    invalid:
        When given, the tags of attributes that could not be encoded are appended.
    bulk:
        The file's bulk data table (:func:`dicomserver.bulkdata.locate`); without it binary attributes are left out.
    prefix:
        The bulk data path of ``ds`` itself (``""`` for the top-level dataset).
    """
    out: JsonDataset = {}
    for tag in ds.keys():
        if tag.element == 0:  # group lengths are not part of DICOM JSON
            continue
        path = prefix + tag_key(tag)
        raw_vr = _raw_vr(ds, tag)
        if raw_vr in BINARY_VRS:  # decided before the value is read
            bulk_json = _bulk_element(raw_vr, bulk, path)
            if bulk_json is not None:
                out[tag_key(tag)] = bulk_json
            continue
        try:
            converted = element_to_json(ds[tag], bulk, path)
        except Exception as exc:
            log.debug("element %s left out of DICOM JSON: %s", tag, exc)
            converted = None
        if converted is None:
            if invalid is not None:
                invalid.append(int(tag))
            continue
        out[tag_key(tag)] = converted
    return out


def _raw_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of ``tag`` without converting (or reading a deferred) value."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def first_value(element: JsonElement | None) -> Any:
    """Return the first value of a DICOM JSON element, or ``None``."""
    if not element:
        return None
    values = element.get("Value")
    if not values:
        return None
    return values[0]


def select(attrs: JsonDataset, tags: Iterable[int]) -> JsonDataset:
    """Return the elements of ``attrs`` whose tags are in ``tags``."""
    out: JsonDataset = {}
    for tag in tags:
        key = tag_key(tag)
        if key in attrs:
            out[key] = attrs[key]
    return out


def keyword_tag(keyword: str) -> int:
    """Return the tag of a pydicom keyword (``ValueError`` if unknown)."""
    return int(Tag(keyword))


def keyword_key(keyword: str) -> str:
    """The DICOM JSON key (``"0020000D"``) of a pydicom keyword (``ValueError`` if unknown)."""
    return tag_key(keyword_tag(keyword))
