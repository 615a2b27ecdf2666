"""GitSource against real remotes: git daemon, sshd with a deploy key, http-backend,
file:// and local paths; polls, force-pushes, failures and interrupted checkouts."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.adapters.git_source import GitSource
from reconciler.errors import BranchNotFound, CommitNotFound, Unavailable
from tests.fixtures.git_remotes import GitWorkRepo, HttpRemote, ServedRemote, SshRemote, git

pytestmark = pytest.mark.integration

FILES: dict[str, str | bytes] = {
    "desired-state/compose.yaml": "services:\n  web:\n    image: nginx\n",
    "bin/run.sh": "#!/bin/sh\necho hi\n",
    "data/blob.bin": bytes(range(256)),
    # Would be dropped or rewritten by a plain `git archive`: must not be.
    ".gitattributes": "ignored.txt export-ignore\nsubst.txt export-subst\n",
    "ignored.txt": "still here\n",
    "subst.txt": "$Format:%H$\n",
}


def _populate(repo: GitWorkRepo) -> str:
    repo.write(FILES)
    repo.chmod("bin/run.sh", 0o755)
    repo.symlink("desired-state/link.yaml", "compose.yaml")
    sha = repo.commit("desired state")
    repo.push()
    return sha


def _git_blob_sha(path: Path) -> str:
    data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def assert_matches_commit(root: Path, repo: GitWorkRepo, sha: str) -> None:
    """Exactly the commit's files: same paths, bytes, executable bits, symlinks."""
    expected = repo.tree(sha)
    found = {
        str(p.relative_to(root)): p for p in root.rglob("*") if p.is_symlink() or not p.is_dir()
    }
    assert sorted(found) == sorted(expected)
    for name, (mode, blob) in expected.items():
        path = found[name]
        assert _git_blob_sha(path) == blob, name
        if mode == "120000":
            assert path.is_symlink(), name
        else:
            assert not path.is_symlink(), name
            perm = stat.S_IMODE(path.lstat().st_mode)
            assert perm == (0o755 if mode == "100755" else 0o644), (name, oct(perm))


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.lstat().st_mtime_ns, p.lstat().st_size)
        for p in [directory, *directory.rglob("*")]
    }


def _source(
    url: str,
    tmp_path: Path,
    *,
    ssh_key: Path | None = None,
    known_hosts: Path | None = None,
    timeout_s: float = 60,
) -> GitSource:
    return GitSource(
        url,
        branch="main",
        cache_dir=tmp_path / "cache",
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        timeout_s=timeout_s,
    )


# -- every transport -------------------------------------------------------------

Transport = Callable[[pytest.FixtureRequest, Path], tuple[GitSource, GitWorkRepo]]


