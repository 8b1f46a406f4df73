"""The layout's rules, checked on the source (ast; nothing is imported or executed):

- packages are floors: an import may point to its own floor or below, never up (lazy imports count);
- no import cycle between modules;
- only the application, the orchestration and the benchmarks may import the embedded server;
- only the catalog composes lake paths; only the settings module reads `KFS_*` variables.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

# Floor of each package: a module may import modules of its own floor or lower ones.
FLOORS = {"core": 0, "ingest": 1, "source": 2, "features": 3, "training": 4, "live": 5, "orchestration": 6,
          "kfs": 7, "bench": 8}
DEV_SERVER = "source.pg_server"
MAY_IMPORT_DEV_SERVER = {"source", "orchestration", "kfs", "bench"}
CATALOG = "core.catalog"
SETTINGS = "core.settings"


def production_modules() -> dict[str, Path]:
    modules = {}
    for package in FLOORS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in its body (a `from pkg import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = production_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def package_of(module: str) -> str:
    return module.split(".", 1)[0]


def test_imports_never_point_up_a_floor():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
              if FLOORS[package_of(target)] > FLOORS[package_of(module)]]
    assert upward == [], "imports from a lower floor into a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    # Package __init__ modules are imported implicitly by their submodules; they must not import back.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def test_only_the_application_side_imports_the_embedded_server():
    offenders = [module for module, targets in import_graph().items()
                 if DEV_SERVER in targets and package_of(module) not in MAY_IMPORT_DEV_SERVER]
    assert offenders == [], f"the read path must not be able to start a development server: {offenders}"


# Dataset folders and file names of the lake layout; a string like these outside the catalog builds a path.
_LAKE_PATH = re.compile(r"(^|/)(raw|features|splits|models|_quarantine|candidates)/|date=|part-\d{5}|"
                        r"registry\.(json|parquet)|markets\.parquet|market_categories\.parquet")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_only_the_catalog_composes_lake_paths():
    offenders = []
    for module, path in production_modules().items():
        if module == CATALOG:
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and _LAKE_PATH.search(node.value) and not _is_description(node, tree):
                offenders.append(f"{module}:{node.lineno}: {node.value[:60]!r}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Attribute) \
                    and node.left.attr == "root":
                offenders.append(f"{module}:{node.lineno}: joins a path onto a lake root")
    assert offenders == [], "lake paths built outside core/catalog.py:\n" + "\n".join(offenders)


def _is_description(node: ast.Constant, tree: ast.AST) -> bool:
    """Prose for people (help texts, descriptions, log lines) may mention the layout."""
    for parent in ast.walk(tree):
        if isinstance(parent, ast.keyword) and parent.arg in ("help", "description", "doc") and \
                any(child is node for child in ast.walk(parent.value)):
            return True
    return False


def test_dbt_reads_lake_locations_only_from_the_rendered_contract():
    generated = {"kfs_contract.sql", "__sources.yml"}
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "dbt_project").rglob("*")
                 if path.suffix in (".sql", ".yml") and path.name not in generated and "target" not in path.parts
                 and re.search(r"\b(raw|features|splits)/", path.read_text())]
    assert offenders == [], f"dbt files with lake paths of their own: {offenders}"


def test_only_the_settings_module_reads_kfs_variables():
    offenders = []
    for module, path in production_modules().items():
        if module == SETTINGS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                callee = node.func
                if isinstance(callee, ast.Attribute) and callee.attr in ("get", "getenv", "pop", "setdefault"):
                    key = node.args[0].value
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and \
                    isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and \
                    any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                key = node.left.value
            if isinstance(key, str) and key.startswith("KFS_"):
                offenders.append(f"{module}:{node.lineno}: {key}")
    assert offenders == [], "KFS_ variables read outside core/settings.py:\n" + "\n".join(offenders)
