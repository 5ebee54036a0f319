"""Shortcuts for building QIDO searches in tests."""

from __future__ import annotations

from collections.abc import Iterable

from dicomserver.identifiers import Level
from dicomserver.qido import Resource, Search, parse_search


def study_search(pairs: Iterable[tuple[str, str]]) -> Search:
    """Parse ``GET /studies`` parameters."""
    return parse_search(Resource(Level.STUDY), pairs)
