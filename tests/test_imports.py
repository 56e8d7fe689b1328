"""The package's import graph: no cycles, nothing imports the trainer back, and imports deferred into functions
say why. Read from the source (every `import` statement, at any depth), so a cycle that only bites when some
function first runs is caught too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import qwengrpo

PACKAGE = Path(qwengrpo.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["qwengrpo", *path.relative_to(PACKAGE).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers inside `if TYPE_CHECKING:` blocks (imports for annotations only, never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The qwengrpo modules an import statement loads (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    submodules = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
    return (submodules or {base}) & MODULES.keys()


def _graph(with_type_checking: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = set() if with_type_checking else _type_checking_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno not in skipped:
                graph[module] |= _targets(module, path, node) - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted({*graph, *(w for targets in graph.values() for w in targets)}):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_sees_a_cycle():
    graph = defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert _cycles(graph) == [["a", "b", "c"]]


def test_nothing_imports_the_trainer_back():
    """The modules the trainer uses get what they need handed to them, not by naming the trainer, not even for
    type hints; only the entry points (the public API, `launch`) import it."""
    graph = _graph(with_type_checking=True)
    importers = {m for m, targets in graph.items() if "qwengrpo.trainer" in targets}
    assert importers == {"qwengrpo", "qwengrpo.launch"}


def test_deferred_imports_say_why():
    """An import inside a function (outside the command-line verbs, which defer theirs so `--help` stays fast) has
    its reason in a comment on the import or on the line above its block of imports."""
    silent = []
    for module, path in MODULES.items():
        if module.startswith("qwengrpo.cli"):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            block: list[ast.stmt] = []
            for statement in [*function.body, None]:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    block.append(statement)
                    continue
                ours = [n for n in block if _targets(module, path, n)]
                span = lines[block[0].lineno - 2 : block[-1].end_lineno] if block else []
                if ours and not any("#" in line for line in span):
                    silent.append(f"{path.relative_to(PACKAGE.parent)}:{ours[0].lineno}")
                block = []
    assert silent == []
