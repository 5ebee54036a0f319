"""Offline type check of infra/**/*.bicep against Azure's published resource types (Azure/bicep-types-az).

The type data is a trimmed copy, committed in ``tests/data/bicep-types/types.json`` and written by
``python -m scripts.refresh_bicep_types /path/to/bicep-types-az``.  The Bicep files are read with pycep
(the project's offline Bicep parser); there is no Bicep compiler here, so this is a subset of what
``bicep build`` checks:

* every ``resource`` declaration's ``Type@apiVersion`` exists in the data;
* a resource body (not ``existing``) against the resource's body type, recursively: unknown properties,
  properties in the wrong case, read-only properties that are set, missing required properties, and
  values of the wrong type (string, int, bool, object, array, string enums/literal unions, string
  lengths and integer ranges of literals, discriminated objects such as ``Microsoft.Web/sites/config``);
  ``parent`` must name a resource of the parent type;
* every ``module``: only declared parameters, every parameter without a default (or ``?``) passed,
  parameter values of the declared kind (and among ``@allowed``);
* every read ``module.outputs.x`` names a declared output and every read ``resource.a.b`` names a
  readable property of Azure's type; output values match the output's declared kind.

Values are checked when their type is known offline: literals, variables (through their value),
parameters (their declared type and ``@allowed`` values), string interpolations, both branches of a
ternary, a few functions with a fixed result type, and reads of resource properties and module outputs.
Anything else (other operators, most functions, lambdas, user-defined types) is accepted.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser
from pycep.models import BicepElement

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DATA_DIR = Path(__file__).resolve().parent / "data" / "bicep-types"
DATA_FILE = DATA_DIR / "types.json"
REFRESH = "python -m scripts.refresh_bicep_types /path/to/bicep-types-az"

# ObjectTypePropertyFlags of bicep-types (src/bicep-types/src/types.ts)
REQUIRED, READ_ONLY, WRITE_ONLY, DEPLOY_TIME_CONSTANT, IDENTIFIER = 1, 2, 4, 8, 16
#: keys of a resource body that Bicep handles itself (not part of the Azure type)
BICEP_RESOURCE_KEYS = frozenset({"parent", "scope", "dependsOn"})
#: keys of a module body
MODULE_KEYS = frozenset({"name", "params", "scope", "dependsOn"})
INDEX = object()  # an array index in a property path ([0], [i])


def bicep_files(infra: Path = INFRA) -> list[Path]:
    return sorted(infra.rglob("*.bicep"))


def display(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


####################
# the regex view: every `resource` declaration, nested ones resolved to their full type
####################


@dataclass(frozen=True)
class Declaration:
    file: Path
    line: int
    symbol: str  # pycep's name: nested resources are parent__child
    type: str  # full type, e.g. Microsoft.Storage/storageAccounts/blobServices
    version: str | None
    existing: bool
    nested: bool

    @property
    def key(self) -> str:
        return f"{self.type}@{self.version or ''}"


_RESOURCE = re.compile(
    r"\bresource\s+(?P<symbol>[A-Za-z_]\w*)\s+'(?P<type>[^'@\s]+)(?:@(?P<version>[^'\s]+))?'"
    r"(?P<existing>\s+existing)?\s*="
)


def _string_end(text: str, i: int) -> int:
    """The index after the single-quoted string starting at text[i] (handles escapes and ${...})."""
    j, n = i + 1, len(text)
    while j < n:
        if text[j] == "\\":
            j += 2
        elif text[j] == "'":
            return j + 1
        elif text.startswith("${", j):
            j = _expression_end(text, j + 2)
        else:
            j += 1
    return n


def _expression_end(text: str, j: int) -> int:
    depth, n = 0, len(text)
    while j < n:
        c = text[j]
        if c == "'":
            j = _string_end(text, j)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return j + 1
            depth -= 1
        j += 1
    return n


def mask(text: str) -> tuple[str, str]:
    """(code, skeleton): comments blanked in both, string contents also blanked in the skeleton.

    Offsets and line breaks are kept, so positions in either map to the original text.
    """
    code, skeleton = list(text), list(text)
    i, n = 0, len(text)

    def blank(chars: list[str], start: int, end: int) -> None:
        for k in range(start, end):
            if chars[k] != "\n":
                chars[k] = " "

    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(code, i, end)
            blank(skeleton, i, end)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            blank(code, i, end)
            blank(skeleton, i, end)
            i = end
        elif text.startswith("'''", i):
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            blank(skeleton, i + 3, end - 3)
            i = end
        elif text[i] == "'":
            end = _string_end(text, i)
            blank(skeleton, i + 1, end - 1)
            i = end
        else:
            i += 1
    return "".join(code), "".join(skeleton)


def body_span(skeleton: str, start: int) -> tuple[int, int]:
    """The span of the first {...} at or after start (the body of a declaration)."""
    open_at = skeleton.find("{", start)
    if open_at < 0:
        return start, start
    depth = 0
    for k in range(open_at, len(skeleton)):
        if skeleton[k] == "{":
            depth += 1
        elif skeleton[k] == "}":
            depth -= 1
            if depth == 0:
                return open_at, k + 1
    return open_at, len(skeleton)


def resource_declarations(path: Path, text: str | None = None) -> list[Declaration]:
    """Every `resource` declaration of a Bicep file, by regex (nested child resources included)."""
    text = path.read_text() if text is None else text
    code, skeleton = mask(text)
    found: list[tuple[tuple[int, int], Declaration]] = []
    for match in _RESOURCE.finditer(code):
        if skeleton[match.start() : match.start() + 8] != "resource":
            continue  # inside a string
        parents = [(span, d) for span, d in found if span[0] < match.start() < span[1]]
        written, version = match["type"], match["version"]
        symbol, full, nested = match["symbol"], written, False
        if parents:
            (_, parent) = max(parents, key=lambda item: item[0][0])  # the innermost
            nested = True
            symbol = f"{parent.symbol}__{symbol}"
            if not written.lower().startswith(parent.type.lower() + "/"):
                full = f"{parent.type}/{written}"
            version = version or parent.version
        declaration = Declaration(
            file=path,
            line=text.count("\n", 0, match.start()) + 1,
            symbol=symbol,
            type=full,
            version=version,
            existing=bool(match["existing"]),
            nested=nested,
        )
        found.append((body_span(skeleton, match.end()), declaration))
    return [d for _, d in found]


def used_resource_types(infra: Path = INFRA) -> dict[str, list[Declaration]]:
    """Type@version -> its declarations, over every Bicep file under infra."""
    used: dict[str, list[Declaration]] = {}
    for path in bicep_files(infra):
        for declaration in resource_declarations(path):
            used.setdefault(declaration.key, []).append(declaration)
    return dict(sorted(used.items(), key=lambda item: item[0].lower()))


####################
# the type data
####################


class TypeData:
    def __init__(self, data: dict[str, Any]) -> None:
        self.source: dict[str, Any] = data["source"]
        self.types: list[dict[str, Any]] = data["types"]
        self.resources: dict[str, dict[str, Any]] = data["resources"]
        self._by_lower = {key.lower(): key for key in self.resources}

    def canonical(self, key: str) -> str | None:
        return self._by_lower.get(key.lower())

    def resource(self, key: str) -> dict[str, Any] | None:
        canonical = self.canonical(key)
        return None if canonical is None else self.node(self.resources[canonical]["type"])

    def node(self, ref: dict[str, str] | str) -> dict[str, Any]:
        pointer = ref["$ref"] if isinstance(ref, dict) else ref
        return self.types[int(pointer.removeprefix("#/"))]


@cache
def load_type_data(path: Path = DATA_FILE) -> TypeData:
    return TypeData(json.loads(path.read_text()))


def missing_type_data(infra: Path = INFRA, data: TypeData | None = None) -> list[str]:
    """A message for every Type@version used under infra without type data."""
    data = data or load_type_data()
    messages = []
    for key, declarations in used_resource_types(infra).items():
        if any(d.version is None for d in declarations):
            continue  # the checker reports a missing API version
        if data.canonical(key) is None:
            where = ", ".join(f"{display(d.file)}:{d.line}" for d in declarations)
            messages.append(
                f"{key} ({where}) has no type data in {display(DATA_FILE)}: if it is a real type and API "
                f"version, run `{REFRESH}` and commit the result"
            )
    return messages


####################
# the checker
####################


@dataclass(frozen=True)
class Violation:
    file: str
    subject: str  # e.g. "resource account (Microsoft.Storage/storageAccounts@2023-05-01)"
    path: str  # property path, e.g. "properties.minimumTlsVersion"
    message: str

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.file}: {self.subject}:{where} {self.message}"


# abstract values: what is known offline about an expression
@dataclass(frozen=True)
class Known:
    """A value of a known kind (string, int, bool, object, array), its literal value when known."""

    kind: str
    value: Any = None
    literal: bool = False


@dataclass(frozen=True)
class ObjectLiteral:
    items: dict[str, Any]  # key -> expression
    env: Env


@dataclass(frozen=True)
class ArrayLiteral:
    items: list[Any]
    env: Env


@dataclass(frozen=True)
class LoopValue:
    """[for x in y: body]: an array whose items are body, with x bound."""

    body: Any
    env: Env


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class FromType:
    """A value typed by a node of the type data (a resource property read)."""

    ref: str


UNKNOWN = None  # an abstract value about which nothing is known


@dataclass(frozen=True)
class Env:
    """Local names (loop and lambda variables) over the file's symbols."""

    locals: tuple[tuple[str, Any], ...] = ()

    def bind(self, name: str, value: Any) -> Env:
        return Env(((name, value), *self.locals))

    def lookup(self, name: str) -> tuple[bool, Any]:
        for bound, value in self.locals:
            if bound == name:
                return True, value
        return False, None


