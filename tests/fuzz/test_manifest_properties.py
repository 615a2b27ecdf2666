"""Any input to the manifest loaders gives a valid model or our own validation error.

compose.yaml (``load_desired_state``), backup.yaml, restore.yaml and the
``${VAR}`` interpolation are fed raw bytes, random text, any YAML tree and
near-valid files built from the supported keys. The property: the result is a
model, or ``InvalidDesiredState`` whose issues each name the file (and a line
and key where there is one) with a message; never another exception. A valid
compose.yaml is also planned against an empty engine, to show the model holds
what the planner relies on (no dependency cycle, a project name).

Each example writes its own checkout into a fresh temporary folder (pytest's
``tmp_path`` is one folder per test, not per example).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from reconciler.decide.planning import plan
from reconciler.errors import InvalidDesiredState
from reconciler.model.backup_policy import BackupPolicy, load_backup_policy, parse_backup_policy
from reconciler.model.desired import DesiredState, ServiceSpec, VolumeSpec
from reconciler.model.interpolation import InterpolationError, interpolate, interpolate_string
from reconciler.model.loading import load_desired_state
from reconciler.model.observed import Observed
from reconciler.model.restore_requests import (
    RestoreRequest,
    load_restore_requests,
    parse_restore_requests,
)
from reconciler.model.yaml_lines import LineMap
from tests.fuzz import manifest_strategies as ms

COMPOSE = f"{ms.DIRECTORY}/compose.yaml"
BACKUP = f"{ms.DIRECTORY}/backup.yaml"
RESTORE = f"{ms.DIRECTORY}/restore.yaml"
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")

# What backup.yaml and restore.yaml are checked against: a MariaDB service and two volumes.
DESIRED = DesiredState(
    project="shop",
    services={
        "db": ServiceSpec(name="db", image="mariadb:11.4"),
        "web": ServiceSpec(name="web", image="nginx:1.27"),
    },
    networks={},
    volumes={key: VolumeSpec(key=key, name=f"shop_{key}") for key in ("data", "site")},
)


@contextmanager
def checkout(main_file: str, content: str | bytes) -> Iterator[Path]:
    """A fresh checked-out commit holding ``ms.CHECKOUT`` and ``main_file``."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        root = Path(folder)
        for rel, text in ms.CHECKOUT.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        target = root / main_file
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        yield root


