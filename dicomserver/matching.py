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
from typing import Any

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


# -- any attribute (``DICOM_SEARCH_ANY_ATTRIBUTE``) ------------------------------------------

#: VRs whose values are kept for any-attribute search, by how they are normalised.
TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "SH", "UC", "LT", "ST", "UT", "UR"})
INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
SEARCHABLE_VRS = TEXT_VRS | INTEGER_VRS | DECIMAL_VRS | {"DA", "DT", "TM", "PN", "UI"}
#: Longest value (characters) and most values of one attribute kept for any-attribute search.
MAX_ANY_VALUE_LENGTH = 64
MAX_ANY_VALUES = 16


def fold_any(vr: str, value: object) -> str | int | float | None:
    """One value of an attribute of VR ``vr`` as any-attribute search keeps it (None: not kept)."""
    if value is None:
        return None
    if vr == "PN":
        text = value.get("Alphabetic", "") if isinstance(value, dict) else str(value)
        return fold_person_name(text) or None if len(text) <= MAX_ANY_VALUE_LENGTH else None
    text = str(value)
    if len(text) > MAX_ANY_VALUE_LENGTH:
        return None
    if vr in INTEGER_VRS:
        return fold_number(text)
    if vr in DECIMAL_VRS:
        return fold_decimal(text)
    if vr == "TM":
        return fold_time(text)
    if vr == "UI":
        return text.strip(" \x00") or None
    return fold_text(text) or None  # DA, DT and text VRs


def fold_decimal(value: object) -> int | float | None:
    """A DS/FL/FD value as a number (None when it is not one); integral values are ints."""
    try:
        number = float(str(value).strip(" \x00"))
    except ValueError:
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def any_attribute_values(dataset: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """``{tag: [normalised values]}`` of the top-level attributes of DICOM JSON ``dataset``.

    Only public attributes of :data:`SEARCHABLE_VRS` (no sequences, no binary VRs, no group
    lengths), values of at most :data:`MAX_ANY_VALUE_LENGTH` characters, the first
    :data:`MAX_ANY_VALUES` of them; tags in ``skip`` (the core keys, searched elsewhere) are left out.
    """
    out: dict[str, list[Any]] = {}
    for tag, element in dataset.items():
        if len(tag) != 8 or tag in skip or int(tag[:4], 16) % 2 or tag.endswith("0000"):
            continue
        if not isinstance(element, dict) or element.get("vr") not in SEARCHABLE_VRS:
            continue
        vr = element["vr"]
        folded = [fold_any(vr, v) for v in (element.get("Value") or ())[:MAX_ANY_VALUES]]
        kept = [v for v in folded if v is not None]
        if kept:
            out[tag.upper()] = kept
    return out