# pycep function names -> the kind of their result (functions not listed: unknown)
FUNCTION_KINDS = {
    **dict.fromkeys(
        (
            "base64 base64_to_string data_uri data_uri_to_string date_time_add format guid join new_guid "
            "pad_left replace resource_id string subscription_resource_id substring tenant_resource_id to_lower "
            "to_upper trim unique_string uri uri_component uri_component_to_string utc_now extension_resource_id "
            "management_group_resource_id"
        ).split(),
        "string",
    ),
    **dict.fromkeys("bool contains empty ends_with starts_with".split(), "bool"),
    **dict.fromkeys("date_time_to_epoch index_of int last_index_of length".split(), "int"),
    **dict.fromkeys("flatten pick_zones range split".split(), "array"),
    **dict.fromkeys("deployment environment management_group resource_group subscription tenant".split(), "object"),
}
PARAM_KINDS = {"string": "string", "securestring": "string", "int": "int", "bool": "bool"}
PARAM_KINDS |= {"object": "object", "secureobject": "object", "array": "array"}
NODE_KINDS = {"StringType": "string", "StringLiteralType": "string", "IntegerType": "int", "BooleanType": "bool"}
NODE_KINDS |= {"ObjectType": "object", "DiscriminatedObjectType": "object", "ArrayType": "array"}


