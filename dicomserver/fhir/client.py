"""A small FHIR R4 REST client with the conditional requests the sync needs.

``fhirclient``'s own transport cannot send ``If-Match`` / ``If-None-Exist``,
so requests go through httpx; resources are built and validated with
``fhirclient``'s models in :mod:`.mapping`.

Errors: 429, 5xx, timeouts and connection failures raise
:class:`TransientFhirError` (the queue retries the message); 412 raises
:class:`PreconditionFailed` (the sync re-reads and tries again); any other
4xx raises :class:`FhirError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirError(Exception):
    """The FHIR server refused a request (4xx other than 412 and 429)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientFhirError(FhirError):
    """Worth retrying later: 429, 5xx, timeout or no connection."""


class PreconditionFailed(FhirError):
    """412: the resource changed since it was read (or a conditional matched several)."""


class FhirClient:
    """Conditional REST calls against one FHIR base URL.

    Parameters
    ----------
    base_url:
        The FHIR base, e.g. ``https://ws-fhir.fhir.azurehealthcareapis.com``.
    token:
        Returns a bearer token for each request (None: no Authorization header).
    """

    def __init__(self, base_url: str, token: Callable[[], str | None] | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self._token is not None and (token := self._token()):
            headers["Authorization"] = f"Bearer {token}"
        if "json" in kwargs:
            headers["Content-Type"] = FHIR_JSON
        try:
            response = self._http.request(method, f"{self.base_url}/{path}", headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise TransientFhirError(f"FHIR {method} {path} failed: {exc}") from exc
        if response.status_code == 412:
            raise PreconditionFailed(f"FHIR {method} {path}: precondition failed", 412)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFhirError(f"FHIR {method} {path} answered {response.status_code}", response.status_code)
        if response.status_code >= 400:
            raise FhirError(
                f"FHIR {method} {path} answered {response.status_code}{_outcome_codes(response)}", response.status_code
            )
        return response

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Resources of the first page of a search (the sync's searches match at most a few).

        Sent as ``POST {type}/_search`` with a form body (FHIR R4 §3.1.0.8.1), so search values —
        patient identifiers — never appear in a URL, where HTTP logs, proxies and servers record them.
        """
        bundle = self._request("POST", f"{resource_type}/_search", data=params).json()
        return [
            entry["resource"]
            for entry in bundle.get("entry", [])
            if entry.get("search", {}).get("mode", "match") == "match"
        ]

    def search_all(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Resources of every page of a search (``POST _search``, then the bundle's ``next`` links)."""
        bundle = self._request("POST", f"{resource_type}/_search", data=params).json()
        found: list[dict[str, Any]] = []
        for _ in range(1000):  # a bound against a server whose next link never ends
            found += [
                entry["resource"]
                for entry in bundle.get("entry", [])
                if entry.get("search", {}).get("mode", "match") == "match"
            ]
            following = next_link(bundle)
            if following is None:
                return found
            bundle = self.get_url(following).json()
        raise FhirError(f"FHIR search of {resource_type} returned more than 1000 pages")

    def get_url(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET an absolute URL the server handed out (a paging link), with this client's token.

        Raises
        ------
        FhirError
            When ``url`` is not under this client's base URL (a token must not leave for another host).
        """
        if not url.startswith(self.base_url + "/") and not url.startswith(self.base_url + "?"):
            raise FhirError(f"FHIR paging link {url!r} is not under the base URL {self.base_url!r}")
        return self._request("GET", url[len(self.base_url) + 1 :], headers=headers or {})

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """GET a resource by id; None when it does not exist (404) or was deleted (410)."""
        try:
            body: dict[str, Any] = self._request("GET", f"{resource_type}/{resource_id}").json()
        except FhirError as exc:
            if exc.status in (404, 410):
                return None
            raise
        return body

    def update(self, resource: dict[str, Any], version_id: str | None = None) -> dict[str, Any]:
        """PUT a resource by id (update, or create with a client-chosen id).

        With ``version_id`` the write carries ``If-Match: W/"{version_id}"`` and
        fails with :class:`PreconditionFailed` if the resource changed.
        """
        headers = {"Prefer": "return=representation"}
        if version_id is not None:
            headers["If-Match"] = f'W/"{version_id}"'
        path = f"{resource['resourceType']}/{resource['id']}"
        return self._body_or_read(self._request("PUT", path, json=resource, headers=headers), resource["resourceType"])

    def delete(self, resource_type: str, resource_id: str, version_id: str | None = None) -> None:
        headers = {"If-Match": f'W/"{version_id}"'} if version_id is not None else {}
        try:
            self._request("DELETE", f"{resource_type}/{resource_id}", headers=headers)
        except FhirError as exc:
            if exc.status not in (404, 410):
                raise

    def _body_or_read(self, response: httpx.Response, resource_type: str) -> dict[str, Any]:
        if response.content:
            body: dict[str, Any] = response.json()
            if body.get("resourceType") == resource_type:
                return body
        location = response.headers.get("location") or response.headers.get("content-location")
        if not location:
            raise FhirError(f"FHIR {resource_type} write returned neither a body nor a Location")
        path = location.split(f"/{resource_type}/", 1)[1].split("/_history")[0]
        read: dict[str, Any] = self._request("GET", f"{resource_type}/{path}").json()
        return read


def next_link(bundle: dict[str, Any]) -> str | None:
    """The ``next`` link of a search Bundle (FHIR R4 §3.1.1.5.6), if any."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _outcome_codes(response: httpx.Response) -> str:
    """The severity/code pairs of an OperationOutcome (never its text: it may echo patient data)."""
    try:
        outcome = response.json()
    except ValueError:
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = [f"{i.get('severity', '?')}/{i.get('code', '?')}" for i in outcome.get("issue", []) if isinstance(i, dict)]
    return f" ({', '.join(issues[:5])})" if issues else ""
