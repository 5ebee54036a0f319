"""Normalisation shared by the index (at store time) and QIDO (at query time).

* Person names match ignoring case and accents: ``Müller^Jürgen`` is kept as
  ``muller jurgen`` and as the words ``["muller", "jurgen"]``; fuzzy matching
  is "every query word is a prefix of some name word".
* Other strings match ignoring case (accents count).
* Dates are kept as ``YYYYMMDD`` strings, so ranges are string comparisons.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\^=,\s]+")


def fold_text(value: str) -> str:
    """Case-insensitive form of a string value (trailing spaces/NULs removed)."""
    return value.strip(" \x00").casefold()


def fold_person_name(value: str) -> str:
    """Case- and accent-insensitive form of a PN value: words joined by one space."""
    return " ".join(person_name_words(value))


def person_name_words(value: str) -> list[str]:
    """The words of a PN value, case- and accent-folded."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return [w for w in _SEPARATORS.split(stripped.casefold()) if w]
