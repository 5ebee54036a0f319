"""Identifiers: UID grammar, resource levels and the key of a stored instance.

Two UID rules apply (Azure DICOM service v2 conformance statement):

* UIDs in a request *path* may be 1-64 digits and ``.`` (Azure's
  ``DicomElementMinimumValidation.ValidateUI``, which WADO, DELETE and STOW
  apply to path identifiers: letters are a 400, although the conformance
  statement's text allows them), but not dots only; anything else is a 400.
  A well-formed UID that is not stored is a 404, as in Azure.
* UIDs *inside a stored dataset* must follow the UI value representation
  (PS3.5 §9.1: components of digits separated by ``.``, no leading zero in a
  multi-digit component, at most 64 characters).  Only such UIDs ever become
  blob names or index keys, so no path can be injected through a dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import BadRequest

#: Data partition used when partitions are not enabled (Azure's default name).
DEFAULT_PARTITION = "Microsoft.Default"

_PATH_UID = re.compile(r"[0-9.]{1,64}")
_UI_VALUE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class Level(Enum):
    """A DICOM information-model level of a resource."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


def is_valid_uid(value: str) -> bool:
    """Return whether ``value`` is a valid UI value (PS3.5 §9.1, ≤ 64 chars)."""
    return 0 < len(value) <= 64 and _UI_VALUE.fullmatch(value) is not None


def parse_path_uid(value: str, name: str) -> str:
    """Validate a UID taken from a request path.

    Raises
    ------
    BadRequest
        If ``value`` is not 1-64 digits and ``.``, or only dots.
    """
    if _PATH_UID.fullmatch(value) is None or not value.strip("."):
        # Dot-only values ("." and "..") are refused too: they are path segments, not identifiers.
        raise BadRequest(f"The {name} '{value}' is invalid: a UID is 1-64 characters of digits and '.'.")
    return value


@dataclass(frozen=True, slots=True)
class StudyKey:
    """A study within a data partition."""

    partition: str
    study_instance_uid: str


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A series within a study."""

    partition: str
    study_instance_uid: str
    series_instance_uid: str

    @property
    def study(self) -> StudyKey:
        return StudyKey(self.partition, self.study_instance_uid)


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """A stored SOP instance: the address of its blobs and index documents."""

    partition: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    @property
    def study(self) -> StudyKey:
        return StudyKey(self.partition, self.study_instance_uid)

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.partition, self.study_instance_uid, self.series_instance_uid)