@pytest.fixture(
    params=["git-daemon", "ssh", "http", "http-auth", "file-url", "bare-path", "work-path"]
)
def transport_source(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[GitSource, GitWorkRepo]:
    """A GitSource on one transport and the working repository behind it."""
    kind: str = request.param
    if kind == "git-daemon":
        served: ServedRemote = request.getfixturevalue("git_daemon")
        return _source(served.url, tmp_path), served.repo
    if kind == "ssh":
        ssh: SshRemote = request.getfixturevalue("ssh_git_server")
        src = _source(ssh.url, tmp_path, ssh_key=ssh.key, known_hosts=ssh.known_hosts)
        return src, ssh.repo
    if kind in ("http", "http-auth"):
        fixture = "http_git_server" if kind == "http" else "http_git_server_with_auth"
        http: HttpRemote = request.getfixturevalue(fixture)
        return _source(http.url, tmp_path), http.repo
    repo: GitWorkRepo = request.getfixturevalue("git_workrepo")
    if kind == "file-url":
        return _source(repo.file_url, tmp_path), repo
    if kind == "bare-path":
        return _source(str(repo.remote), tmp_path), repo
    return _source(str(repo.path), tmp_path), repo  # a non-bare repository by path


def test_remote_head_and_checkout_over_each_transport(
    transport_source: tuple[GitSource, GitWorkRepo],
) -> None:
    source, repo = transport_source
    first = repo.head()
    assert source.remote_head() == first

    sha = _populate(repo)
    assert source.remote_head() == sha
    checkout = source.checkout(sha)
    assert checkout.commit == sha
    assert checkout.root == source.cache_dir / "checkouts" / sha
    assert_matches_commit(checkout.root, repo, sha)
    # An older commit of the branch can be materialised too.
    assert_matches_commit(source.checkout(first).root, repo, first)


def test_local_relative_path_is_pinned_at_construction(
    git_workrepo: GitWorkRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_workrepo.remote.parent)
    source = _source(git_workrepo.remote.name, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert source.remote_head() == git_workrepo.head()


# -- polling ---------------------------------------------------------------------


def test_idle_poll_does_not_fetch(git_daemon: ServedRemote, tmp_path: Path) -> None:
    source = _source(git_daemon.url, tmp_path)
    sha = source.remote_head()
    source.checkout(sha)
    before = _snapshot(source.cache_dir)

    assert source.remote_head() == sha
    checkout = source.checkout(sha)
    assert _snapshot(source.cache_dir) == before

    # With the server gone, a commit already checked out still needs nothing of it.
    git_daemon.stop()
    assert source.checkout(sha) == checkout
    with pytest.raises(Unavailable):
        source.remote_head()


def test_new_commit_is_seen_and_earlier_checkout_is_untouched(
    http_git_server: HttpRemote, tmp_path: Path
) -> None:
    source = _source(http_git_server.url, tmp_path)
    old = source.checkout(source.remote_head())
    old_snapshot = _snapshot(old.root)

    new_sha = http_git_server.commit_files(
        {"desired-state/compose.yaml": "services: {}\n", "README.md": "changed\n"},
        message="second",
    )
    assert source.remote_head() == new_sha
    new = source.checkout(new_sha)
    assert new.root != old.root
    assert (new.root / "desired-state/compose.yaml").read_text() == "services: {}\n"
    assert_matches_commit(new.root, http_git_server.repo, new_sha)
    assert _snapshot(old.root) == old_snapshot
    assert_matches_commit(old.root, http_git_server.repo, old.commit)


def test_force_push_to_an_older_history_is_followed(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    repo = git_daemon.repo
    base = repo.head()
    source = _source(git_daemon.url, tmp_path)
    ahead = git_daemon.commit_files({"a.txt": "a\n"}, message="ahead")
    source.checkout(source.remote_head())

    repo.force_push_to(base)
    rewritten = git_daemon.commit_files({"b.txt": "b\n"}, message="rewritten")
    assert source.remote_head() == rewritten
    checkout = source.checkout(rewritten)
    assert_matches_commit(checkout.root, repo, rewritten)
    assert not (checkout.root / "a.txt").exists()

    # Straight back to the old base, which the cache already holds.
    repo.force_push_to(base)
    assert source.remote_head() == base
    assert_matches_commit(source.checkout(base).root, repo, base)
    assert ahead != rewritten


def test_commit_that_moved_on_is_fetched_or_reported(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    source = _source(git_daemon.url, tmp_path)
    polled = git_daemon.commit_files({"one.txt": "1\n"})
    git_daemon.commit_files({"two.txt": "2\n"})  # pushed between ls-remote and fetch
    assert_matches_commit(source.checkout(polled).root, git_daemon.repo, polled)


def test_commit_not_on_the_remote_is_a_clear_error(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    source = _source(git_daemon.url, tmp_path)
    unknown = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CommitNotFound, match=unknown) as err:
        source.checkout(unknown)
    assert "main" in str(err.value)
    assert not (source.cache_dir / "checkouts" / unknown).exists()
    with pytest.raises(ValueError, match="full commit id"):
        source.checkout("../../etc")


def test_prune_checkouts_keeps_only_what_is_asked(
    git_workrepo: GitWorkRepo, tmp_path: Path
) -> None:
    source = _source(git_workrepo.file_url, tmp_path)
    first = source.checkout(git_workrepo.head())
    second = source.checkout(git_workrepo.commit_files({"x": "x\n"}))
    (source.cache_dir / "checkouts" / ".tmp-leftover").mkdir()
    source.prune_checkouts({second.commit})
    assert source.checkouts() == [second.commit]
    assert not first.root.exists()
    assert os.listdir(source.cache_dir / "checkouts") == [second.commit]
    source.prune_checkouts([])
    assert source.checkouts() == []


# -- interrupted checkouts -------------------------------------------------------


def test_leftover_of_an_interrupted_extraction_is_not_a_checkout(
    git_workrepo: GitWorkRepo, tmp_path: Path
) -> None:
    source = _source(git_workrepo.file_url, tmp_path)
    sha = _populate(git_workrepo)
    # What a crash mid-extraction leaves: a temp folder with some of the files.
    partial = source.cache_dir / "checkouts" / f".tmp-{sha}-crashed" / "root"
    (partial / "desired-state").mkdir(parents=True)
    (partial / "desired-state" / "compose.yaml").write_text("services: {}\n")
    assert source.checkouts() == []

    checkout = source.checkout(sha)
    assert_matches_commit(checkout.root, git_workrepo, sha)
    assert os.listdir(source.cache_dir / "checkouts") == [sha]


def test_extraction_failing_midway_leaves_no_checkout(
    git_workrepo: GitWorkRepo, tmp_path: Path
) -> None:
    # A commit whose second file cannot be written here: git allows a name
    # longer than the file system's 255 bytes, so extraction really fails
    # after the first file is on disk.
    blob = git("hash-object", "-w", "--stdin", cwd=git_workrepo.path).strip()
    for name in ("a.txt", "z" * 300):
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", cwd=git_workrepo.path)
    git("commit", "--quiet", "-m", "unwritable", cwd=git_workrepo.path)
    git_workrepo.push()
    sha = git_workrepo.head()
    source = _source(git_workrepo.file_url, tmp_path)

    with pytest.raises(Unavailable, match="could not write the checkout") as err:
        source.checkout(sha)
    assert "name too long" in str(err.value)
    assert os.listdir(source.cache_dir / "checkouts") == []
    assert source.checkouts() == []

    git("rm", "--quiet", "--cached", "z" * 300, cwd=git_workrepo.path)
    fixed = git_workrepo.commit("drop the long name")
    git_workrepo.push()
    assert_matches_commit(source.checkout(fixed).root, git_workrepo, fixed)
    assert os.listdir(source.cache_dir / "checkouts") == [fixed]


# -- failures --------------------------------------------------------------------


def test_missing_branch_names_branch_and_redacted_url(
    http_git_server_with_auth: HttpRemote, tmp_path: Path
) -> None:
    source = GitSource(
        http_git_server_with_auth.url, branch="release", cache_dir=tmp_path / "cache"
    )
    with pytest.raises(BranchNotFound) as err:
        source.remote_head()
    message = str(err.value)
    assert "'release'" in message
    assert http_git_server_with_auth.base_url.replace("http://", "http://***@") in message
    assert "s3cret-token" not in message
    assert "git-user" not in message
    with pytest.raises(Unavailable):
        source.checkout(http_git_server_with_auth.repo.head())


def test_ssh_wrong_key_is_an_authentication_failure(
    ssh_git_server: SshRemote, tmp_path: Path
) -> None:
    source = _source(
        ssh_git_server.url,
        tmp_path,
        ssh_key=ssh_git_server.wrong_key,
        known_hosts=ssh_git_server.known_hosts,
    )
    with pytest.raises(Unavailable, match="authentication failed") as err:
        source.remote_head()
    message = str(err.value)
    assert ssh_git_server.url in message
    assert "deploy key" in message
    assert f"{ssh_git_server.wrong_key}.pub" in message
    with pytest.raises(Unavailable, match="authentication failed"):
        source.checkout(ssh_git_server.repo.head())


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_ssh_missing_or_empty_known_hosts_is_refused_never_trusted_on_first_use(
    ssh_git_server: SshRemote, tmp_path: Path, content: str | None
) -> None:
    known_hosts = tmp_path / "fresh_known_hosts"
    if content is not None:
        known_hosts.write_text(content)
    source = _source(
        ssh_git_server.url, tmp_path, ssh_key=ssh_git_server.key, known_hosts=known_hosts
    )
    with pytest.raises(Unavailable, match="missing or empty") as err:
        source.remote_head()
    assert str(known_hosts) in str(err.value)
    assert "RECONCILER_KNOWN_HOSTS" in str(err.value)
    # Nothing was learnt from the server either.
    assert not known_hosts.exists() or not known_hosts.read_text().strip()


def test_ssh_a_changed_host_key_is_refused_with_what_to_do(
    ssh_git_server: SshRemote, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{ssh_git_server.port} "
        + ssh_git_server.wrong_key.with_suffix(".pub").read_text()
    )
    source = _source(
        ssh_git_server.url, tmp_path, ssh_key=ssh_git_server.key, known_hosts=known_hosts
    )
    with pytest.raises(Unavailable, match="host key") as err:
        source.remote_head()
    assert str(known_hosts) in str(err.value)


def test_ssh_known_hosts_defaults_beside_the_key_else_in_the_cache(
    ssh_git_server: SshRemote, tmp_path: Path
) -> None:
    beside = _source(ssh_git_server.url, tmp_path, ssh_key=ssh_git_server.key)
    assert beside.known_hosts == ssh_git_server.known_hosts
    assert beside.remote_head() == ssh_git_server.repo.head()

    lone_key = tmp_path / "keys" / "deploy"
    lone_key.parent.mkdir()
    shutil.copy2(ssh_git_server.key, lone_key)
    source = _source(ssh_git_server.url, tmp_path / "other", ssh_key=lone_key)
    assert source.known_hosts == tmp_path / "other" / "cache" / "known_hosts"
    with pytest.raises(Unavailable, match="missing or empty"):
        source.remote_head()
    source.known_hosts.parent.mkdir(parents=True)
    shutil.copy2(ssh_git_server.known_hosts, source.known_hosts)
    assert source.checkout(source.remote_head()).commit == ssh_git_server.repo.head()


def test_the_cache_is_private_and_checkouts_keep_gits_modes(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        source = _source(git_daemon.url, tmp_path)
        checkout = source.checkout(source.remote_head())
    finally:
        os.umask(old)
    assert stat.S_IMODE(source.cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(source.checkouts_dir.stat().st_mode) == 0o700
    # Services bind-mount these and may run as a non-root user.
    assert stat.S_IMODE(checkout.root.stat().st_mode) == 0o755
    files = [p for p in checkout.root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) in (0o644, 0o755), path


def test_two_sources_sharing_a_cache_make_one_checkout(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    sha = _populate(git_daemon.repo)
    sources = [_source(git_daemon.url, tmp_path) for _ in range(4)]
    results: list[Path] = []
    errors: list[BaseException] = []

    def run(source: GitSource) -> None:
        try:
            results.append(source.checkout(sha).root)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert set(results) == {tmp_path / "cache" / "checkouts" / sha}
    assert os.listdir(tmp_path / "cache" / "checkouts") == [sha]
    assert_matches_commit(results[0], git_daemon.repo, sha)


def test_ssh_key_that_does_not_exist_is_named(ssh_git_server: SshRemote, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    source = _source(ssh_git_server.url, tmp_path, ssh_key=missing)
    with pytest.raises(Unavailable, match="no-such-key"):
        source.remote_head()


@pytest.mark.parametrize(("user", "password"), [("git-user", "wrong-pass"), ("nobody", "x")])
def test_http_wrong_credentials_are_an_authentication_failure(
    http_git_server_with_auth: HttpRemote, tmp_path: Path, user: str, password: str
) -> None:
    url = http_git_server_with_auth.url_with(user, password)
    source = _source(url, tmp_path)
    with pytest.raises(Unavailable, match="authentication failed") as err:
        source.remote_head()
    message = str(err.value)
    assert password not in message
    assert user not in message
    assert "s3cret-token" not in message
    with pytest.raises(Unavailable, match="authentication failed") as err:
        source.checkout(http_git_server_with_auth.repo.head())
    assert password not in str(err.value)


def test_http_without_credentials_never_prompts(
    http_git_server_with_auth: HttpRemote, tmp_path: Path
) -> None:
    source = _source(http_git_server_with_auth.base_url, tmp_path, timeout_s=20)
    with pytest.raises(Unavailable, match="authentication failed"):
        source.remote_head()


@pytest.mark.parametrize("server", ["git_daemon", "ssh_git_server", "http_git_server"])
def test_stopped_server_is_unavailable(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    served: ServedRemote = request.getfixturevalue(server)
    source = _source(
        served.url,
        tmp_path,
        ssh_key=served.key if isinstance(served, SshRemote) else None,
        known_hosts=served.known_hosts if isinstance(served, SshRemote) else None,
    )
    sha = source.remote_head()
    served.stop()
    with pytest.raises(Unavailable, match="cannot reach"):
        source.remote_head()
    with pytest.raises(Unavailable, match="cannot reach"):
        source.checkout(sha)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("scheme", ["git", "ssh", "http"])
def test_silent_server_times_out(silent_port: int, tmp_path: Path, scheme: str) -> None:
    user = "root@" if scheme == "ssh" else ""
    known_hosts = tmp_path / "known_hosts"  # any line: the server never gets to show a key
    known_hosts.write_text(f"[127.0.0.1]:{silent_port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    source = _source(
        f"{scheme}://{user}127.0.0.1:{silent_port}/r.git",
        tmp_path,
        known_hosts=known_hosts,
        timeout_s=2,
    )
    with pytest.raises(Unavailable, match="timed out after 2s"):
        source.remote_head()


def test_unknown_host_is_unavailable(tmp_path: Path) -> None:
    source = _source("https://tok@no-such-host.invalid/r.git", tmp_path, timeout_s=20)
    with pytest.raises(Unavailable) as err:
        source.remote_head()
    message = str(err.value)
    assert "no-such-host.invalid" in message
    assert "tok@" not in message


def test_missing_repository_is_unavailable(git_daemon: ServedRemote, tmp_path: Path) -> None:
    source = _source(git_daemon.url.replace("remote.git", "nope.git"), tmp_path)
    with pytest.raises(Unavailable, match="no repository at"):
        source.remote_head()


def test_url_that_looks_like_an_option_is_not_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    for url in ("--upload-pack=touch injected", "-oProxyCommand=touch injected:r.git"):
        source = _source(url, tmp_path, timeout_s=20)
        with pytest.raises(Unavailable):
            source.remote_head()
        with pytest.raises(Unavailable):
            source.checkout("0123456789abcdef0123456789abcdef01234567")
    assert list(tmp_path.rglob("injected")) == []


def test_a_commit_fetched_without_all_its_objects_is_fetched_again(
    git_daemon: ServedRemote, tmp_path: Path
) -> None:
    # Found by tests/faults/test_state_full.py: a fetch into a full state
    # folder wrote the commit object but not every blob; once space was back,
    # every pass failed with "invalid object" (the commit was "present", so
    # never fetched again) until someone deleted the cache by hand.
    source = _source(git_daemon.url, tmp_path)
    sha = _populate(git_daemon.repo)
    checkout = source.checkout(sha)
    blob = _git_blob_sha(checkout.root / "desired-state" / "compose.yaml")
    shutil.rmtree(checkout.root)
    (source.repo_dir / "objects" / blob[:2] / blob[2:]).unlink()

    again = source.checkout(sha)
    assert_matches_commit(again.root, git_daemon.repo, sha)
