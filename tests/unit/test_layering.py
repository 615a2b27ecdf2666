"""The layers the code is read by: pure deciding parts, thin adapters that act.

Only ``reconciler/adapters/`` talks to the outside world's libraries (the
Docker SDK, boto3, GitPython, requests): everything else holds what an
adapter gives it (README.md, "Architecture"). And the arrows point one way:
adapters, the model and the deciding parts never import the flows.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
OUTSIDE_LIBRARIES = {"docker", "boto3", "botocore", "git", "requests"}


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
        if module.startswith(("reconciler.runtime", "reconciler.cli"))
    ]
    assert not offending, "\n".join(offending)


def test_the_check_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import docker.errors\n    from git import Repo\n")
    assert _imports(module) == [(2, "docker.errors"), (3, "git")]
