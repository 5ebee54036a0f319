"""Where things live: blob names and queue message bodies.

These names are the storage contract every implementation (and every tool
that reads the storage account, such as the blob-triggered repair) shares,
so they belong to the port, not to the Azure code that writes them.
"""

from __future__ import annotations

import json
import re

from ..identifiers import InstanceKey, StudyKey, is_valid_uid

_BLOB_NAME = re.compile(
    r"(?P<partition>[A-Za-z0-9._-]{1,64})/(?P<study>[0-9.]+)/(?P<series>[0-9.]+)/(?P<sop>[0-9.]+)\.dcm"
)


def instance_blob_name(key: InstanceKey) -> str:
    """``{partition}/{study}/{series}/{sop}.dcm`` (UIDs are validated UI values)."""
    return f"{key.partition}/{key.study_instance_uid}/{key.series_instance_uid}/{key.sop_instance_uid}.dcm"


def parse_instance_blob_name(name: str) -> InstanceKey | None:
    """The key of a canonical instance blob name, or None for any other name."""
    match = _BLOB_NAME.fullmatch(name)
    if match is None:
        return None
    key = InstanceKey(match["partition"], match["study"], match["series"], match["sop"])
    if not all(is_valid_uid(u) for u in (key.study_instance_uid, key.series_instance_uid, key.sop_instance_uid)):
        return None
    return key


def metadata_blob_name(key: InstanceKey) -> str:
    """``{partition}/{study}/{series}/{sop}.json``."""
    return f"{key.partition}/{key.study_instance_uid}/{key.series_instance_uid}/{key.sop_instance_uid}.json"


def sync_message(study: StudyKey, attempt: int = 0) -> str:
    """The fhir-sync message body for ``study`` (``attempt`` counts back-off retries)."""
    body: dict[str, object] = {"partition": study.partition, "study": study.study_instance_uid}
    if attempt:
        body["attempt"] = attempt
    return json.dumps(body, separators=(",", ":"))


def parse_sync_message(body: bytes | str) -> tuple[StudyKey, int] | None:
    """``(study, attempt)`` from a fhir-sync message; None for a malformed one."""
    try:
        data = json.loads(body)
        study = StudyKey(str(data["partition"]), str(data["study"]))
        attempt = int(data.get("attempt", 0))
    except (ValueError, KeyError, TypeError):
        return None
    if not is_valid_uid(study.study_instance_uid):
        return None
    return study, attempt


def operation_message(operation_id: str) -> str:
    """The queue message of one step of an operation."""
    return json.dumps({"id": operation_id})


def parse_operation_message(body: bytes | str) -> str:
    """The operation id of a step message (``ValueError`` when malformed)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"operation message is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("operation message has no id")
    return str(data["id"])
