"""HTTP route templates, matched and ranked as the Functions host (ASP.NET Core routing) does.

Templates as in ASP.NET: ``{name}``, ``{name?}``, ``{*rest}``, ``{name:constraint}`` (constraint
not checked) and ``{a}.{b}`` segments; literals match case-insensitively and the most specific
template wins (segment by segment, literal before parameter before catch-all).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .functions import InvocationContext

_PARAM = re.compile(
    r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<constraint>(?::[^{}?]+)?)(?P<optional>\?)?(?:=[^{}]*)?\}"
)
# Rank of a segment kind, lower is more specific (ASP.NET Core RoutePrecedence.ComputeInbound).
_LITERAL, _COMPLEX, _CONSTRAINED, _PARAMETER, _CATCH_ALL = 1, 2, 3, 4, 5


def compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The regex matching a route template and its precedence key (compare: lower wins)."""
    regex = ""
    ranks: list[int] = []
    for segment in (s for s in template.split("/") if s):
        whole = _PARAM.fullmatch(segment)
        if whole is None and "{" not in segment:
            regex += "/" + re.escape(segment)
            ranks.append(_LITERAL)
        elif whole is None:  # literals and parameters mixed, {name}.{ext}: greedy = ASP.NET's right-to-left match
            pieces, position = "", 0
            for match in _PARAM.finditer(segment):
                pieces += re.escape(segment[position : match.start()]) + f"(?P<{match.group('name')}>[^/]+)"
                position = match.end()
            regex += "/" + pieces + re.escape(segment[position:])
            ranks.append(_COMPLEX)
        elif whole.group("star"):
            regex += f"(?:/(?P<{whole.group('name')}>.*))?"
            ranks.append(_CATCH_ALL)
        elif whole.group("optional"):
            regex += f"(?:/(?P<{whole.group('name')}>[^/]+))?"
            ranks.append(_PARAMETER)
        else:
            regex += f"/(?P<{whole.group('name')}>[^/]+)"
            ranks.append(_CONSTRAINED if whole.group("constraint") else _PARAMETER)
    return re.compile(regex + "/?" if regex else "/?", re.IGNORECASE), tuple(ranks)


@dataclass
class Route:
    """One HTTP function at one route template."""

    name: str
    template: str
    methods: frozenset[str] | None
    handler: Callable[..., Any]
    arg_name: str = "req"
    wants_context: bool = False
    pattern: re.Pattern[str] = field(init=False)
    precedence: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.pattern, self.precedence = compile_route(self.template)

    def kwargs(self, request: Any) -> dict[str, Any]:
        kwargs = {self.arg_name: request}
        if self.wants_context:
            kwargs["context"] = InvocationContext(self.name)
        return kwargs
