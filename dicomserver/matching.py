"""Normalisation shared by the index (at store time) and QIDO (at query time).

* Person names match ignoring case and accents: ``Müller^Jürgen`` is kept as
  ``muller jurgen`` and as the words ``["muller", "jurgen"]``; fuzzy matching
  is "every query word is a prefix of some name word".
* Other strings match ignoring case (accents count).
* Dates are kept as ``YYYYMMDD`` strings, so ranges are string comparisons.
* Times (TM) are kept as ``HHMMSS.ffffff`` strings (missing parts zero), ranges likewise.
* Integer Strings (IS) are kept as numbers, compared numerically.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\^=,\s]+")
_TIME = re.compile(r"(\d\d)(?::?(\d\d)(?::?(\d\d)(?:\.(\d{1,6}))?)?)?")


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


def fold_time(value: str, *, upper: bool = False) -> str | None:
    """A TM value as ``HHMMSS.ffffff`` (None when it is not a time).

    Missing parts are zero, or with ``upper`` their largest value (``"10"`` → ``"105959.999999"``),
    so a range ending at ``"10"`` includes all of 10 o'clock.  The ACR-NEMA ``HH:MM:SS`` form is accepted.
    """
    match = _TIME.fullmatch(value.strip(" \x00"))
    if match is None:
        return None
    hh, mm, ss, frac = match.groups()
    if int(hh) > 23 or (mm is not None and int(mm) > 59) or (ss is not None and int(ss) > 60):
        return None
    fill = "59" if upper else "00"
    fraction = (frac or "").ljust(6, "9" if upper and frac is None else "0")
    return f"{hh}{mm or fill}{ss or fill}.{fraction}"


def fold_number(value: object) -> int | None:
    """An IS value as an int (None when it is not an integer)."""
    try:
        return int(str(value).strip(" \x00"))
    except ValueError:
        return None
