"""Research cohorts across FHIR and DICOM: a FHIR search → the matching studies → their files.

:func:`find_studies` runs a FHIR R4 search on ``ImagingStudy`` or ``Patient``, passed to the
FHIR server as written (chained parameters, ``_has``: what the server supports decides),
with ``Prefer: handling=strict`` so a parameter the server does not support fails the search
instead of being ignored (which would silently widen the cohort).  It follows the Bundle's
``next`` links.  An ImagingStudy search asks for ``_include=ImagingStudy:subject`` and
``_include=ImagingStudy:endpoint`` (one round trip per page gives the patient and the DICOMweb
base URL); a Patient search is resolved to the patients' ImagingStudies with
``ImagingStudy?subject=Patient/a,Patient/b,...`` (50 patients a request, POST ``_search``).
A study's DICOMweb URL is its Endpoint's ``address`` + ``/studies/{StudyInstanceUID}``.

:func:`download_studies` lists each study's instances (QIDO-RS ``/studies/{s}/instances``) and
retrieves every instance over WADO-RS (``multipart/related; type="application/dicom";
transfer-syntax=*``: the bytes as stored), streamed through :class:`~dicomserver.multipart.MultipartReader`
into ``{dir}/{study}/{series}/{sop}.dcm`` (written to ``.part`` first, renamed when complete)
while hashing, on a thread pool.  ``manifest.json`` and ``manifest.csv`` list patient, study,
series, instance, file, sha256 and size; a file already listed there with the same sha256 is
not downloaded again, so an interrupted download resumes (the manifest is saved every 25 files
and when the run ends, even by an error or Ctrl-C).

Tokens come from a :class:`TokenSource` per service: a static token (local mode:
``python -m scripts.token``), none on loopback, else ``DefaultAzureCredential`` (built by ``wiring``)
for a configurable scope (FHIR: ``{fhir_url}/.default``; DICOM: the Azure DICOM service's
``https://dicom.healthcareapis.azure.com/.default`` or this app's ``DICOM_AUTH_AUDIENCE``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from .fhir.client import next_link
from .identifiers import parse_path_uid
from .mediatypes import APPLICATION_DICOM, APPLICATION_DICOM_JSON, parse_media_type
from .multipart import MultipartReader, PartData, PartEnd, PartStart

log = logging.getLogger(__name__)

#: The Azure DICOM service's token audience (the default DICOM scope is ``{this}/.default``).
AZURE_DICOM_AUDIENCE = "https://dicom.healthcareapis.azure.com"
DICOM_UID_SYSTEM = "urn:dicom:uid"
RETRIEVE_ACCEPT = f'multipart/related; type="{APPLICATION_DICOM}"; transfer-syntax=*'
MANIFEST_FIELDS = ("patient", "patient_name", "study", "series", "instance", "file", "sha256", "size")
_PATIENTS_PER_REQUEST = 50
_QIDO_PAGE = 200
_SAVE_EVERY = 25
_MAX_PAGES = 10_000


class CohortError(Exception):
    """The search or a download failed; the message says which request and why."""


class TokenSource:
    """Bearer tokens for one service: static, none, or from an Azure credential for ``scope``.

    Parameters
    ----------
    static:
        A token to send as it is (local mode), or None.
    scope:
        The Entra ID scope to ask the credential for when there is no static token; None
        (or a loopback service URL, see :meth:`for_url`) sends no token.
    credential:
        Builds the ``azure.identity`` credential (``DefaultAzureCredential``) on first use;
        ``wiring`` supplies it, since only ``wiring`` imports the Azure SDK.
    """

    def __init__(
        self, static: str | None = None, scope: str | None = None, credential: Callable[[], Any] | None = None
    ) -> None:
        self._static = static
        self._scope = scope
        self._make_credential = credential
        self._credential: Any = None
        self._lock = threading.Lock()

    @classmethod
    def for_url(
        cls, url: str, static: str | None, scope: str | None, credential: Callable[[], Any] | None = None
    ) -> TokenSource:
        """The token source for a service at ``url``: none on loopback unless a static token is given."""
        if static:
            return cls(static=static)
        host = httpx.URL(url).host
        if host in ("127.0.0.1", "localhost", "::1"):
            return cls()
        return cls(scope=scope, credential=credential)

    def __call__(self) -> str | None:
        """A token for the next request (the credential caches and refreshes it)."""
        if self._static:
            return self._static
        if not self._scope:
            return None
        with self._lock:
            if self._credential is None:
                if self._make_credential is None:
                    raise CohortError(f"No token for scope {self._scope!r}: pass a static token or a credential")
                self._credential = self._make_credential()
            return str(self._credential.get_token(self._scope).token)


@dataclass(frozen=True, slots=True)
class CohortStudy:
    """One study of the cohort, as FHIR describes it."""

    patient: str  # the Patient reference, "Patient/{id}"
    patient_name: str
    study_instance_uid: str
    modalities: tuple[str, ...]
    #: ``{Endpoint.address}/studies/{uid}``; None when the ImagingStudy has no Endpoint.
    study_url: str | None
    started: str | None = None


@dataclass(slots=True)
class ManifestEntry:
    """One downloaded instance (a row of manifest.json / manifest.csv)."""

    patient: str
    patient_name: str
    study: str
    series: str
    instance: str
    file: str
    sha256: str
    size: int


@dataclass(slots=True)
class DownloadResult:
    """What :func:`download_studies` did."""

    downloaded: int = 0
    skipped: int = 0
    bytes: int = 0
    entries: list[ManifestEntry] = field(default_factory=list)


# -- FHIR -------------------------------------------------------------------------------------------


class _Fhir:
    """GET/POST FHIR searches with a token and strict handling; errors as :class:`CohortError`."""

    def __init__(self, base_url: str, token: Callable[[], str | None], strict: bool, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = httpx.Client(timeout=timeout, headers={"Accept": "application/fhir+json"})
        self._prefer = "handling=strict" if strict else "handling=lenient"

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Prefer": self._prefer}
        if token := self._token():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _bundle(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise CohortError(f"FHIR {what} answered {response.status_code}{_outcome(response)}")
        body: dict[str, Any] = response.json()
        for issue in _issues(body):
            log.warning("FHIR %s: %s", what, issue)
        return body

    def get(self, url: str, what: str) -> dict[str, Any]:
        if not url.startswith(self.base_url + "/"):
            raise CohortError(f"FHIR link {url!r} is not under {self.base_url!r}; not following it with a token")
        try:
            return self._bundle(self._http.get(url, headers=self._headers()), what)
        except httpx.TransportError as exc:
            raise CohortError(f"FHIR {what} failed: {exc}") from exc

    def post_search(self, resource_type: str, params: list[tuple[str, str]], what: str) -> dict[str, Any]:
        try:
            response = self._http.post(
                f"{self.base_url}/{resource_type}/_search",
                content=urlencode(params),
                headers={**self._headers(), "Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.TransportError as exc:
            raise CohortError(f"FHIR {what} failed: {exc}") from exc
        return self._bundle(response, what)

    def pages(self, first: dict[str, Any], what: str) -> Iterator[dict[str, Any]]:
        """``first`` and every following page (the Bundle's ``next`` links)."""
        bundle = first
        for _ in range(_MAX_PAGES):
            yield bundle
            following = next_link(bundle)
            if not following:
                return
            bundle = self.get(str(following), what)
        raise CohortError(f"FHIR {what} returned more than {_MAX_PAGES} pages")

    def read(self, reference: str) -> dict[str, Any] | None:
        try:
            response = self._http.get(f"{self.base_url}/{reference}", headers=self._headers())
        except httpx.TransportError as exc:
            raise CohortError(f"FHIR read of {reference} failed: {exc}") from exc
        if response.status_code in (404, 410):
            return None
        return self._bundle(response, f"read of {reference}")


def _outcome(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    issues = _issues(body) if isinstance(body, dict) else []
    return f": {'; '.join(issues)}" if issues else ""


def _issues(body: dict[str, Any]) -> list[str]:
    """Diagnostics of an OperationOutcome (or of one included in a search Bundle)."""
    outcomes = [body] if body.get("resourceType") == "OperationOutcome" else []
    outcomes += [
        e["resource"]
        for e in body.get("entry") or []
        if isinstance(e, dict) and e.get("resource", {}).get("resourceType") == "OperationOutcome"
    ]
    return [
        f"{i.get('severity', '?')}: {i.get('diagnostics') or i.get('details', {}).get('text') or i.get('code', '')}"
        for o in outcomes
        for i in o.get("issue") or []
        if isinstance(i, dict)
    ]


def parse_search(search: str) -> tuple[str, list[tuple[str, str]]]:
    """``"ImagingStudy?modality=CT"`` → ``("ImagingStudy", [("modality", "CT")])``.

    Raises
    ------
    ValueError
        When the search is not on ImagingStudy or Patient.
    """
    resource_type, _, query = search.strip().lstrip("/").partition("?")
    if resource_type not in ("ImagingStudy", "Patient"):
        raise ValueError(
            f"The cohort search {search!r} must be a FHIR search on ImagingStudy or Patient, "
            "e.g. 'ImagingStudy?modality=CT' or 'Patient?birthdate=le1980-01-01'."
        )
    return resource_type, parse_qsl(query, keep_blank_values=True)


def _with_includes(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = list(params)
    for include in ("ImagingStudy:subject", "ImagingStudy:endpoint"):
        if ("_include", include) not in out:
            out.append(("_include", include))
    return out


def _entries(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict) and "resource" in e and e.get("search", {}).get("mode", "match") == mode
    ]


def find_studies(
    fhir_url: str,
    search: str,
    *,
    token: Callable[[], str | None] | None = None,
    study_params: str = "",
    strict: bool = True,
    timeout: float = 60.0,
) -> list[CohortStudy]:
    """The studies matching a FHIR search on ImagingStudy or Patient, sorted by patient and date.

    Parameters
    ----------
    fhir_url:
        The FHIR base URL.
    search:
        ``ImagingStudy?...`` or ``Patient?...``, sent as written.
    token:
        Bearer tokens for the FHIR server (None: no Authorization header).
    study_params:
        For a Patient search, ImagingStudy parameters that narrow the patients' studies
        (``modality=CT&modality=SR``).
    strict:
        Send ``Prefer: handling=strict`` (unsupported parameters fail the search).

    Raises
    ------
    ValueError
        When ``search`` is not on ImagingStudy or Patient.
    CohortError
        When the FHIR server refuses the search or cannot be reached.
    """
    resource_type, params = parse_search(search)
    fhir = _Fhir(fhir_url, token or (lambda: None), strict, timeout)
    try:
        studies: list[dict[str, Any]] = []
        resources: dict[str, dict[str, Any]] = {}
        extra = parse_qsl(study_params, keep_blank_values=True)
        if resource_type == "ImagingStudy":
            first = fhir.post_search("ImagingStudy", _with_includes(params + extra), "ImagingStudy search")
            _collect(fhir.pages(first, "ImagingStudy search"), studies, resources)
        else:
            first = fhir.post_search("Patient", params, "Patient search")
            patients = [p for page in fhir.pages(first, "Patient search") for p in _entries(page, "match")]
            resources.update({f"Patient/{p['id']}": p for p in patients})
            ids = [f"Patient/{p['id']}" for p in patients]
            for start in range(0, len(ids), _PATIENTS_PER_REQUEST):
                chunk = ",".join(ids[start : start + _PATIENTS_PER_REQUEST])
                query = _with_includes([("subject", chunk), *extra])
                first = fhir.post_search("ImagingStudy", query, "ImagingStudy search of the patients")
                _collect(fhir.pages(first, "ImagingStudy search of the patients"), studies, resources)
        return sorted(
            _cohort(fhir, studies, resources), key=lambda s: (s.patient, s.started or "", s.study_instance_uid)
        )
    finally:
        fhir.close()


def _collect(
    pages: Iterator[dict[str, Any]], studies: list[dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> None:
    seen = {s["id"] for s in studies}
    for page in pages:
        for study in _entries(page, "match"):
            if study.get("resourceType") == "ImagingStudy" and study["id"] not in seen:
                seen.add(study["id"])
                studies.append(study)
        for included in _entries(page, "include"):
            resources[f"{included['resourceType']}/{included['id']}"] = included


def _cohort(fhir: _Fhir, studies: list[dict[str, Any]], resources: dict[str, dict[str, Any]]) -> Iterator[CohortStudy]:
    def resolve(reference: str | None) -> dict[str, Any] | None:
        if not reference:
            return None
        if reference not in resources:  # a server that did not honour _include
            found = fhir.read(reference)
            if found is not None:
                resources[reference] = found
        return resources.get(reference)

    for study in studies:
        uid = next(
            (
                str(i["value"]).removeprefix("urn:oid:")
                for i in study.get("identifier") or []
                if i.get("system") == DICOM_UID_SYSTEM and i.get("value")
            ),
            None,
        )
        if uid is None:
            log.warning("ImagingStudy/%s has no DICOM study UID identifier; left out", study.get("id"))
            continue
        subject = (study.get("subject") or {}).get("reference", "")
        patient = resolve(subject) or {}
        endpoints = [resolve((e or {}).get("reference")) for e in study.get("endpoint") or []]
        address = next((str(e["address"]).rstrip("/") for e in endpoints if e and e.get("address")), None)
        modalities = [m.get("code") for m in study.get("modality") or []]
        if not modalities:
            modalities = [(s.get("modality") or {}).get("code") for s in study.get("series") or []]
        yield CohortStudy(
            patient=subject,
            patient_name=_display_name(patient),
            study_instance_uid=uid,
            modalities=tuple(sorted({m for m in modalities if m})),
            study_url=f"{address}/studies/{uid}" if address else None,
            started=study.get("started"),
        )


def _display_name(patient: dict[str, Any]) -> str:
    names = patient.get("name") or []
    preferred = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if not preferred:
        return ""
    if preferred.get("text"):
        return str(preferred["text"])
    return " ".join([*preferred.get("given", []), preferred.get("family", "")]).strip()


# -- DICOMweb download ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path) -> dict[tuple[str, str, str], ManifestEntry]:
    """The entries of ``directory/manifest.json`` by (study, series, instance); empty when absent.

    Raises
    ------
    CohortError
        When the manifest exists but cannot be read.
    """
    path = directory / "manifest.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())["instances"]
        entries = [ManifestEntry(**row) for row in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise CohortError(f"The manifest {path} is not readable ({exc}); move it away to download again") from exc
    return {(e.study, e.series, e.instance): e for e in entries}


def write_manifest(directory: Path, entries: Sequence[ManifestEntry], search: str) -> None:
    """Write ``manifest.json`` and ``manifest.csv`` (each replaced atomically)."""
    ordered = sorted(entries, key=lambda e: (e.patient, e.study, e.series, e.instance))
    body = {"search": search, "instances": [asdict(e) for e in ordered]}
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, directory / "manifest.json")
    tmp = directory / "manifest.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(asdict(e) for e in ordered)
    os.replace(tmp, directory / "manifest.csv")


@dataclass(frozen=True, slots=True)
class _Task:
    study: CohortStudy
    series: str
    instance: str


class _DicomWeb:
    def __init__(self, token: Callable[[], str | None], concurrency: int, timeout: float) -> None:
        limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
        self._http = httpx.Client(timeout=timeout, limits=limits)
        self._token = token

    def close(self) -> None:
        self._http.close()

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if token := self._token():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def list_instances(self, study: CohortStudy) -> list[tuple[str, str]]:
        """``(series, instance)`` UIDs of a study (QIDO-RS, paged)."""
        assert study.study_url is not None
        found: list[tuple[str, str]] = []
        offset = 0
        while True:
            url = f"{study.study_url}/instances"
            try:
                response = self._http.get(
                    url,
                    params={"limit": str(_QIDO_PAGE), "offset": str(offset)},
                    headers=self._headers(APPLICATION_DICOM_JSON),
                )
            except httpx.TransportError as exc:
                raise CohortError(f"QIDO-RS {url} failed: {exc}") from exc
            if response.status_code == 204:
                return found
            if response.status_code != 200:
                raise CohortError(f"QIDO-RS {url} answered {response.status_code}")
            rows = response.json()
            for row in rows:
                series = (row.get("0020000E") or {}).get("Value") or [""]
                instance = (row.get("00080018") or {}).get("Value") or [""]
                # UIDs become file names: refuse anything that is not a UID.
                found.append((parse_path_uid(str(series[0]), "series"), parse_path_uid(str(instance[0]), "instance")))
            if len(rows) < _QIDO_PAGE:
                return found
            offset += len(rows)

    def retrieve(self, task: _Task, target: Path) -> tuple[str, int]:
        """Stream one instance into ``target`` (via ``target.part``); returns (sha256, size)."""
        assert task.study.study_url is not None
        url = f"{task.study.study_url}/series/{task.series}/instances/{task.instance}"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        digest, size, parts = hashlib.sha256(), 0, 0
        try:
            with self._http.stream("GET", url, headers=self._headers(RETRIEVE_ACCEPT)) as response:
                if response.status_code != 200:
                    raise CohortError(f"WADO-RS {url} answered {response.status_code}")
                media = parse_media_type(response.headers.get("content-type", ""))
                boundary = media.param("boundary")
                if media.type != "multipart/related" or not boundary:
                    raise CohortError(f"WADO-RS {url} answered {media.type!r}, not multipart/related")
                reader = MultipartReader(boundary)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        for event in reader.feed(chunk):
                            if isinstance(event, PartStart):
                                parts += 1
                                if parts > 1:
                                    raise CohortError(f"WADO-RS {url} answered more than one part")
                            elif isinstance(event, PartData):
                                out.write(event.data)
                                digest.update(event.data)
                                size += len(event.data)
                            elif isinstance(event, PartEnd):
                                pass
                    reader.close()
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise CohortError(f"WADO-RS {url} failed: {exc}") from exc
        except Exception:
            partial.unlink(missing_ok=True)
            raise
        if parts != 1:
            partial.unlink(missing_ok=True)
            raise CohortError(f"WADO-RS {url} answered {parts} parts, expected one")
        os.replace(partial, target)
        return digest.hexdigest(), size


def download_studies(
    studies: Sequence[CohortStudy],
    directory: Path,
    *,
    token: Callable[[], str | None] | None = None,
    concurrency: int = 4,
    search: str = "",
    progress: bool = True,
    timeout: float = 300.0,
) -> DownloadResult:
    """Retrieve every instance of ``studies`` into ``directory`` and write the manifest (resumable).

    Raises
    ------
    ValueError
        When ``concurrency`` is not positive.
    CohortError
        When a study has no DICOMweb URL, or a listing or retrieval fails (after the manifest
        of what was completed is saved, so the next run resumes).
    """
    from tqdm import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    missing = [s.study_instance_uid for s in studies if s.study_url is None]
    if missing:
        raise CohortError(f"{len(missing)} studies have no Endpoint in FHIR, e.g. {missing[0]}; cannot download them")
    directory.mkdir(parents=True, exist_ok=True)
    previous = load_manifest(directory)
    web = _DicomWeb(token or (lambda: None), concurrency, timeout)
    result = DownloadResult()
    done: dict[tuple[str, str, str], ManifestEntry] = {}
    completed = False
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            listings = list(pool.map(web.list_instances, studies))
        tasks = [_Task(s, series, sop) for s, listing in zip(studies, listings, strict=True) for series, sop in listing]
        todo: list[tuple[_Task, Path]] = []
        for task in tasks:
            path = directory / task.study.study_instance_uid / task.series / f"{task.instance}.dcm"
            known = previous.get((task.study.study_instance_uid, task.series, task.instance))
            if known is not None and path.exists() and _sha256(path) == known.sha256:
                done[(known.study, known.series, known.instance)] = known
                result.skipped += 1
            else:
                todo.append((task, path))

        def fetch(item: tuple[_Task, Path]) -> ManifestEntry:
            task, path = item
            sha256, size = web.retrieve(task, path)
            return ManifestEntry(
                patient=task.study.patient,
                patient_name=task.study.patient_name,
                study=task.study.study_instance_uid,
                series=task.series,
                instance=task.instance,
                file=path.relative_to(directory).as_posix(),
                sha256=sha256,
                size=size,
            )

        with (
            tqdm(total=len(tasks), initial=result.skipped, unit="instance", disable=not progress) as bar,
            ThreadPoolExecutor(concurrency) as pool,
        ):
            futures = [pool.submit(fetch, item) for item in todo]
            try:
                for future in as_completed(futures):
                    entry = future.result()
                    done[(entry.study, entry.series, entry.instance)] = entry
                    result.downloaded += 1
                    result.bytes += entry.size
                    if result.downloaded % _SAVE_EVERY == 0:
                        write_manifest(directory, list({**previous, **done}.values()), search)
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        completed = True
    finally:
        web.close()
        if not completed and done:
            # Keep what is complete (and what earlier runs completed) so the next run resumes.
            write_manifest(directory, list({**previous, **done}.values()), search)
    write_manifest(directory, list(done.values()), search)
    result.entries = sorted(done.values(), key=lambda e: (e.patient, e.study, e.series, e.instance))
    return result