def dump(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


def assert_clear(error: InvalidDesiredState, path: str) -> None:
    """Every issue names the file, a line that is not negative and a message.

    The file is ``path``, or a file it names in the same folder (an env_file's
    bad line is reported at its own line, in that file).
    """
    assert error.issues, "an InvalidDesiredState without any issue"
    folder = path.rsplit("/", 1)[0] + "/"
    for issue in error.issues:
        assert issue.path == path or issue.path.startswith(folder), issue
        assert issue.line >= 0, issue
        assert issue.message.strip(), issue
        shown = issue.path
        assert str(issue).startswith(f"{shown}:" if issue.line else f"{shown}: "), issue


def load_compose(content: str | bytes, environ: Mapping[str, str]) -> DesiredState | None:
    with checkout(COMPOSE, content) as root:
        try:
            state = load_desired_state(root, directory=ms.DIRECTORY, environ=environ)
        except InvalidDesiredState as exc:
            assert_clear(exc, COMPOSE)
            event(f"invalid: {len(exc.issues)} issue(s)" if len(exc.issues) < 3 else "invalid")
            return None
    event("valid")
    assert _PROJECT.fullmatch(state.project)
    # The planner's assumptions about a valid model: no cycle, references resolve.
    result = plan(state, Observed())
    assert not result.conflicts or any("external" in c for c in result.conflicts)
    return state


# --- compose.yaml ------------------------------------------------------------------


@given(content=st.one_of(ms.binary, ms.yaml_text), environ=ms.environs)
def test_compose_from_any_bytes_or_text(content: str | bytes, environ: dict[str, str]) -> None:
    load_compose(content, environ)


@given(tree=ms.yaml_trees, environ=ms.environs)
def test_compose_from_any_yaml_tree(tree: Any, environ: dict[str, str]) -> None:
    load_compose(dump(tree), environ)


@given(
    tree=ms.yaml_trees.map(lambda t: {"name": "shop", "services": t}),
    environ=ms.environs,
)
def test_compose_services_from_any_yaml_tree(tree: Any, environ: dict[str, str]) -> None:
    load_compose(dump(tree), environ)


@given(text=ms.aliased_yaml(), environ=ms.environs)
def test_compose_with_anchors_aliases_and_merge_keys(text: str, environ: dict[str, str]) -> None:
    load_compose(text, environ)


@given(compose=ms.compose_files, environ=ms.environs)
def test_compose_near_valid_files(compose: dict[str, Any], environ: dict[str, str]) -> None:
    load_compose(dump(compose), environ)


@given(compose=ms.mutated(ms.valid_compose_files()), environ=ms.environs)
def test_compose_valid_files_with_one_mutation(
    compose: dict[str, Any], environ: dict[str, str]
) -> None:
    load_compose(dump(compose), environ)


# --- backup.yaml and restore.yaml ------------------------------------------------


def parse_backup(text: str, environ: Mapping[str, str]) -> BackupPolicy | None:
    try:
        return parse_backup_policy(
            text, path=BACKUP, desired=DESIRED, environ=environ, default_target="file:///b"
        )
    except InvalidDesiredState as exc:
        assert_clear(exc, BACKUP)
        return None


def parse_restore(text: str, environ: Mapping[str, str]) -> tuple[RestoreRequest, ...] | None:
    try:
        requests = parse_restore_requests(text, path=RESTORE, desired=DESIRED, environ=environ)
    except InvalidDesiredState as exc:
        assert_clear(exc, RESTORE)
        return None
    assert len({r.id for r in requests}) == len(requests)
    return requests


@given(content=st.one_of(ms.binary, ms.yaml_text))
def test_backup_and_restore_files_from_any_bytes(content: str | bytes) -> None:
    for name, loader in ((BACKUP, _load_backup_file), (RESTORE, _load_restore_file)):
        with checkout(name, content) as root:
            try:
                loader(root)
            except InvalidDesiredState as exc:
                assert_clear(exc, name)


def _load_backup_file(root: Path) -> object:
    return load_backup_policy(
        root, directory=ms.DIRECTORY, desired=DESIRED, environ={}, default_target="file:///b"
    )


def _load_restore_file(root: Path) -> object:
    return load_restore_requests(root, directory=ms.DIRECTORY, desired=DESIRED, environ={})


@given(tree=ms.yaml_trees, environ=ms.environs)
def test_backup_and_restore_from_any_yaml_tree(tree: Any, environ: dict[str, str]) -> None:
    parse_backup(dump(tree), environ)
    parse_restore(dump(tree), environ)


@given(policy=ms.backup_files, environ=ms.environs)
def test_backup_near_valid_files(policy: dict[str, Any], environ: dict[str, str]) -> None:
    parse_backup(dump(policy), environ)


@given(requests=ms.restore_files, environ=ms.environs)
def test_restore_near_valid_files(requests: dict[str, Any], environ: dict[str, str]) -> None:
    parse_restore(dump(requests), environ)


# --- ${VAR} interpolation ---------------------------------------------------------

_templates = st.text(
    st.one_of(st.sampled_from(list("${}:-?+ _aAB1")), st.characters(codec="utf-8")), max_size=40
)
_template_env = st.dictionaries(st.sampled_from(["A", "B", "a", "_"]), st.text(max_size=5))


@given(text=_templates, environ=_template_env)
def test_interpolation_fills_or_explains(text: str, environ: dict[str, str]) -> None:
    try:
        interpolate_string(text, environ)
    except InterpolationError as exc:
        message = str(exc)
        assert message
        # Values are secrets: a message never holds one (unless the template
        # itself wrote the same text, as a ?message or a name).
        for value in environ.values():
            if len(value) >= 3 and value not in text:
                assert value not in message


@given(text=st.text(st.characters(codec="utf-8", exclude_characters="$"), max_size=40))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert interpolate_string(text, {}) == text


@given(tree=ms.yaml_trees, environ=_template_env)
def test_interpolation_of_any_tree_gives_issues_not_exceptions(
    tree: Any, environ: dict[str, str]
) -> None:
    line_map = LineMap(COMPOSE)
    _result, issues = interpolate(tree, environ, line_map=line_map)
    for issue in issues:
        assert issue.path == COMPOSE
        assert issue.message
