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
from collections.abc import Iterable
from dataclasses import dataclass, field
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


# -- extended query tags (Azure v2) -------------------------------------------------------------

#: VRs an extended query tag may have (Azure v2 "Extended query tags", Limitations).
EXTENDED_TAG_VRS = (
    "AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "PN", "SH", "SL", "SS", "TM", "UI", "UL", "US"
)  # fmt: skip
#: Longest value of each string VR (PS3.5 Table 6.2-1); PN: per component group.
_MAX_LENGTH = {"AE": 16, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "UI": 64, "PN": 64, "DT": 26}
_INTEGER_RANGE = {
    "IS": (-(2**31), 2**31 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "US": (0, 2**16 - 1),
}
_CS = re.compile(r"[A-Za-z0-9 _]*")  # lower case tolerated (common in the field), folded anyway
_AS = re.compile(r"\d{3}[DWMY]")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
_UID = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*")


def fold_extended(vr: str, value: object) -> tuple[str | int | float | None, str | None]:
    """Validate one value of an extended query tag of VR ``vr`` and normalise it as QIDO matches it.

    Returns ``(folded, None)``, ``(None, None)`` for an empty value (not indexed, not an error) or
    ``(None, reason)`` for a value that is not valid for the VR (Azure's validation messages).  The
    folded forms are any-attribute search's (:func:`fold_any`), so both match the same way.
    """
    if value is None:
        return None, None
    if vr == "PN":
        text = value.get("Alphabetic", "") if isinstance(value, dict) else str(value)
        if not text.strip(" \x00"):
            return None, None
        groups = text.split("=")
        if len(groups) > 3:
            return None, "Value contains more than 3 groups."
        if any(len(group.split("^")) > 5 for group in groups):
            return None, "Value contains more than 5 components."
        if any(len(group) > _MAX_LENGTH["PN"] for group in groups):
            return None, f"Value length exceeds maximum length of {_MAX_LENGTH['PN']}."
        return fold_person_name(text) or None, None
    if vr in ("FL", "FD", "SL", "SS", "UL", "US") and isinstance(value, int | float) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = str(value).strip(" \x00")
    if not text:
        return None, None
    limit = _MAX_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        return None, f"Value length exceeds maximum length of {limit}."
    if vr in _INTEGER_RANGE:
        number = fold_number(text)
        if number is None:
            return None, "Value is not a valid integer."
        low, high = _INTEGER_RANGE[vr]
        if not low <= number <= high:
            return None, f"Value is out of range for VR {vr}."
        return number, None
    if vr in ("DS", "FL", "FD"):
        decimal = fold_decimal(text)
        return (decimal, None) if decimal is not None else (None, "Value is not a valid number.")
    if vr == "DA":
        if not re.fullmatch(r"\d{8}", text) or not _is_date(text):
            return None, "Value cannot be parsed as a valid date."
        return text, None
    if vr == "TM":
        folded = fold_time(text)
        return (folded, None) if folded is not None else (None, "Value cannot be parsed as a valid time.")
    if vr == "DT":
        if not _DT.fullmatch(text) or (len(text) >= 8 and text[:8].isdigit() and not _is_date(text[:8])):
            return None, "Value cannot be parsed as a valid date time."
        return fold_text(text), None
    if vr == "UI":
        return (text, None) if _UID.fullmatch(text) else (None, "Value is not a valid UID.")
    if vr == "AS":
        if len(text) != 4:
            return None, "Value length is not 4."
        return (fold_text(text), None) if _AS.fullmatch(text) else (None, "Value contains invalid character.")
    if vr == "CS" and not _CS.fullmatch(text):
        return None, "Value contains invalid character."
    if any(ch in text for ch in "\\\r\n\f") or (vr == "AE" and not text.isprintable()):
        return None, "Value contains invalid character."
    return fold_text(text) or None, None


def _is_date(text: str) -> bool:
    import datetime

    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class ExtendedValues:
    """What one instance contributes to its declared extended query tags (:func:`extended_values`)."""

    #: ``{tag: [folded value]}``: the searchable value, as the ``x`` map keeps it.
    values: dict[str, list[Any]] = field(default_factory=dict)
    #: ``{tag: DICOM JSON element}``: returned by QIDO when asked for.
    elements: dict[str, Any] = field(default_factory=dict)
    #: ``{tag: message}``: values that failed validation (not indexed).
    errors: dict[str, str] = field(default_factory=dict)
    #: Tags without an indexable value here (absent, empty, other private creator, invalid).
    cleared: list[str] = field(default_factory=list)


def extended_values(dataset: dict[str, Any], tags: Iterable[tuple[str, str, str | None]]) -> ExtendedValues:
    """Validate and normalise the values of declared tags ``(path, vr, private_creator)`` in ``dataset``.

    As Azure v2: only the first value of a multi-valued element is indexed; an empty value is not
    indexed and is no error; a value that fails the VR's validation or an element whose VR differs
    from the declared one is an error.  A private tag counts only when its block's Private Creator
    is the declared one.
    """
    out = ExtendedValues()
    for path, vr, creator in tags:
        element = dataset.get(path)
        if not isinstance(element, dict) or not _creator_matches(dataset, path, creator):
            out.cleared.append(path)
            continue
        found_vr = element.get("vr")
        values = element.get("Value") or []
        if found_vr and found_vr != vr and values:
            out.errors[path] = (
                f"The extended query tag '{path}' is expected to have VR '{vr}' but has '{found_vr}' in file."
            )
            out.cleared.append(path)
            continue
        folded, error = fold_extended(vr, values[0] if values else None)
        if error is not None:
            shown = values[0].get("Alphabetic", "") if isinstance(values[0], dict) else values[0]
            out.errors[path] = f"Dicom element '{path}' with value '{shown}' failed validation for VR '{vr}': {error}"
            out.cleared.append(path)
        elif folded is None:
            out.cleared.append(path)
        else:
            out.values[path] = [folded]
            out.elements[path] = {"vr": vr, "Value": [values[0]]}
    return out


def _creator_matches(dataset: dict[str, Any], path: str, creator: str | None) -> bool:
    if not int(path[:4], 16) % 2:
        return True
    block = f"{path[:4]}00{path[4:6]}"
    element = dataset.get(block) or dataset.get(block.lower()) or {}
    found = (element.get("Value") or [None])[0] if isinstance(element, dict) else None
    return found is not None and str(found).strip(" \x00") == (creator or "")
