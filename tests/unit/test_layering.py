"""The layers the code is read by: pure deciding parts, thin adapters that act.

Only ``reconciler/adapters/`` talks to the outside world's libraries (the
Docker SDK, boto3, GitPython, requests): everything else holds what an
adapter gives it (README.md, "Architecture"). And the arrows point one way:
adapters, the model and the deciding parts never import the flows, and no
two parts of the package import each other, even through a function-local
import (which is how a cycle hides).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
OUTSIDE_LIBRARIES = {"docker", "boto3", "botocore", "git", "requests"}
# What runs the flows: never imported by the model, the decisions or the adapters.
FLOWS = (
    "reconciler.cli",
    "reconciler.deploy",
    "reconciler.daemon",
    "reconciler.backup",
    "reconciler.restore",
    "reconciler.wiring",
    "reconciler.notifying",
)
# Pure: no I/O library at all, not even the standard library's.
IO_MODULES = (
    "subprocess",
    "socket",
    "shutil",
    "urllib.request",
    "http.client",
    *sorted(OUTSIDE_LIBRARIES),
)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (any depth: function-local imports too), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _modules(*, outside: str | None = None, inside: tuple[str, ...] = ()) -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    if outside:
        paths = [p for p in paths if p.relative_to(PACKAGE).parts[0] != outside]
    if inside:
        paths = [p for p in paths if p.relative_to(PACKAGE).parts[0] in inside]
    return paths


def test_only_adapters_import_docker_boto3_git_or_requests() -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
        for path in _modules(outside="adapters")
        for line, module in _imports(path)
        if module.split(".")[0] in OUTSIDE_LIBRARIES
    ]
    assert not offending, "\n".join(offending)


def test_adapters_model_and_deciding_parts_never_import_the_flows() -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
        for path in _modules(inside=("adapters", "model", "decide"))
        for line, module in _imports(path)
        if module.startswith(FLOWS)
    ]
    assert not offending, "\n".join(offending)


def test_the_check_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import docker.errors\n    from git import Repo\n")
    assert _imports(module) == [(2, "docker.errors"), (3, "git")]


def test_the_model_and_the_deciding_parts_do_no_io() -> None:
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
        for path in _modules(inside=("model", "decide"))
        for line, module in _imports(path)
        if any(module == name or module.startswith(f"{name}.") for name in IO_MODULES)
    ]
    assert not offending, "\n".join(offending)


def _part_of(module: str) -> str | None:
    """``reconciler.backup.backing_up`` -> ``backup``; ``reconciler.labels`` -> ``labels``."""
    parts = module.split(".")
    if parts[0] != "reconciler" or len(parts) < 2:
        return None
    return parts[1]


def _import_graph(package: Path) -> dict[str, dict[str, list[str]]]:
    """Part -> part it imports -> where (file:line), function-local imports included."""
    parts = {p.name.removesuffix(".py") for p in package.iterdir() if p.name != "__pycache__"}
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).parts
        source = relative[0].removesuffix(".py")
        for line, module in _imports(path):
            target = _part_of(module)
            if target and target != source and target in parts:
                graph.setdefault(source, {}).setdefault(target, []).append(
                    f"{path.relative_to(package.parent)}:{line}"
                )
    return graph


def _cycles(graph: Mapping[str, Mapping[str, list[str]]]) -> list[list[str]]:
    """Every cycle's parts, as strongly connected components of more than one part."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for other in graph.get(node, {}):
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_two_parts_of_the_package_import_each_other() -> None:
    graph = _import_graph(PACKAGE)
    cycles = _cycles(graph)
    where = [
        f"{a} -> {b}: {', '.join(graph[a][b][:3])}"
        for cycle in cycles
        for a in cycle
        for b in cycle
        if b in graph.get(a, {})
    ]
    assert not cycles, "import cycles between parts of the package:\n" + "\n".join(where)


def test_the_cycle_check_sees_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    package = tmp_path / "reconciler"
    (package / "deploy").mkdir(parents=True)
    (package / "backup").mkdir()
    (package / "deploy" / "passes.py").write_text("from reconciler.backup import jobs\n")
    (package / "backup" / "jobs.py").write_text(
        "def f():\n    from reconciler.deploy import passes\n"
    )
    assert _cycles(_import_graph(package)) == [["backup", "deploy"]]


def test_every_error_of_the_reconciler_is_in_errors_py_and_in_its_picture() -> None:
    """One tree, drawn in errors.py's docstring: a new class is drawn there too."""
    import reconciler.errors as errors

    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    doc = errors.__doc__ or ""
    undrawn = sorted(name for name in classes if not re.search(rf"\b{name}\b", doc))
    assert not undrawn, f"errors.py's picture does not show {undrawn}"
    elsewhere = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: class {node.name}"
        for path in _modules()
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")  # a module's own, caught where it is raised
        and any(
            isinstance(base, ast.Name) and base.id in classes | {"ReconcilerError"}
            for base in node.bases
        )
    ]
    assert not elsewhere, "errors of the reconciler outside errors.py:\n" + "\n".join(elsewhere)


def test_every_state_file_name_is_spelled_once_in_state_names() -> None:
    from reconciler.state import names

    # "git" and "backups" are words too (the git program, a log line): not checked.
    spelled = {
        value: key
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and key not in {"GIT_CACHE", "BACKUPS"}
    }
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r} "
        f"(names.{spelled[node.value]})"
        for path in _modules()
        if path.relative_to(PACKAGE).as_posix() != "state/names.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spelled
    ]
    assert not found, "state names spelled outside state/names.py:\n" + "\n".join(found)
