"""compose.yaml -> DesiredState, as tables: tests/unit/cases/compose_{invalid,valid}/*.yaml.

Each case is a YAML document:

- ``files``: repository-relative path -> content, written under ``tmp_path``
  (the checked-out commit); ``symlinks``: path -> link target, optional;
- ``env``: the environment (optional); ``project``: RECONCILER_PROJECT (optional);
- invalid cases: ``expect``, the error lines, each an exact line or a
  substring of one; every error must be expected unless ``partial: true``;
- valid cases: ``expect``, a fragment of ``DesiredState.model_dump(mode="json")``
  (mappings: the keys given; lists: every item); ``{root}`` in a string is
  the checkout's path, ``<hash>`` matches any sha256 hex digest;
  ``service_order`` (optional) the services' names in order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.errors import InvalidDesiredState
from reconciler.model import checkout_hashing, content_reading, files, loading, text_files
from reconciler.model.loading import load_desired_state

CASES = Path(__file__).parent / "cases"


def _cases(kind: str) -> list[Any]:
    return [pytest.param(path, id=path.stem) for path in sorted((CASES / kind).glob("*.yaml"))]


def _checkout(case: dict[str, Any], root: Path) -> None:
    for rel, content in (case.get("files") or {}).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    # Bytes that are not UTF-8, written as latin-1 strings ("caf\xe9").
    for rel, content in (case.get("binary_files") or {}).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode("latin-1"))
    for rel, link in (case.get("symlinks") or {}).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(link)


def _load(case: dict[str, Any], root: Path) -> Any:
    _checkout(case, root)
    return load_desired_state(
        root,
        directory=case.get("directory", "desired-state"),
        project=case.get("project"),
        environ={k: str(v) for k, v in (case.get("env") or {}).items()},
    )


@pytest.mark.parametrize("case_path", _cases("compose_invalid"))
def test_invalid_compose_files_are_refused_with_every_error(
    case_path: Path, tmp_path: Path
) -> None:
    case = yaml.safe_load(case_path.read_text())
    with pytest.raises(InvalidDesiredState) as caught:
        _load(case, tmp_path)
    lines = [str(issue) for issue in caught.value.issues]
    unmatched = list(lines)
    for expected in case["expect"]:
        match = next((line for line in unmatched if expected in line), None)
        assert match is not None, f"no error matches {expected!r}; errors:\n" + "\n".join(lines)
        unmatched.remove(match)
    if not case.get("partial"):
        assert not unmatched, "unexpected errors:\n" + "\n".join(unmatched)
    for value in (case.get("env") or {}).values():
        # Values of variables may be secrets: never in a message.
        if len(str(value)) >= 6:
            assert str(value) not in "\n".join(lines)


@pytest.mark.parametrize("case_path", _cases("compose_valid"))
def test_valid_compose_files_resolve_to_the_desired_state(case_path: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_path.read_text())
    try:
        state = _load(case, tmp_path)
    except InvalidDesiredState as exc:
        pytest.fail(f"unexpected errors:\n{exc}")
    dumped = state.model_dump(mode="json")
    _assert_fragment(case["expect"], dumped, root=str(tmp_path), where="state")
    if "service_order" in case:
        assert list(state.services) == case["service_order"]


_HASH = re.compile(r"[0-9a-f]{64}")


def _assert_fragment(expected: Any, actual: Any, *, root: str, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: no key {key!r} in {sorted(actual)}"
            _assert_fragment(value, actual[key], root=root, where=f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (exp, act) in enumerate(zip(expected, actual, strict=True)):
            _assert_fragment(exp, act, root=root, where=f"{where}[{index}]")
    elif expected == "<hash>":
        assert isinstance(actual, str), f"{where}: {actual!r} is not a hash"
        assert _HASH.fullmatch(actual), f"{where}: {actual!r} is not a hash"
    elif isinstance(expected, str) and "<hash12>" in expected:
        pattern = re.escape(expected).replace(re.escape("<hash12>"), "[0-9a-f]{12}")
        assert isinstance(actual, str), f"{where}: {actual!r}"
        assert re.fullmatch(pattern, actual), f"{where}: {actual!r} !~ {expected!r}"
    elif isinstance(expected, str):
        assert actual == expected.replace("{root}", root), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_a_changed_file_in_the_commit_changes_the_image_tag_and_the_mount_hash(
    tmp_path: Path,
) -> None:
    case: dict[str, Any] = {
        "files": {
            "desired-state/compose.yaml": (
                "name: shop\n"
                "services:\n"
                "  web:\n"
                "    build: ../images/web\n"
                "    volumes: ['./conf/site.conf:/etc/site.conf:ro']\n"
            ),
            "desired-state/conf/site.conf": "listen 80\n",
            "images/web/Dockerfile": "FROM scratch\n",
        }
    }
    first = _load(case, tmp_path)
    assert _load(case, tmp_path) == first  # the same commit, the same state

    (tmp_path / "images/web/Dockerfile").write_text("FROM scratch\nLABEL v=2\n")
    (tmp_path / "desired-state/conf/site.conf").write_text("listen 8080\n")
    second = load_desired_state(tmp_path, project=None, environ={})

    before, after = first.services["web"], second.services["web"]
    assert before.image != after.image
    assert after.build is not None
    assert after.image == f"shop-web:{after.build.context_hash[:12]}"
    assert before.mounts[0].content_hash != after.mounts[0].content_hash


def test_a_dockerfile_outside_the_context_counts_in_the_image_tag(tmp_path: Path) -> None:
    # The site model of issue 11: the site's files are the context, the image's
    # recipe lives apart; a change to either must be a new tag (a rebuild).
    case: dict[str, Any] = {
        "files": {
            "desired-state/compose.yaml": (
                "name: shop\n"
                "services:\n"
                "  web:\n"
                "    build: {context: ../site, dockerfile: ../images/web/Dockerfile}\n"
            ),
            "site/index.php": "<?php echo 1;\n",
            "images/web/Dockerfile": "FROM scratch\n",
        }
    }
    first = _load(case, tmp_path).services["web"].image
    (tmp_path / "images/web/Dockerfile").write_text("FROM scratch\nLABEL v=2\n")
    second = load_desired_state(tmp_path, project=None, environ={}).services["web"].image
    (tmp_path / "site/index.php").write_text("<?php echo 2;\n")
    third = load_desired_state(tmp_path, project=None, environ={}).services["web"].image
    assert len({first, second, third}) == 3


def test_paths_outside_the_repository_are_never_read_or_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by tests/fuzz: "build: ../.." was reported, and then the loader still
    # hashed the folder above the checkout (here /tmp, whose files come and go:
    # a FileNotFoundError); a bind of a symlink to /etc hashed all of /etc.
    root = tmp_path / "repo"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.env").write_text("SECRET=1\n")
    (outside / "Dockerfile").write_text("FROM scratch\n")
    folder = root / "desired-state"
    folder.mkdir(parents=True)
    (folder / "link").symlink_to(outside)
    (folder / "compose.yaml").write_text(
        "name: shop\nservices:\n  web:\n    build: ../../outside\n"
        "    env_file: ../../outside/secret.env\n    volumes: ['./link:/data']\n"
    )
    hashed: list[Path] = []
    real_hash = files.hash_path

    def spied_hash(path: Path) -> str:
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(checkout_hashing, "hash_path", spied_hash)
    read: list[str] = []
    real_decode = text_files.decode_text

    def spied_decode(data: bytes, *, path: str) -> str:
        read.append(path)
        return real_decode(data, path=path)

    monkeypatch.setattr(loading, "decode_text", spied_decode)  # compose.yaml
    monkeypatch.setattr(content_reading, "decode_text", spied_decode)  # env files
    with pytest.raises(InvalidDesiredState) as caught:
        load_desired_state(root, environ={})
    assert len(caught.value.issues) == 3, caught.value
    assert all("leaves the repository" in i.message for i in caught.value.issues)
    assert hashed == []
    assert read == ["desired-state/compose.yaml"]


def test_a_dockerfile_outside_the_repository_is_never_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The context is inside; only its dockerfile: leaves (found by a helper's review).
    root = tmp_path / "repo"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    site = root / "desired-state" / "site"
    site.mkdir(parents=True)
    (root / "desired-state" / "compose.yaml").write_text(
        "name: shop\nservices:\n  web:\n    build:\n      context: ./site\n"
        "      dockerfile: ../../../Dockerfile\n"
    )
    hashed: list[Path] = []
    real_hash = files.hash_path

    def spied_hash(path: Path, **options: Any) -> str:
        hashed.append(path)
        return real_hash(path, **options)

    monkeypatch.setattr(checkout_hashing, "hash_path", spied_hash)
    with pytest.raises(InvalidDesiredState) as caught:
        load_desired_state(root, environ={})
    assert any("leaves the repository" in i.message for i in caught.value.issues), caught.value
    assert tmp_path / "Dockerfile" not in hashed


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # Nine lines whose aliases expand to 9**9 values: without a limit the loader
    # walks them all (hours, and memory) instead of refusing the commit.
    lines = ["name: shop", 'x-a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        lines.append(f"x-a{level}: &a{level} [{','.join([f'*a{level - 1}'] * 9)}]")
    lines += ["services:", "  web:", "    image: x", "    command: *a8"]
    folder = tmp_path / "desired-state"
    folder.mkdir()
    (folder / "compose.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidDesiredState) as caught:
        load_desired_state(tmp_path, environ={})
    [issue] = caught.value.issues
    assert issue.path == "desired-state/compose.yaml"
    assert "values once aliases (*name) are expanded" in issue.message
