"""DICOMweb resource URLs: one immutable type that parses request paths and builds RetrieveURL and BulkDataURI.

A DICOMweb path is ``{base}/studies/{study}[/series/{series}[/instances/{sop}]]``
followed by at most one sub-resource (``metadata``, ``rendered``, ``thumbnail``,
``frames/{list}[/rendered]``, ``bulkdata/{path}``), PS3.18 §10.4.1.  Every UID
taken from a path is validated here (:func:`~dicomserver.identifiers.parse_path_uid`,
400 otherwise), so no other module splits paths by hand, and every absolute URL
the service returns (STOW's RetrieveURL, metadata's BulkDataURI) is built here
from the deployment's base URL (``.../v2``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import unquote

from .errors import BadRequest
from .identifiers import DEFAULT_PARTITION, InstanceKey, SeriesKey, StudyKey, parse_path_uid

#: Path segment → the level whose UID follows it.
_LEVELS = {"studies": "study", "series": "series", "instances": "instance"}
#: Last segments that name an action on a level rather than a UID: a search's count (dicomserver.qido),
#: Azure's bulk update (dicomserver.bulk_update).
_ACTIONS = frozenset({"count", "$bulkUpdate"})


@dataclass(frozen=True, slots=True)
class DicomWebUrl:
    """A study, series or instance resource under a DICOMweb base URL (``.../v2``), with its sub-resource."""

    base: str = ""
    partition: str = DEFAULT_PARTITION
    study: str | None = None
    series: str | None = None
    instance: str | None = None
    #: What follows the resource, undecoded: ``"metadata"``, ``"frames/1,2"``, ``"bulkdata/7FE00010"``...
    tail: str = ""

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, path: str, base: str = "", partition: str = DEFAULT_PARTITION) -> DicomWebUrl:
        """The resource a request path names (anything before ``studies``/``series``/``instances`` is ignored).

        Raises
        ------
        BadRequest
            When a UID in the path is not a valid UID.
        """
        segments = [s for s in path.split("/") if s]
        uids: dict[str, str] = {}
        end = 0
        i = 0
        while i < len(segments) - 1:
            level = _LEVELS.get(segments[i])
            if level is None or level in uids:
                if uids:  # past the resource: the rest is the sub-resource
                    break
                i += 1
                continue
            if segments[i + 1] in _ACTIONS and i + 2 == len(segments):
                break  # ``.../studies/count``, ``.../studies/$bulkUpdate``: an action on the level, not a UID
            uids[level] = parse_path_uid(segments[i + 1], f"{level} instance UID")
            i += 2
            end = i
        tail = "/".join(segments[end:]) if uids else ""
        return cls(base.rstrip("/"), partition, uids.get("study"), uids.get("series"), uids.get("instance"), tail)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def of_study(cls, base: str, study: StudyKey | str) -> DicomWebUrl:
        if isinstance(study, StudyKey):
            return cls(base.rstrip("/"), study.partition, study.study_instance_uid)
        return cls(base.rstrip("/"), DEFAULT_PARTITION, study)

    @classmethod
    def of_series(cls, base: str, series: SeriesKey) -> DicomWebUrl:
        return cls(base.rstrip("/"), series.partition, series.study_instance_uid, series.series_instance_uid)

    @classmethod
    def of_instance(cls, base: str, key: InstanceKey) -> DicomWebUrl:
        return cls(
            base.rstrip("/"), key.partition, key.study_instance_uid, key.series_instance_uid, key.sop_instance_uid
        )

    @property
    def url(self) -> str:
        """The absolute URL of the resource (no sub-resource): a RetrieveURL."""
        out = self.base
        if self.partition != DEFAULT_PARTITION:
            out += f"/partitions/{self.partition}"
        for segment, uid in (("studies", self.study), ("series", self.series), ("instances", self.instance)):
            if uid is None:
                break
            out += f"/{segment}/{uid}"
        return out

    @property
    def bulkdata_prefix(self) -> str:
        """What a BulkDataURI of this instance starts with (the attribute path follows, PS3.18 §8.4.1.2)."""
        return f"{self.require_instance().url}/bulkdata/"

    def bulkdata_uri(self, attribute_path: str) -> str:
        """The BulkDataURI of one binary attribute of this instance."""
        return self.bulkdata_prefix + attribute_path

    # -- the resource as keys ------------------------------------------------------------------

    def require_study(self) -> DicomWebUrl:
        if self.study is None:
            raise BadRequest("The request path names no study.")
        return self

    def require_series(self) -> DicomWebUrl:
        if self.series is None:
            raise BadRequest("The request path names no series.")
        return self.require_study()

    def require_instance(self) -> DicomWebUrl:
        if self.instance is None:
            raise BadRequest("The request path names no instance.")
        return self.require_series()

    @property
    def study_key(self) -> StudyKey:
        self.require_study()
        assert self.study is not None
        return StudyKey(self.partition, self.study)

    @property
    def series_key(self) -> SeriesKey:
        self.require_series()
        assert self.study is not None and self.series is not None
        return SeriesKey(self.partition, self.study, self.series)

    @property
    def instance_key(self) -> InstanceKey:
        self.require_instance()
        assert self.study is not None and self.series is not None and self.instance is not None
        return InstanceKey(self.partition, self.study, self.series, self.instance)

    # -- sub-resources -------------------------------------------------------------------------

    @property
    def frame_list(self) -> str:
        """The ``{frames}`` segment of ``.../frames/{frames}[/rendered]`` (400 when absent)."""
        parts = self.tail.split("/")
        if len(parts) < 2 or parts[0] != "frames" or not parts[1]:
            raise BadRequest("The request path names no frame list.")
        return parts[1]

    @property
    def bulkdata_path(self) -> str:
        """The percent-decoded attribute path of ``.../bulkdata/{path}`` (400 when absent)."""
        head, _, path = self.tail.partition("/")
        if head != "bulkdata" or not path:
            raise BadRequest("The request path names no bulk data attribute.")
        return unquote(path)

    def with_base(self, base: str) -> DicomWebUrl:
        return replace(self, base=base.rstrip("/"))
