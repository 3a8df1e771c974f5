"""The house keeps its layers: imports only go down, never in a cycle, and the simulator alone.

Each module of ``kling_async`` has a layer; a module may import (at module level, outside
``TYPE_CHECKING``) only modules of lower layers, or its own package's private modules. The
simulator imports nothing from the client, except one documented bridge (``Simulator.session``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kling_async"

#: Lower numbers are lower layers: pure values and rules first, the composition last.
LAYERS = {
    "errors": 0,
    "telemetry": 0,
    "rules": 0,
    "models": 1,
    "signature": 1,
    "media": 1,
    "records": 2,
    "jobs": 2,
    "settings": 2,
    "retries": 2,
    "relay": 3,
    "wire": 3,
    "callbacks": 4,
    "transport": 4,
    "ratelimit": 4,
    "webhooks": 5,
    "journal": 5,
    "downloads": 5,
    "uploads": 5,
    "waiting": 6,
    "submission": 6,
    "base": 6,
    "redis": 6,
    "client": 7,
    "batch": 8,
    "session": 9,
    "demo": 10,
    "cli": 10,
    "progress": 10,
    "__init__": 10,
    "__main__": 11,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    if node.level == 0:
        return [node.module] if node.module else []
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    target = ".".join(base + ([node.module] if node.module else []))
    if node.module is None:  # "from . import a, b"
        return [f"{target}.{alias.name}" for alias in node.names]
    return [target]


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Module-level imports of ``kling_async`` modules, and (function, module) imports inside."""
    module = module_name(path)
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    inner: set[tuple[str, str]] = set()

    def visit(body: list[ast.stmt], where: str | None) -> None:
        for node in body:
            if isinstance(node, ast.If) and _type_checking(node):
                continue
            if isinstance(node, ast.ImportFrom):
                for name in _resolve(module, node, path.name == "__init__.py"):
                    if name.startswith("kling_async"):
                        (top.add(name) if where is None else inner.add((where, name)))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("kling_async"):
                        (top.add(alias.name) if where is None else inner.add((where, alias.name)))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, node.name if where is None else where)
            elif isinstance(node, ast.ClassDef):
                visit(node.body, where)
            elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(
                            getattr(child, "body", [child]) if field == "handlers" else [child],
                            where,
                        )

    visit(tree.body, None)
    return top, inner


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def top_part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_client_module_has_a_layer() -> None:
    for path in sources():
        name = module_name(path)
        if top_part(name) != "simulator":
            assert top_part(name) in LAYERS, f"{name} has no layer in tests/test_layers.py"


def test_imports_only_go_down() -> None:
    for path in sources():
        name = module_name(path)
        home = top_part(name)
        if home == "simulator":
            continue
        top, _ = imports_of(path)
        for target in top:
            there = top_part(target)
            if there == home and name != "kling_async":
                continue  # a package's own modules (media._mp4, batch.runner)
            assert there != "simulator" or home in ("demo", "cli"), f"{name} imports the simulator"
            if there == "simulator":
                continue
            assert LAYERS[there] < LAYERS[home], f"{name} (layer {LAYERS[home]}) imports {target}"


def test_no_import_cycles() -> None:
    graph = {module_name(p): imports_of(p)[0] for p in sources()}

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        for target in graph.get(node, ()):
            if target in graph:
                visit(target, [*trail, node])

    for node in graph:
        visit(node, [])


def test_the_simulator_imports_nothing_from_the_client() -> None:
    checked = 0
    for path in sorted((PACKAGE / "simulator").rglob("*.py")):
        top, inner = imports_of(path)
        for target in top:
            assert target.startswith("kling_async.simulator"), f"{path.name} imports {target}"
        for where, target in inner:
            if not target.startswith("kling_async.simulator"):
                # The one bridge: a session pointed at the simulator, built on request.
                assert (path.name, where) == ("__init__.py", "session"), (path.name, where, target)
        checked += 1
    assert checked >= 8


def test_no_module_is_far_over_400_lines() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in sources()}
    too_big = {name: n for name, n in sizes.items() if n > 550}
    assert not too_big, too_big


def test_only_the_transport_talks_to_aiohttps_client() -> None:
    talkers = set()
    for path in sources():
        name = module_name(path)
        if top_part(name) == "simulator":
            continue  # a server of its own
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level, outside TYPE_CHECKING
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "aiohttp" or n.startswith("aiohttp.") for n in names):
                talkers.add(name)
    # The webhook receiver is a server (aiohttp.web), not a client.
    assert talkers == {"kling_async.transport", "kling_async.webhooks"}, talkers


def test_only_the_display_imports_rich() -> None:
    """rich is the ``cli`` extra: the library works without it, the CLI falls back to lines."""
    importers = set()
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "rich" or n.startswith("rich.") for n in names):
                importers.add(module_name(path))
    assert importers == {"kling_async.progress"}, importers