def is_expression(value: Any) -> bool:
    """A pycep expression node (function call, operator, lambda, loop) rather than an object literal."""
    if not isinstance(value, dict):
        return False
    if len(value) == 1 and "function" in value:
        return isinstance(value["function"], dict) and "type" in value["function"]
    if len(value) == 1 and "operator" in value:
        return isinstance(value["operator"], dict) and "operands" in value["operator"]
    if value.get("type") == "lambda_expression" and "detail" in value:
        return True
    return is_loop(value)


def is_loop(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"loop_type", "condition", "config"}


def is_condition(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"condition", "config"}


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def flatten(expr: Any) -> list[Any]:
    """An accessor chain a.b[0].c (pycep nests these either way) as [a, 'b', INDEX, 'c']."""
    if isinstance(expr, dict) and len(expr) == 1 and isinstance(expr.get("operator"), dict):
        operator = expr["operator"]
        operands = operator.get("operands", {})
        if operator.get("type") == "property_accessor":
            return flatten(operands["operand_1"]) + flatten(operands["operand_2"])
        if operator.get("type") == "nested_resource_accessor":
            first, rest = flatten(operands["operand_1"]), flatten(operands["operand_2"])
            if first and rest and isinstance(first[-1], str) and isinstance(rest[0], str):
                return [*first[:-1], f"{first[-1]}__{rest[0]}", *rest[1:]]
            return [*first, *rest]
        if operator.get("type") == "index_accessor":
            index = operands["operand_2"]
            literal = isinstance(index, str) and not isinstance(index, BicepElement) and "${" not in index
            return flatten(operands["operand_1"]) + [index if literal else INDEX]
    return [expr]


@dataclass
class Module:
    path: Path
    params: dict[str, dict[str, Any]]
    nullable: set[str]
    outputs: dict[str, dict[str, Any]]


