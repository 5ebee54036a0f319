"""The core's layering: only the Azure implementations and ``wiring.py`` touch the Azure SDK.

The ports (``dicomserver/stores``: Protocols, model, layout) own their types, so
every service can be used and tested without Azure; ``wiring.py`` alone picks the
Azure implementations.  Checked on the source (imports, including ones inside
functions), so a lazy ``import azure...`` in a service fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "dicomserver"
AZURE_IMPLEMENTATIONS = CORE / "stores" / "azure"
WIRING = CORE / "wiring.py"


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if AZURE_IMPLEMENTATIONS not in p.parents)


def test_the_resolver_sees_relative_and_lazy_imports() -> None:
    names = _imports(WIRING)
    assert "azure.storage.blob" in names  # absolute
    assert "azure.identity" in names  # inside a function
    assert "dicomserver.stores.azure.index" in names  # relative
    assert "dicomserver.stores.azure.index.CosmosIndexStore" in names


def test_no_core_module_but_wiring_imports_the_azure_sdk() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n == "azure" or n.startswith("azure."))
        for path in _core_modules()
        if path != WIRING
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_no_core_module_but_wiring_imports_the_azure_implementations() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.startswith("dicomserver.stores.azure"))
        for path in _core_modules()
        if path != WIRING
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_azure_implementations_exist_where_the_ports_say() -> None:
    assert sorted(p.name for p in AZURE_IMPLEMENTATIONS.glob("*.py")) == [
        "__init__.py",
        "blob.py",
        "changefeed.py",
        "cosmos.py",
        "counting.py",
        "events.py",
        "extended_tags.py",
        "index.py",
        "operations.py",
        "partitions.py",
        "queue.py",
    ]
