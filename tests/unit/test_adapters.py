"""The HTTP adapters as a table: each function's transaction, core call and required action, checked without HTTP.

Authorization is decided in one place: every DICOMweb function declares its
:class:`Action` with ``@dicomweb(...)`` and :meth:`JwtAuthenticator.authorize`
maps roles to actions.  These tests read the registered functions of
``function_app.app`` (what the Functions host and the local host load).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

import function_app
from dicomserver import (
    bulk_update,
    changefeed,
    delete,
    extended_query_tags,
    operations,
    partitions,
    qido,
    stow,
    wado,
)
from dicomserver.auth import Action, JwtAuthenticator, Principal
from dicomserver.errors import Forbidden
from dicomserver.stow import StoreResponse
from dicomserver.wado import Retrieved
from functions._http import respond

#: HTTP method → the action a function answering it must declare.
ACTION_OF_METHOD = {
    "GET": Action.READ,
    "POST": Action.WRITE,
    "PUT": Action.WRITE,
    "PATCH": Action.WRITE,
    "DELETE": Action.DELETE,
}
#: Management routes whose every change (DELETE included) is the owner's Action.WRITE, not a data delete.
WRITE_ROUTES = ("v2/extendedquerytags",)
CORE = {
    "search_for": qido,
    "retrieve": wado,
    "store": stow,
    "delete": delete,
    "read_": changefeed,
    "get_operation": operations,
    "get_partitions": partitions,
    "upsert": stow,
    "bulk_update": bulk_update,
    "add_extended_query_tag": extended_query_tags,
    "list_extended_query_tag": extended_query_tags,
    "get_extended_query_tag": extended_query_tags,
    "delete_extended_query_tag": extended_query_tags,
    "update_extended_query_tag": extended_query_tags,
}


@functools.cache
def http_functions() -> dict[str, tuple[list[str], str, Any]]:
    """``{name: (methods, route, user function)}``; built once (the app's function list can be built only once)."""
    out = {}
    for function in function_app.app.get_functions():
        trigger = function.get_trigger()
        if getattr(trigger, "methods", None) is None:
            continue  # queue and blob triggers
        methods = [str(getattr(m, "value", m)).upper() for m in trigger.methods]
        out[function.get_function_name()] = (methods, trigger.route, function.get_user_function())
    return out


def test_every_http_function_declares_the_action_its_method_needs() -> None:
    functions = http_functions()
    assert len(functions) >= 20
    for name, (methods, route, user) in functions.items():
        declared = getattr(user, "action", None)
        assert declared is not None, f"{name} ({route}) is not a @dicomweb function"
        expected = {ACTION_OF_METHOD[m] for m in methods}
        if route.startswith(WRITE_ROUTES):
            expected = {Action.WRITE if a is Action.DELETE else a for a in expected}
        assert expected == {declared}, name


def test_functions_are_named_as_the_core_functions_they_call() -> None:
    for name in http_functions():
        prefix = max((p for p in CORE if name.startswith(p)), key=len)  # the most specific
        core_name = name.removesuffix("_in_partition").removesuffix("_in_study").removesuffix("_in_series")
        if not hasattr(CORE[prefix], core_name) and core_name.startswith(("retrieve_rendered_", "retrieve_thumbnail_")):
            core_name = core_name.removesuffix("_instance").removesuffix("_frame")  # one core function for both
        assert callable(getattr(CORE[prefix], core_name, None)), f"{name}: no {CORE[prefix].__name__}.{core_name}"


def test_the_function_keeps_the_signature_the_functions_worker_binds() -> None:
    import inspect

    _, _, user = http_functions()["search_for_studies"]
    assert list(inspect.signature(user).parameters) == ["req"]
    assert user.__name__ == "search_for_studies"


class _NoKeys:
    """Authorization reads no key: only roles and actions are involved."""

    def key(self, kid: str) -> Any:
        raise AssertionError("authorize must not need a signing key")


@pytest.fixture
def authenticator() -> JwtAuthenticator:
    return JwtAuthenticator(
        keys=_NoKeys(),
        issuers=["urn:test"],
        audiences=["aud"],
        owner_roles=["DICOM.Data.Owner"],
        reader_roles=["DICOM.Data.Reader"],
    )


@pytest.mark.parametrize("name", sorted(http_functions()))
def test_readers_may_only_read_and_owners_may_do_everything(authenticator: JwtAuthenticator, name: str) -> None:
    action = http_functions()[name][2].action
    authenticator.authorize(Principal("owner", frozenset({"DICOM.Data.Owner"})), action)
    reader = Principal("reader", frozenset({"DICOM.Data.Reader"}))
    if action is Action.READ:
        authenticator.authorize(reader, action)
    else:
        with pytest.raises(Forbidden):
            authenticator.authorize(reader, action)
    with pytest.raises(Forbidden):
        authenticator.authorize(Principal("nobody", frozenset()), action)


async def _chunks() -> AsyncIterator[bytes]:
    yield b"x"


def test_results_become_responses() -> None:
    assert respond(None).status_code == 204
    assert respond([]).status_code == 204
    found = respond([{"0020000D": {"vr": "UI", "Value": ["1"]}}])
    assert (found.status_code, found.media_type) == (200, "application/dicom+json")
    assert json.loads(found.body) == [{"0020000D": {"vr": "UI", "Value": ["1"]}}]
    stored = respond(StoreResponse(202, {"00081198": {"vr": "SQ", "Value": []}}))
    assert (stored.status_code, json.loads(stored.body)) == (202, {"00081198": {"vr": "SQ", "Value": []}})
    streamed = respond(Retrieved("application/dicom", _chunks(), {"ETag": '"1"'}, status=200))
    assert streamed.headers["etag"] == '"1"'
    assert streamed.media_type == "application/dicom"

    async def body() -> bytes:
        return b"".join([c async for c in streamed.body_iterator])  # type: ignore[misc]

    assert asyncio.run(body()) == b"x"