@dataclass
class FileChecker:
    path: Path
    data: TypeData
    tree: dict[str, Any]
    declarations: dict[str, Declaration]
    violations: list[Violation] = field(default_factory=list)
    subject: str = ""
    _resolving: set[str] = field(default_factory=set)
    _modules: dict[str, Module | None] = field(default_factory=dict)

    # reporting

    def error(self, path: str, message: str) -> None:
        violation = Violation(display(self.path), self.subject, path, message)
        if violation not in self.violations:
            self.violations.append(violation)

    # the file's symbols

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.tree.get("resources", {})
        return resources

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        modules: dict[str, dict[str, Any]] = self.tree.get("modules", {})
        return modules

    def resource_key(self, symbol: str) -> str:
        declaration = self.declarations.get(symbol)
        if declaration is not None:
            return declaration.key
        resource = self.resources[symbol]
        type_name, _, version = resource["type"].partition("@")
        return f"{type_name}@{version or resource['api_version']}"

    def module(self, symbol: str) -> Module | None:
        if symbol not in self._modules:
            self._modules[symbol] = load_module(self.path, self.modules[symbol])
        return self._modules[symbol]

    # evaluation: what is known about an expression

    def evaluate(self, expr: Any, env: Env) -> Any:
        if expr is None:
            return Known("null", None, literal=True)
        if isinstance(expr, bool | int):
            return Known(kind_of(expr), expr, literal=True)
        if isinstance(expr, BicepElement):
            return self.evaluate_name(str(expr), env)
        if isinstance(expr, str):
            return Known("string") if "${" in expr else Known("string", expr, literal=True)
        if isinstance(expr, list):
            return ArrayLiteral(expr, env)
        if not isinstance(expr, dict):
            return UNKNOWN
        if is_loop(expr):
            return LoopValue(expr["config"], self.bind_loop(expr["loop_type"], env))
        if not is_expression(expr):
            return ObjectLiteral({unquote(k): v for k, v in expr.items()}, env)
        if "function" in expr:
            kind = FUNCTION_KINDS.get(expr["function"]["type"])
            return Known(kind) if kind else UNKNOWN
        if "operator" in expr:
            operator = expr["operator"]
            operands = operator.get("operands", {})
            if operator["type"] == "conditional":
                return Choice((self.evaluate(operands["true_value"], env), self.evaluate(operands["false_value"], env)))
            if operator["type"] == "minus" and isinstance(operands.get("integer_value"), int):
                return Known("int", -operands["integer_value"], literal=True)
            if operator["type"] in {"property_accessor", "index_accessor", "nested_resource_accessor"}:
                return self.evaluate_read(flatten(expr), env)
        return UNKNOWN  # other operators (pycep's precedence is not Bicep's), lambdas

    def evaluate_name(self, name: str, env: Env) -> Any:
        bound, value = env.lookup(name)
        if bound:
            return value
        parameter = self.tree.get("parameters", {}).get(name)
        if parameter is not None:
            return parameter_value(parameter)
        variable = self.tree.get("variables", {}).get(name)
        if variable is not None:
            if name in self._resolving:
                return UNKNOWN
            self._resolving.add(name)
            saved, self.violations = self.violations, []  # its own errors are reported once, under `var name`
            try:
                return self.evaluate(variable["value"], Env())
            finally:
                self._resolving.discard(name)
                self.violations = saved
        if name in self.resources or name in self.modules:
            return Known("object")
        return UNKNOWN

    def bind_loop(self, loop_type: dict[str, Any], env: Env) -> Env:
        detail = loop_type.get("detail", {})
        source = self.evaluate(detail.get("array_name"), env) if "array_name" in detail else UNKNOWN
        item: Any = UNKNOWN
        if isinstance(source, ArrayLiteral):
            item = Choice(tuple(self.evaluate(i, source.env) for i in source.items)) if source.items else UNKNOWN
        if loop_type.get("type") == "object":
            item = Known("object")
        env = env.bind(detail.get("item_name", ""), item)
        if "index_name" in detail:
            env = env.bind(detail["index_name"], Known("int"))
        return env

    def evaluate_read(self, chain: list[Any], env: Env) -> Any:
        """a.b.c: a resource property (typed by Azure's data), a module output, or a variable's member."""
        base, rest = chain[0], chain[1:]
        if not isinstance(base, BicepElement) or env.lookup(str(base))[0]:
            return UNKNOWN
        name = str(base)
        if name in self.resources:
            return self.read_resource(name, rest)
        if name in self.modules:
            return self.read_module(name, rest)
        value = self.evaluate_name(name, env)
        for segment in rest:
            if isinstance(value, ObjectLiteral) and isinstance(segment, str) and segment in value.items:
                value = self.evaluate(value.items[segment], value.env)
            else:
                return UNKNOWN
        return value

    def read_resource(self, symbol: str, segments: list[Any]) -> Any:
        """The type of symbol.a.b, reporting a property Azure's type does not have."""
        key = self.resource_key(symbol)
        resource = self.data.resource(key)
        if resource is None:
            return UNKNOWN  # reported with the declaration
        if segments and segments[0] is INDEX:
            segments = segments[1:]  # one resource of a loop
        body = self.resources[symbol]["config"]
        while is_loop(body) or is_condition(body):
            body = body["config"]
        ref = resource["body"]["$ref"]
        walked: list[str] = []
        for segment in segments:
            node = self.data.node(ref)
            if segment is INDEX or not isinstance(segment, str):
                walked.append("[]")
                if node["$type"] != "ArrayType":
                    return UNKNOWN
                ref = node["itemType"]["$ref"]
                continue
            walked.append(segment)
            prop, additional = self.readable(node, body if len(walked) == 1 else None, segment)
            if prop is None and additional is None:
                if node["$type"] in {"ObjectType", "DiscriminatedObjectType"}:
                    self.error(
                        "",
                        f"reads {symbol}.{'.'.join(walked)}, but {key} has no readable property "
                        f"{'.'.join(walked)}{self.suggest(segment, self.names(node))}",
                    )
                return UNKNOWN
            if prop is not None and prop["flags"] & WRITE_ONLY:
                self.error("", f"reads {symbol}.{'.'.join(walked)}, which {key} defines as write-only")
                return UNKNOWN
            ref = prop["type"]["$ref"] if prop is not None else additional
        return FromType(ref)

    def readable(self, node: dict[str, Any], body: Any, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(property, additionalProperties ref) of an object node for a read of name."""
        if node["$type"] == "ObjectType":
            prop = node["properties"].get(name)
            additional = node.get("additionalProperties")
            return prop, (additional["$ref"] if prop is None and additional else None)
        if node["$type"] == "DiscriminatedObjectType":
            if name in node["baseProperties"]:
                return node["baseProperties"][name], None
            elements = node["elements"]
            if isinstance(body, dict):  # the declaration's discriminator value picks the element
                tag = body.get(node["discriminator"])
                if isinstance(tag, str) and not isinstance(tag, BicepElement) and tag in elements:
                    elements = {tag: elements[tag]}
            for element in elements.values():
                prop, additional = self.readable(self.data.node(element), None, name)
                if prop is not None or additional is not None:
                    return prop, additional
        return None, None

    def names(self, node: dict[str, Any]) -> list[str]:
        if node["$type"] == "ObjectType":
            return list(node["properties"])
        if node["$type"] == "DiscriminatedObjectType":
            names = list(node["baseProperties"])
            for element in node["elements"].values():
                names += self.names(self.data.node(element))
            return names
        return []

    @staticmethod
    def suggest(name: str, candidates: Iterable[str]) -> str:
        close = difflib.get_close_matches(name, list(candidates), n=1)
        return f" (did you mean {close[0]}?)" if close else ""

    def read_module(self, symbol: str, segments: list[Any]) -> Any:
        module = self.module(symbol)
        if module is None:
            return UNKNOWN
        if segments and segments[0] is INDEX:
            segments = segments[1:]
        if not segments:
            return Known("object")
        if segments[0] == "name":
            return Known("string")
        if segments[0] != "outputs":
            self.error("", f"reads {symbol}.{segments[0]}: a module has name and outputs only")
            return UNKNOWN
        if len(segments) < 2 or not isinstance(segments[1], str):
            return Known("object")
        output = module.outputs.get(segments[1])
        if output is None:
            self.error(
                "",
                f"reads {symbol}.outputs.{segments[1]}, but {display(module.path)} has no output "
                f"{segments[1]}{self.suggest(segments[1], module.outputs)}",
            )
            return UNKNOWN
        return declared_value(output["type"]) if len(segments) == 2 else UNKNOWN

    # walking every expression: reads of resources and module outputs anywhere

    def walk(self, expr: Any, env: Env) -> None:
        if isinstance(expr, list):
            for item in expr:
                self.walk(item, env)
        elif not isinstance(expr, dict):
            return
        elif is_loop(expr):
            loop_type = expr["loop_type"]
            self.walk(loop_type.get("detail", {}).get("array_name"), env)
            inner = self.bind_loop(loop_type, env)
            self.walk(expr["condition"], inner)
            self.walk(expr["config"], inner)
        elif is_condition(expr):
            self.walk(expr["condition"], env)
            self.walk(expr["config"], env)
        elif expr.get("type") == "lambda_expression" and "detail" in expr:
            inner = env
            for key, name in expr["detail"].items():
                if key.startswith("var_"):
                    inner = inner.bind(str(name), UNKNOWN)
            self.walk(expr["detail"].get("expression"), inner)
        elif len(expr) == 1 and isinstance(expr.get("operator"), dict):
            operator = expr["operator"]
            if operator.get("type") in {"property_accessor", "index_accessor", "nested_resource_accessor"}:
                chain = flatten(expr)
                self.evaluate_read(chain, env)
                for part in chain:
                    self.walk(part, env)
                if operator.get("type") == "index_accessor":
                    self.walk(operator["operands"]["operand_2"], env)
            else:
                self.walk(list(operator.get("operands", {}).values()), env)
        elif len(expr) == 1 and isinstance(expr.get("function"), dict):
            self.walk(list(expr["function"].get("parameters", {}).values()), env)
        else:
            self.walk(list(expr.values()), env)

    # checking a value against a node of the type data

    def check(self, value: Any, ref: str, path: str) -> None:
        node = self.data.node(ref)
        kind = node["$type"]
        if value is UNKNOWN or kind == "AnyType":
            return
        if isinstance(value, Choice):
            for option in value.options:
                self.check(option, ref, path)
            return
        if isinstance(value, Known) and value.kind == "null":
            return  # null: the property is omitted
        if kind == "UnionType":
            self.check_union(value, node, path)
        elif kind in {"StringType", "StringLiteralType", "IntegerType", "BooleanType", "NullType"}:
            self.check_scalar(value, node, path)
        elif kind == "ObjectType":
            if isinstance(value, ObjectLiteral):
                self.check_object(value, node["properties"], node.get("additionalProperties"), path)
            else:
                self.expect_kind(value, "object", path)
        elif kind == "DiscriminatedObjectType":
            if isinstance(value, ObjectLiteral):
                self.check_discriminated(value, node, path)
            else:
                self.expect_kind(value, "object", path)
        elif kind == "ArrayType":
            self.check_array(value, node, path)

    def kind(self, value: Any) -> str | None:
        """The kind of an abstract value (None: unknown)."""
        if isinstance(value, Known):
            return value.kind
        if isinstance(value, ObjectLiteral):
            return "object"
        if isinstance(value, ArrayLiteral | LoopValue):
            return "array"
        if isinstance(value, FromType):
            node = self.data.node(value.ref)
            if node["$type"] == "UnionType":
                kinds = {self.kind(FromType(e["$ref"])) for e in node["elements"]}
                return kinds.pop() if len(kinds) == 1 else None
            return NODE_KINDS.get(node["$type"])
        return None

    def expect_kind(self, value: Any, expected: str, path: str) -> None:
        actual = self.kind(value)
        if actual is not None and actual != expected and actual != "null":
            self.error(path, f"expects {expected}, got {describe(value, actual)}")

    def check_scalar(self, value: Any, node: dict[str, Any], path: str) -> None:
        expected = {"StringType": "string", "StringLiteralType": "string", "IntegerType": "int"}
        expected |= {"BooleanType": "bool", "NullType": "null"}
        want = expected[node["$type"]]
        if node["$type"] == "StringLiteralType":
            self.expect_kind(value, "string", path)
            if isinstance(value, Known) and value.kind == "string" and value.literal and value.value != node["value"]:
                self.error(path, f"expects '{node['value']}', got {show(value.value)}")
            return
        self.expect_kind(value, want, path)
        if not (isinstance(value, Known) and value.literal and value.kind == want):
            return
        if want == "string":
            length = len(value.value)
            if "minLength" in node and length < node["minLength"]:
                self.error(path, f"{show(value.value)} is shorter than {node['minLength']} characters")
            if "maxLength" in node and length > node["maxLength"]:
                self.error(path, f"{show(value.value)} is longer than {node['maxLength']} characters")
        if want == "int":
            if "minValue" in node and value.value < node["minValue"]:
                self.error(path, f"{value.value} is below the minimum {node['minValue']}")
            if "maxValue" in node and value.value > node["maxValue"]:
                self.error(path, f"{value.value} is above the maximum {node['maxValue']}")

    def check_union(self, value: Any, node: dict[str, Any], path: str) -> None:
        members = [e["$ref"] for e in node["elements"]]
        listed = [n["value"] for n in map(self.data.node, members) if n["$type"] == "StringLiteralType"]
        if listed and isinstance(value, Known) and value.literal and value.kind == "string":
            if value.value not in listed:  # also for open enums (listed values | string): stricter than Bicep
                allowed = ", ".join(f"'{v}'" for v in listed)
                self.error(
                    path,
                    f"{show(value.value)} is not one of the values Azure's type lists: {allowed} "
                    "(if Azure accepts it anyway, write any(...) around it)",
                )
            return
        outcomes = []
        for member in members:
            saved, self.violations = self.violations, []
            try:
                self.check(value, member, path)
            finally:
                trial, self.violations = self.violations, saved
            if not trial:
                return
            outcomes.append(trial)
        literals = [self.data.node(m) for m in members]
        if all(n["$type"] == "StringLiteralType" for n in literals):
            allowed = ", ".join(f"'{n['value']}'" for n in literals)
            self.error(path, f"expects one of {allowed}, got {describe(value, self.kind(value))}")
            return
        for violation in min(outcomes, key=len):  # the closest member
            if violation not in self.violations:
                self.violations.append(violation)

    def check_array(self, value: Any, node: dict[str, Any], path: str) -> None:
        item = node["itemType"]["$ref"]
        if isinstance(value, ArrayLiteral):
            count = len(value.items)
            if "minLength" in node and count < node["minLength"]:
                self.error(path, f"has {count} items, fewer than {node['minLength']}")
            if "maxLength" in node and count > node["maxLength"]:
                self.error(path, f"has {count} items, more than {node['maxLength']}")
            for index, element in enumerate(value.items):
                self.check(self.evaluate(element, value.env), item, f"{path}[{index}]")
        elif isinstance(value, LoopValue):
            self.check(self.evaluate(value.body, value.env), item, f"{path}[for]")
        else:
            self.expect_kind(value, "array", path)

    def check_object(
        self,
        value: ObjectLiteral,
        properties: dict[str, dict[str, Any]],
        additional: dict[str, str] | None,
        path: str,
        *,
        allowed: frozenset[str] = frozenset(),
        extra: str = "",
    ) -> None:
        prefix = f"{path}." if path else ""
        lower = {name.lower(): name for name in properties}
        for key, expr in value.items.items():
            where = f"{prefix}{key}"
            if key in allowed:
                continue
            prop = properties.get(key)
            if prop is None and key.lower() in lower:
                self.error(where, f"Azure's type spells this property {lower[key.lower()]}")
                continue
            if prop is None:
                if additional is not None:
                    self.check(self.evaluate(expr, value.env), additional["$ref"], where)
                elif "${" not in key:
                    self.error(where, f"unknown property{extra}{self.suggest(key, properties)}")
                continue
            if prop["flags"] & READ_ONLY:
                self.error(where, "is read-only in Azure's type (set by Azure, not by the template)")
                continue
            self.check(self.evaluate(expr, value.env), prop["type"]["$ref"], where)
        for name, prop in properties.items():
            if prop["flags"] & REQUIRED and not prop["flags"] & READ_ONLY and name not in value.items:
                self.error(f"{prefix}{name}", "missing required property")

    def check_discriminated(self, value: ObjectLiteral, node: dict[str, Any], path: str, **kw: Any) -> None:
        discriminator, elements = node["discriminator"], node["elements"]
        prefix = f"{path}." if path else ""
        tag = self.evaluate(value.items[discriminator], value.env) if discriminator in value.items else None
        base = node["baseProperties"]
        if discriminator not in value.items:
            self.error(f"{prefix}{discriminator}", "missing required property (it selects the object's type)")
            return
        tags = [tag] if not isinstance(tag, Choice) else list(tag.options)
        for option in tags:
            if isinstance(option, Known) and option.literal and isinstance(option.value, str):
                element = elements.get(option.value)
                if element is None:
                    allowed = ", ".join(f"'{e}'" for e in elements)
                    self.error(f"{prefix}{discriminator}", f"'{option.value}' is not one of {allowed}")
                    continue
                element_node = self.data.node(element)
                properties = {**base, **element_node["properties"]}
                properties.pop(discriminator, None)  # checked here: a literal among the elements
                self.check_object(
                    value,
                    properties,
                    element_node.get("additionalProperties"),
                    path,
                    allowed=kw.get("allowed", frozenset()) | {discriminator},
                    extra=f" (for {discriminator} '{option.value}')",
                )
            else:  # the discriminator is not known offline: only names that no element has are errors
                names = set(base)
                for element in elements.values():
                    names |= set(self.data.node(element)["properties"])
                for key in value.items:
                    if key not in names and key not in kw.get("allowed", ()) and "${" not in key:
                        self.error(f"{prefix}{key}", f"unknown property{self.suggest(key, names)}")

    # declarations

    def check_resource(self, symbol: str, resource: dict[str, Any]) -> None:
        key = self.resource_key(symbol)
        self.subject = f"resource {symbol} ({key})"
        declaration = self.declarations.get(symbol)
        if (declaration is not None and declaration.version is None) or key.endswith("@"):
            self.error("", "has no API version ('Type@version')")
            return
        resource_type = self.data.resource(key)
        if resource_type is None:
            self.error(
                "",
                f"{key} is not in Azure's published types ({display(DATA_FILE)}); a new type or API version "
                f"needs `{REFRESH}`",
            )
            return
        config, env = resource["config"], Env()
        while is_loop(config) or is_condition(config):
            if is_loop(config):
                env = self.bind_loop(config["loop_type"], env)
            config = config["config"]
        self.walk(resource["config"], Env())
        if not isinstance(config, dict) or resource["existing"]:
            self.check_parent(symbol, config)
            return  # existing: only the type
        body = {k: v for k, v in config.items() if k != "depends_on"}  # pycep adds depends_on to nested ones
        self.check_parent(symbol, body)
        value = ObjectLiteral({unquote(k): v for k, v in body.items()}, env)
        node = self.data.node(resource_type["body"])
        if node["$type"] == "DiscriminatedObjectType":
            self.check_discriminated(value, node, "", allowed=BICEP_RESOURCE_KEYS)
        else:
            self.check_object(
                value, node["properties"], node.get("additionalProperties"), "", allowed=BICEP_RESOURCE_KEYS
            )

    def check_parent(self, symbol: str, body: Any) -> None:
        if not isinstance(body, dict) or "parent" not in body:
            return
        chain = flatten(body["parent"])  # parent: account, or parent: zones[i] (one of a resource loop)
        parent = chain[0]
        if not isinstance(parent, BicepElement) or any(s is not INDEX for s in chain[1:]):
            return  # an expression: not known offline
        if str(parent) not in self.resources:
            self.error("parent", f"must name a resource declared in this file, got {parent}")
            return
        child_type = self.resource_key(symbol).partition("@")[0]
        parent_type = self.resource_key(str(parent)).partition("@")[0]
        if child_type.rpartition("/")[0].lower() != parent_type.lower():
            self.error("parent", f"{parent} is a {parent_type}, but a {child_type} needs a parent of its parent type")

    def check_module(self, symbol: str, declaration: dict[str, Any]) -> None:
        self.subject = f"module {symbol} ({declaration.get('detail', {}).get('full', '?')})"
        config, env = declaration["config"], Env()
        while is_loop(config) or is_condition(config):
            if is_loop(config):
                env = self.bind_loop(config["loop_type"], env)
            config = config["config"]
        self.walk(declaration["config"], Env())
        if declaration.get("type") != "local":
            return  # registry modules and template specs are not available offline
        module = self.module(symbol)
        if module is None:
            self.error("", f"{declaration['detail']['path']} does not exist")
            return
        if not isinstance(config, dict):
            return
        for key in config:
            if key not in MODULE_KEYS:
                self.error(key, f"unknown module property{self.suggest(key, MODULE_KEYS)}")
        params = config.get("params", {})
        if not isinstance(params, dict) or is_expression(params):
            return
        params = {unquote(k): v for k, v in params.items()}
        for name, expr in params.items():
            declared = module.params.get(name)
            if declared is None:
                self.error(
                    f"params.{name}",
                    f"{display(module.path)} has no parameter {name}{self.suggest(name, module.params)}",
                )
                continue
            self.check_declared(self.evaluate(expr, env), declared["type"], declared, f"params.{name}")
        for name, declared in module.params.items():
            if name not in params and declared.get("default") is None and name not in module.nullable:
                self.error(f"params.{name}", f"missing: {display(module.path)} declares it without a default")

    def check_declared(self, value: Any, declared_type: Any, declaration: dict[str, Any], path: str) -> None:
        """A value against a declared param/output type (kind, @allowed, @minLength/@maxLength...)."""
        if isinstance(value, Choice):
            for option in value.options:
                self.check_declared(option, declared_type, declaration, path)
            return
        want = declared_kind(declared_type)
        if want is not None:
            self.expect_kind(value, want, path)
        if not (isinstance(value, Known) and value.literal):
            return
        for decorator in declaration.get("decorators", []):
            kind, argument = decorator.get("type"), decorator.get("argument")
            if kind == "allowed" and isinstance(argument, list) and value.value not in argument:
                allowed = ", ".join(show(a) for a in argument)
                self.error(path, f"{show(value.value)} is not one of the @allowed values {allowed}")
            if kind == "min_length" and isinstance(value.value, str | list) and len(value.value) < argument:
                self.error(path, f"{show(value.value)} is shorter than @minLength({argument})")
            if kind == "max_length" and isinstance(value.value, str | list) and len(value.value) > argument:
                self.error(path, f"{show(value.value)} is longer than @maxLength({argument})")
            if kind == "min_value" and isinstance(value.value, int) and value.value < argument:
                self.error(path, f"{value.value} is below @minValue({argument})")
            if kind == "max_value" and isinstance(value.value, int) and value.value > argument:
                self.error(path, f"{value.value} is above @maxValue({argument})")

    def check_file(self) -> list[Violation]:
        self.subject = "file"
        for declaration in self.declarations.values():
            if declaration.symbol not in self.resources:
                self.subject = f"resource {declaration.symbol} ({declaration.key}, line {declaration.line})"
                self.error(
                    "",
                    "was not seen by pycep (it keeps only the last nested child resource of a parent): "
                    "declare it at top level with `parent:` so it can be checked",
                )
        for symbol, resource in self.resources.items():
            self.check_resource(symbol, resource)
        for symbol, module in self.modules.items():
            self.check_module(symbol, module)
        for name, parameter in self.tree.get("parameters", {}).items():
            self.subject = f"param {name}"
            self.walk(parameter.get("default"), Env())
            if parameter.get("default") is not None:
                self.check_declared(self.evaluate(parameter["default"], Env()), parameter["type"], parameter, "default")
        for name, variable in self.tree.get("variables", {}).items():
            self.subject = f"var {name}"
            self.walk(variable.get("value"), Env())
        for name, output in self.tree.get("outputs", {}).items():
            self.subject = f"output {name}"
            self.walk(output.get("value"), Env())
            self.check_declared(self.evaluate(output.get("value"), Env()), output["type"], output, "")
        return self.violations


def load_module(path: Path, declaration: dict[str, Any]) -> Module | None:
    """A local module's parameters and outputs (None: not local or not found)."""
    if declaration.get("type") != "local":
        return None
    module_path = (path.parent / declaration["detail"]["path"]).resolve()
    if not module_path.exists():
        return None
    text = module_path.read_text()
    tree = parse(text)
    nullable = {m[1] for m in re.finditer(r"^\s*param\s+(\w+)\s+[^=\n]*\?\s*(?:=|$)", text, re.M)}
    return Module(module_path, tree.get("parameters", {}), nullable, tree.get("outputs", {}))


def declared_kind(declared: Any) -> str | None:
    if isinstance(declared, dict) and declared.get("type") == "array":
        return "array"
    if isinstance(declared, str):
        return PARAM_KINDS.get(declared.lower())
    return None


def declared_value(declared: Any) -> Any:
    kind = declared_kind(declared)
    return Known(kind) if kind else UNKNOWN


def parameter_value(parameter: dict[str, Any]) -> Any:
    """What a parameter reference is known to be: its @allowed values, else its declared kind."""
    for decorator in parameter.get("decorators", []):
        if decorator.get("type") == "allowed" and isinstance(decorator.get("argument"), list):
            values = decorator["argument"]
            if values and all(isinstance(v, str | int | bool) for v in values):
                return Choice(tuple(Known(kind_of(v), v, literal=True) for v in values))
    return declared_value(parameter.get("type"))


def describe(value: Any, kind: str | None) -> str:
    if isinstance(value, Known) and value.literal:
        return f"{kind} {show(value.value)}"
    if isinstance(value, FromType):
        return f"{kind} (an Azure property)"
    return kind or "a value of unknown type"


_PARSER: BicepParser | None = None


@cache
def parse(text: str) -> dict[str, Any]:
    global _PARSER
    _PARSER = _PARSER or BicepParser()
    return _PARSER.parse(text=text)  # type: ignore[return-value]


def check_file(path: Path, data: TypeData | None = None) -> list[Violation]:
    """Every violation in one Bicep file (its modules are read for their parameters and outputs)."""
    text = path.read_text()
    declarations = {d.symbol: d for d in resource_declarations(path, text)}
    try:
        tree = parse(text)
    except Exception as error:  # lark's errors, pycep's ValueError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [Violation(display(path), "file", "", f"pycep cannot parse it, so it is not checked: {reason}")]
    return FileChecker(path, data or load_type_data(), tree, declarations).check_file()


def check_files(paths: Iterable[Path], data: TypeData | None = None) -> Iterator[Violation]:
    for path in paths:
        yield from check_file(path, data)
