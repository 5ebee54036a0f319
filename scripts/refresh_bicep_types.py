"""Refresh tests/data/bicep-types/: Azure's resource types for every Type@version used in infra/.

    python -m scripts.refresh_bicep_types /path/to/bicep-types-az

The argument is a clone of https://github.com/Azure/bicep-types-az (a work tree or a bare git
directory; its HEAD is read).  Every ``resource x 'Type@version'`` in infra/**/*.bicep (nested child
resources resolved to their full type) is looked up in ``generated/index.json``; when the index is
absent, in ``generated/*/<namespace>/<version>/types.json``, the first file by lowercase path winning
as in the bicep-types indexer.  Only the type graph reachable from those resources is kept, without
descriptions or resource functions, renumbered into one ``types.json`` (deterministic: resources in
sorted order, properties sorted), with a README.md naming the source commit.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bicep_types import DATA_DIR, DATA_FILE, INFRA, REFRESH, display, used_resource_types

REPOSITORY = "https://github.com/Azure/bicep-types-az"
#: what validation needs of each node kind of the type data ($type is always kept)
KEEP = {
    "ResourceType": ("name", "body", "flags", "readableScopes", "writableScopes", "scopeType"),
    "ObjectType": ("name", "properties", "additionalProperties"),
    "DiscriminatedObjectType": ("name", "discriminator", "baseProperties", "elements"),
    "ArrayType": ("itemType", "minLength", "maxLength"),
    "UnionType": ("elements",),
    "StringLiteralType": ("value",),
    "StringType": ("minLength", "maxLength", "pattern"),
    "IntegerType": ("minValue", "maxValue"),
}


class Source:
    """Files of the bicep-types-az clone at HEAD (work tree files, or git objects of a bare clone)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commit = self.git("rev-parse", "HEAD").strip()
        self.located_by = ""
        self._cache: dict[str, Any] = {}

    def git(self, *args: str) -> str:
        result = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"git {' '.join(args)} failed in {self.root}: {result.stderr.strip()}")
        return result.stdout

    def read(self, path: str) -> str | None:
        """A file at HEAD (None when absent, e.g. a large file a partial clone did not fetch)."""
        result = subprocess.run(["git", "-C", str(self.root), "show", f"HEAD:{path}"], capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None

    def json(self, path: str) -> Any:
        if path not in self._cache:
            text = self.read(path)
            self._cache[path] = None if text is None else json.loads(text)
        return self._cache[path]

    def files(self, under: str) -> list[str]:
        return self.git("ls-tree", "-r", "--name-only", "HEAD", under).split()


def locate(source: Source, keys: list[str]) -> dict[str, tuple[str, int]]:
    """Type@version -> (types.json path, index of its ResourceType), for the keys found."""
    found: dict[str, tuple[str, int]] = {}
    index = source.json("generated/index.json")
    if index is not None:
        source.located_by = "generated/index.json"
        resources = {k.lower(): v for k, v in index.get("resources", index.get("Resources", {})).items()}
        for key in keys:
            entry = resources.get(key.lower())
            if entry is None:
                continue
            if "$ref" in entry:
                relative, _, pointer = entry["$ref"].partition("#/")
                found[key] = (f"generated/{relative}", int(pointer))
            else:
                found[key] = (f"generated/{entry['RelativePath']}", int(entry["Index"]))
        return found
    print("generated/index.json is not available: scanning generated/*/<namespace>/<version>/types.json")
    source.located_by = "generated/*/<namespace>/<version>/types.json (generated/index.json was not available)"
    files = sorted((f for f in source.files("generated") if f.endswith("/types.json")), key=str.lower)
    for key in keys:
        type_name, _, version = key.partition("@")
        folder = f"/{type_name.split('/')[0]}/{version}/types.json".lower()
        for path in (f for f in files if f.lower().endswith(folder)):
            types = source.json(path) or []
            hits = [
                i
                for i, node in enumerate(types)
                if node.get("$type") == "ResourceType" and node.get("name", "").lower() == key.lower()
            ]
            if hits:
                found[key] = (path, hits[0])
                break
    return found


def trim(source: Source, located: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The reachable type graph of the located resources, renumbered into one list."""
    types: list[dict[str, Any]] = []
    numbers: dict[tuple[str, int], int] = {}
    leaves: dict[str, int] = {}  # identical leaf nodes (strings, literals...) are shared across files

    def ref(file: str, pointer: dict[str, str]) -> dict[str, str]:
        return {"$ref": f"#/{visit(file, int(pointer['$ref'].removeprefix('#/')))}"}

    def visit(file: str, index: int) -> int:
        if (file, index) in numbers:
            return numbers[(file, index)]
        node = source.json(file)[index]
        kind = node["$type"]
        kept = {"$type": kind, **{k: node[k] for k in KEEP.get(kind, ()) if k in node}}
        if kind in {"StringLiteralType", "StringType", "IntegerType", "BooleanType", "AnyType", "NullType"}:
            identity = json.dumps(kept, sort_keys=True)
            if identity not in leaves:
                leaves[identity] = len(types)
                types.append(kept)
            numbers[(file, index)] = leaves[identity]
            return leaves[identity]
        number = numbers[(file, index)] = len(types)
        types.append(kept)  # placeholder first: the graph has cycles
        if kind == "ResourceType":
            kept["body"] = ref(file, node["body"])
        elif kind == "ObjectType":
            kept["properties"] = {
                name: {"flags": prop.get("flags", 0), "type": ref(file, prop["type"])}
                for name, prop in sorted(node.get("properties", {}).items())
            }
            if "additionalProperties" in node:
                kept["additionalProperties"] = ref(file, node["additionalProperties"])
        elif kind == "DiscriminatedObjectType":
            kept["baseProperties"] = {
                name: {"flags": prop.get("flags", 0), "type": ref(file, prop["type"])}
                for name, prop in sorted(node.get("baseProperties", {}).items())
            }
            kept["elements"] = {name: ref(file, element) for name, element in sorted(node["elements"].items())}
        elif kind == "ArrayType":
            kept["itemType"] = ref(file, node["itemType"])
        elif kind == "UnionType":
            kept["elements"] = [ref(file, element) for element in node["elements"]]
        return number

    resources = {}
    for _, (file, index) in sorted(located.items(), key=lambda item: item[0].lower()):
        name = source.json(file)[index]["name"]
        resources[name] = {"file": file, "type": f"#/{visit(file, index)}"}
    return {
        "source": {"repository": REPOSITORY, "commit": source.commit, "located_by": source.located_by},
        "resources": resources,
        "types": types,
    }


README = """\
# Azure resource types for the Bicep type check

`types.json` is the part of Azure's published Bicep resource types that `infra/` uses: every
`Type@apiVersion` declared in `infra/**/*.bicep` and the types reachable from it, without
descriptions. `tests/bicep_types.py` checks the Bicep files against it (`tests/unit/test_bicep_types.py`,
run by `make test`).

- Source: {repository} at commit `{commit}`: the `types.json` files listed below,
  found through {located_by}. Their format is that of https://github.com/Azure/bicep-types
  (`src/bicep-types/src/types.ts`); property flags: Required=1, ReadOnly=2, WriteOnly=4,
  DeployTimeConstant=8, Identifier=16.
- Kept: resource types, object/discriminated/array/union types, string literals, string and integer
  constraints, property flags. Dropped: descriptions, resource functions, everything unreachable.
- Written by `scripts/refresh_bicep_types.py`; do not edit by hand.

## Refresh (after adding a resource type or changing an API version in infra/)

From the repository root, with the project's virtualenv (`.venv`) active:

```sh
git clone --depth 1 {repository} /path/to/bicep-types-az
{command}
```

then commit this folder (`types.json` and this README).

## Resource types

| Type@apiVersion | From |
| --- | --- |
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clone", type=Path, help="a clone of Azure/bicep-types-az (work tree or bare)")
    parser.add_argument("--infra", type=Path, default=INFRA, help="the Bicep folder (default: infra/)")
    args = parser.parse_args(argv)

    used = used_resource_types(args.infra)
    unversioned = sorted(key for key, ds in used.items() if any(d.version is None for d in ds))
    if unversioned:
        print(f"resources without an API version: {', '.join(unversioned)}", file=sys.stderr)
        return 1
    source = Source(args.clone)
    located = locate(source, list(used))
    missing = sorted(set(used) - set(located))
    if missing:
        for key in missing:
            where = ", ".join(f"{display(d.file)}:{d.line}" for d in used[key])
            print(f"not in Azure's published types at {source.commit}: {key} ({where})", file=sys.stderr)
        return 1
    data = trim(source, located)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    rows = "\n".join(f"| `{name}` | `{entry['file']}` |" for name, entry in data["resources"].items())
    (DATA_DIR / "README.md").write_text(
        README.format(
            repository=REPOSITORY,
            commit=source.commit,
            located_by=re.sub(r"(generated/\S+)", r"`\1`", source.located_by),
            command=REFRESH,
            rows=rows,
        )
    )
    print(
        f"{display(DATA_FILE)}: {len(data['resources'])} resource types, {len(data['types'])} nodes, "
        f"{DATA_FILE.stat().st_size} bytes, from {REPOSITORY} at {source.commit}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
