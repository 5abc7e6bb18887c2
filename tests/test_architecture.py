"""The package's shape (docs/design.md, "Module map"): small modules, functions and classes, imports that
only go down, no cycles, every environment variable read in ``config``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "minigpt"
MAX_FUNCTION, MAX_CLASS, MAX_MODULE = 60, 220, 500
# optional or heavy dependencies that may be imported where they are used, never package modules
LAZY_OK = {"IPython", "ipywidgets", "seaborn", "transformers", "matplotlib", "jupytext"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = ".".join(("minigpt", *path.relative_to(PKG).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _resolve(module: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_pkg else parts[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module -> the package modules it imports (``from . import x`` counts as importing ``x``)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, tree in modules.items():
        is_pkg = (PKG / Path(*name.split(".")[1:]) / "__init__.py").exists() or name == "minigpt"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, is_pkg)
                names = [f"{target}.{a.name}" for a in node.names]
                hits = [n for n in names if n in modules] or ([target] if target in modules else [])
                graph[name].update(h for h in hits if h != name)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules and a.name != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = package_imports(_modules())
    assert graph["minigpt.experiment"], "the import scan found nothing: the scanner is broken"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


CORE = {f"minigpt.{m}" for m in ("config", "cache", "data", "tokenizer", "streams", "model", "checkpoint", "train",
                                 "router", "stacked", "fusion", "scoring", "intervals", "evaluate", "experiment", "compat",
                                 "hf", "progress", "device", "router_pool", "heap", "score_cache", "rows")}


def test_core_imports_only_core():
    graph = package_imports(_modules())
    assert CORE <= set(graph), f"core modules missing from the scan: {sorted(CORE - set(graph))}"
    offenders = {m: sorted(graph[m] - CORE - {"minigpt"}) for m in CORE}
    assert not {m: t for m, t in offenders.items() if t}, "the core imports studies, analysis or display code"


@pytest.mark.parametrize("kind, limit", [(ast.FunctionDef, MAX_FUNCTION), (ast.ClassDef, MAX_CLASS)])
def test_functions_and_classes_stay_short(kind, limit):
    long = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (kind, ast.AsyncFunctionDef) if kind is ast.FunctionDef else kind):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, f"over {limit} lines: {long}"


def test_modules_stay_small():
    big = {p.relative_to(PKG).as_posix(): n for p in sorted(PKG.rglob("*.py"))
           if (n := len(p.read_text().splitlines())) > MAX_MODULE}
    assert not big, f"over {MAX_MODULE} lines (split by concept): {big}"


def test_package_modules_are_imported_at_the_top():
    late = []
    for name, tree in _modules().items():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level and name != "minigpt.env_check":
                    late.append(f"{name}.{fn.name}: from {'.' * node.level}{node.module or ''}")
    assert not late, f"function-level imports of package modules: {late}"


def test_environment_variables_are_read_only_in_config():
    readers = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and name != "minigpt.config":
                readers.append(name)
    assert not readers, f"read the environment outside minigpt.config: {sorted(set(readers))}"
