"""Errors raised by the service, and the DICOM failure reason codes.

The tree (every class carries an HTTP ``status`` and an optional DICOM
``reason``; ``functions/_http.py`` is the one place that turns them into
responses)::

    DicomServerError (500)
    ├── BadRequest (400)              malformed request: path UID, query, header
    ├── Unauthorized (401)            missing or invalid bearer token
    ├── Forbidden (403)               valid token without the needed role
    ├── NotFound (404)                study/series/instance/frame not stored
    ├── NotAcceptable (406)           Accept cannot be satisfied
    ├── Conflict (409)                extended query tag already declared or supported
    ├── PayloadTooLarge (413)         request body over the configured cap
    ├── UnsupportedMediaType (415)    Content-Type not accepted
    └── DependencyUnavailable (503)   Blob Storage, Cosmos DB or a queue failed
        └── DependencyFailed (424)    ... refused the service's credentials (a missing role or key)

Failure reason codes come from the Azure DICOM service conformance statement
(v2, "Store failure reason codes") and PS3.18 / PS3.4 Annex B.
"""

from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    """FailureReason (0008,1197) and WarningReason (0008,1196) values."""

    #: General processing failure (0x0110).
    PROCESSING_FAILURE = 272
    #: Validation failed: missing/invalid required attribute, invalid UID (0xA900).
    VALIDATION_FAILURE = 43264
    #: StudyInstanceUID of the instance differs from the study in the URL (0xA901).
    MISMATCH_STUDY_INSTANCE_UID = 43265
    #: The same Study/Series/SOP instance is already stored (0xB00E).
    SOP_INSTANCE_ALREADY_EXISTS = 45070
    #: The same instance is being created by another request, or a failed earlier attempt has not been
    #: cleaned up yet (0xB00F).
    SOP_INSTANCE_BEING_CREATED = 45071
    #: Warning: the data set does not match the SOP class (0xB007); Azure v2 gives it to an Implicit VR
    #: Little Endian data set, whose VRs cannot be checked.
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 45063
    #: Warning (v2): the dataset has attributes that failed validation.
    DATASET_HAS_VALIDATION_WARNINGS = 1


class DicomServerError(Exception):
    """Base class: an error with an HTTP status and an optional reason code."""

    status: int = 500

    def __init__(self, message: str, *, reason: FailureReason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        #: Extra response headers (e.g. Content-Range of a 416).
        self.headers: dict[str, str] = {}


class BadRequest(DicomServerError):
    """The request is malformed (bad UID in the path, bad query parameter)."""

    status = 400


class Unauthorized(DicomServerError):
    """No valid bearer token was presented."""

    status = 401


class Forbidden(DicomServerError):
    """The caller is authenticated but lacks the role for this action."""

    status = 403


class NotFound(DicomServerError):
    """The addressed study, series, instance or frame does not exist."""

    status = 404


class NotAcceptable(DicomServerError):
    """No representation matching the Accept header can be produced."""

    status = 406


class PayloadTooLarge(DicomServerError):
    """The request body exceeds the configured limit."""

    status = 413


class RangeNotSatisfiable(DicomServerError):
    """The Range header asks for bytes outside the value (or for several ranges)."""

    status = 416

    def __init__(self, message: str, length: int) -> None:
        super().__init__(message)
        self.headers["Content-Range"] = f"bytes */{length}"


class UnsupportedMediaType(DicomServerError):
    """The Content-Type of the request is not accepted."""

    status = 415


class DependencyUnavailable(DicomServerError):
    """A backing service (Blob Storage, Cosmos DB, queue) failed or is unreachable.

    Raised only from ``stores/``, where Azure SDK exceptions are translated.
    """

    status = 503


class DependencyFailed(DependencyUnavailable):
    """A backing service refused the service's own request: its identity lacks a role, a key or
    a container it needs is gone (Azure v2 answers 424 Failed Dependency; retrying will not help
    until the deployment is fixed)."""

    status = 424


def dependency_error(message: str, status_code: int | None) -> DependencyUnavailable:
    """The error for a failed call to a backing service: 424 when the service refused our credentials
    (401, 403), else 503 (unavailable, throttled, timed out)."""
    if status_code in (401, 403):
        return DependencyFailed(message.replace("is unavailable", "refused the request"))
    return DependencyUnavailable(message)


class DuplicateInstance(DicomServerError):
    """The instance blob already exists (If-None-Match:* failed)."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=FailureReason.SOP_INSTANCE_ALREADY_EXISTS)


class Conflict(DicomServerError):
    """The request conflicts with what exists: an extended query tag already declared or already
    supported, a reindex already running, a study already being updated (Azure v2 answers 409)."""

    status = 409
