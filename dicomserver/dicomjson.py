"""DICOM JSON (PS3.18 Annex F) for metadata and search results.

Metadata leaves out binary attributes (OB, OD, OF, OL, OV, OW, UN), as the
Azure DICOM service v2 does ("Retrieve metadata"), so a metadata document
never carries pixel data.  An attribute whose value pydicom cannot encode is
left out and reported, mirroring Azure v2, which does not return attributes
that failed validation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

log = logging.getLogger(__name__)

JsonElement = dict[str, Any]
JsonDataset = dict[str, JsonElement]

#: Value representations never included in metadata (Azure v2).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})


def tag_key(tag: int | BaseTag) -> str:
    """Return the 8-hex-digit DICOM JSON key of ``tag``."""
    return f"{int(tag):08X}"


def element_to_json(elem: DataElement) -> JsonElement | None:
    """Convert one element; ``None`` when it is binary or cannot be encoded."""
    if elem.VR in BINARY_VRS:
        return None
    if elem.VR == "SQ":
        items: list[JsonDataset] = []
        for item in elem.value or []:
            items.append(dataset_to_json(item))
        out: JsonElement = {"vr": "SQ"}
        if items:
            out["Value"] = items
        return out
    try:
        return elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=2**62)
    except Exception as exc:  # pydicom raises many types for bad values
        log.debug("element %s left out of DICOM JSON: %s", elem.tag, exc)
        return None


def dataset_to_json(ds: Dataset, invalid: list[int] | None = None) -> JsonDataset:
    """Convert ``ds`` to a DICOM JSON object, without binary attributes.

    Parameters
    ----------
    ds:
        The dataset (file meta information is not included).
    invalid:
        When given, the tags of attributes that could not be encoded are appended.
    """
    out: JsonDataset = {}
    for tag in ds.keys():
        if tag.element == 0:  # group lengths are not part of DICOM JSON
            continue
        if _raw_vr(ds, tag) in BINARY_VRS:  # decided before the value is read
            continue
        try:
            converted = element_to_json(ds[tag])
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
    tag = Tag(keyword)
    return int(tag)
