"""The house's spine, checked: the folder tree reads as the pipeline (README, "How it works"),
no module imports another's private names, there is no import cycle (module-level or inside a
function), and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "effbench"
# Modules still past MAX_LINES: README's "How it works" lists them as the next to split; a new
# module past it fails here.
MAX_LINES = 350
LONG_MODULES: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def effbench_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, imported name) of every effbench import, at any depth, but those under
    `if TYPE_CHECKING:` (annotations only: nothing runs)."""
    found: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, None) for a in child.names if a.name.startswith("effbench"))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith("effbench"):
                found.extend((child.lineno, child.module, a.name) for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = set()
        for _, module, imported in effbench_imports(path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in MODULES else module
            if target in MODULES and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def test_the_tree_reads_as_the_pipeline():
    for part in ("plan.py", "execute", "score.py", "results.py", "challenge", "predict", "report", "backends", "serve", "runner.py"):
        assert (PACKAGE / part).exists(), part
    assert len(list(PACKAGE.glob("*.py"))) <= 16, "top-level modules: put new ones in the pipeline's folders"


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, path in MODULES.items():
        for line, module, imported in effbench_imports(path):
            dunder = imported is not None and imported.startswith("__") and imported.endswith("__")  # __version__
            private_name = (imported is not None and imported.startswith("_") and not dunder
                            and f"{module}.{imported}" not in MODULES)
            private_module = any(part.startswith("_") and part != "__init__" for part in module.split("."))
            same_package = module.rsplit(".", 1)[0] == name.rsplit(".", 1)[0] or module.rsplit(".", 1)[0] == name
            if private_name or (private_module and not same_package):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {imported}")
    assert not offenders, "\n".join(offenders)


def test_modules_stay_short():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONG_MODULES, f"over {MAX_LINES} lines (split them, or say why in README): {long}"


def _imports_alone(name: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    return name, proc.returncode, proc.stderr[-2000:]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """An import-order dependency (a module that works only because another was imported first)
    shows only in a fresh interpreter; the vLLM backend needs vLLM, an optional extra."""
    names = [n for n in MODULES if not n.startswith("effbench.backends.vllm") or _has("vllm")]
    with ThreadPoolExecutor(2) as pool:
        failed = [(n, err) for n, code, err in pool.map(_imports_alone, names) if code != 0]
    assert not failed, "\n\n".join(f"{n}:\n{err}" for n, err in failed)


def _has(dist: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(dist) is not None
