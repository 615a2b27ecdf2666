"""The fetch step of a pass: the git remote as a ``reconciler.ports.Source``.

``remote_head`` asks the remote where the branch points (``git ls-remote``: no
fetch, so an idle poll costs one round trip). ``checkout`` fetches that branch
into a bare cache repository and materialises exactly one commit as a folder
``CACHE/checkouts/<sha>`` that never changes afterwards: the pass validates and
applies from that folder, never from a mutable working tree.

Git is run as a subprocess rather than through gitpython: every call here is a
single plumbing command whose stderr we classify, and each needs its own
environment (no prompts, the deploy key) and a hard timeout that also ends the
helpers git starts (ssh, git-remote-https). A process group killed on timeout
does that; gitpython's Repo API adds nothing for ls-remote/fetch/archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from reconciler.decide.verification import (
    NotVerified,
    SignaturePolicy,
    Verification,
    judge,
    signature_kind,
)
from reconciler.errors import BranchNotFound, CommitNotFound, Unavailable
from reconciler.logs import event
from reconciler.ports import Checkout
from reconciler.redaction import redact_text, redact_url
from reconciler.state.files import PRIVATE_FILE_MODE, private_dir

_SHA = re.compile(r"[0-9a-f]{40}")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# git's own rule: "host:path" is scp-like ssh when no '/' comes before the ':'.
_SCP_LIKE = re.compile(r"^[^/:]+:")
_TMP_PREFIX = ".tmp-"
# What git check-ref-format forbids in a branch name (the parts that matter here).
_BAD_BRANCH = re.compile(r"[\x00-\x20\x7f:*?\[\\^~]|\.\.|@\{|//|/$|\.lock$|\.$")

# Attributes that would make ``git archive`` write something other than the
# blobs of the commit (export-ignore drops files, export-subst rewrites them,
# text/eol/filter/ident convert them). Placed in the cache repository's
# info/attributes, which outranks the commit's own .gitattributes.
_EXACT_ATTRIBUTES = (
    "* -export-ignore -export-subst -text -eol -filter -ident -working-tree-encoding\n"
)


class _ArchiveFailed(Unavailable):
    """``git archive`` failed on the cache: an object of the commit is missing or unreadable."""


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: str
    stderr: str


class _TimeoutError(Exception):
    pass


def _transport(url: str) -> str:
    """The transport git would use for ``url``: ssh, http, git, file or local (a path)."""
    match = _URL_SCHEME.match(url)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            return "ssh"
        if scheme in ("http", "https"):
            return "http"
        return scheme
    if _SCP_LIKE.match(url):
        return "ssh"
    return "local"


class GitSource:
    """A branch of a git remote, fetched into ``cache_dir`` (owned by this object).

    Layout of ``cache_dir``: ``repo.git`` (a bare cache of the branch's history),
    ``checkouts/<sha>`` (one complete folder per materialised commit; a folder
    of that name only ever appears by an atomic rename), ``known_hosts`` (when
    no other is given) and ``.lock`` (serialises fetches between processes
    sharing the cache, e.g. the daemon and a ``reconciler plan``).
    """

    def __init__(
        self,
        url: str,
        *,
        branch: str,
        cache_dir: Path,
        ssh_key: Path | None = None,
        known_hosts: Path | None = None,
        timeout_s: float = 60,
    ) -> None:
        self.transport = _transport(url)  # "ssh", "http", "git", "file" or "local"
        # A relative local path is pinned now: git runs with another cwd.
        # Private: it may hold a token; messages use ``safe_url``.
        self._url = str(Path(url).expanduser().absolute()) if self.transport == "local" else url
        if _BAD_BRANCH.search(branch) or branch.startswith(("-", "/")) or not branch:
            # It goes into a refspec: a ':' or '*' there would fetch something else.
            raise ValueError(f"not a valid branch name: {branch!r}")
        self.branch = branch
        self.cache_dir = cache_dir
        self.ssh_key = ssh_key
        if known_hosts is None:
            # install.sh puts one next to the key; otherwise the cache's, which
            # the user must fill (nothing is ever trusted on first use).
            beside_key = ssh_key.parent / "known_hosts" if ssh_key else None
            known_hosts = (
                beside_key if beside_key and beside_key.is_file() else cache_dir / "known_hosts"
            )
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s

    # -- paths ---------------------------------------------------------------

    @property
    def repo_dir(self) -> Path:
        return self.cache_dir / "repo.git"

    @property
    def checkouts_dir(self) -> Path:
        return self.cache_dir / "checkouts"

    @property
    def safe_url(self) -> str:
        return redact_url(self._url)

    # -- Source --------------------------------------------------------------

    def remote_head(self) -> str:
        """The commit ``refs/heads/<branch>`` points at on the remote."""
        ref = f"refs/heads/{self.branch}"
        result = self._remote_git(["ls-remote", "--", self._url, ref], what="ls-remote")
        for line in result.stdout.splitlines():
            sha, _, name = line.partition("\t")
            # ls-remote matches patterns on trailing path components, so
            # refs/heads/x/refs/heads/main would match too: compare exactly.
            if name == ref and _SHA.fullmatch(sha):
                return sha
        raise BranchNotFound(
            f"git: branch {self.branch!r} not found on {self.safe_url}: push it, "
            "or set RECONCILER_BRANCH to a branch that exists"
        )

    def checkout(self, commit: str) -> Checkout:
        """The files of exactly ``commit`` in ``checkouts/<commit>``.

        Returns an existing folder without touching the network; otherwise
        fetches the branch (only when the cache lacks the commit) and extracts.
        """
        commit = commit.lower()
        if not _SHA.fullmatch(commit):
            raise ValueError(f"not a full commit id: {commit!r}")
        final = self.checkouts_dir / commit
        if final.is_dir():
            return Checkout(commit=commit, root=final)
        with self._locked():
            if final.is_dir():  # another process made it while we waited
                return Checkout(commit=commit, root=final)
            self._remove_partial_checkouts()
            self._ensure_commit(commit)
            try:
                self._materialise(commit, final)
            except _ArchiveFailed as exc:
                # A fetch cut short (a full disk, a kill) can leave the commit
                # object without all of its trees and blobs; its presence stops
                # every later fetch, and a fetch negotiates from what the cache
                # claims to have. Start the cache again from nothing, once.
                event("git.cache_rebuilt", cache=str(self.repo_dir), error=str(exc))
                _remove(self.repo_dir)
                self._ensure_cache_repo()
                self._fetch(commit)
                self._materialise(commit, final)
        return Checkout(commit=commit, root=final)

    def verify(self, commit: str, policy: SignaturePolicy) -> Verification:
        """Is ``commit`` signed by a key ``policy`` allows? Fetches it when needed.

        Runs ``git verify-commit --raw`` with only the policy's keys in play
        (an allowed-signers file, or ``GNUPGHOME``); ``decide/verification.py``
        reads the answer. Nothing of the commit is extracted: a commit that
        fails never reaches the disk as files.
        """
        commit = commit.lower()
        if not _SHA.fullmatch(commit):
            raise ValueError(f"not a full commit id: {commit!r}")
        with self._locked():
            self._ensure_commit(commit)
        git_dir = ["--git-dir", str(self.repo_dir)]
        raw = self._local_git([*git_dir, "cat-file", "commit", commit]).stdout
        if signature_kind(raw) != policy.mode:  # unsigned or the wrong kind: no tool needed
            return judge(policy, commit=commit, commit_object=raw, returncode=1, output="")
        # The keyring is the list of trusted keys: owner trust plays no part.
        config = ["-c", "gpg.minTrustLevel=undefined"]
        env: dict[str, str] = {}
        if policy.mode == "ssh":
            config += ["-c", "gpg.format=ssh"]
            config += ["-c", f"gpg.ssh.allowedSignersFile={policy.allowed_signers}"]
        else:
            config += ["-c", "gpg.format=openpgp"]
            env["GNUPGHOME"] = str(policy.gpg_home)
        try:
            result = self._run(
                ["git", *config, *git_dir, "verify-commit", "--raw", commit], extra_env=env
            )
        except _TimeoutError:
            return NotVerified(commit, "error", f"timed out after {self.timeout_s:g}s")
        return judge(
            policy,
            commit=commit,
            commit_object=raw,
            returncode=result.returncode,
            output=result.stdout + result.stderr,
        )

    def prune_checkouts(self, keep: Collection[str]) -> None:
        """Remove every checkout folder not named in ``keep`` (and partial ones)."""
        keep_names = {sha.lower() for sha in keep}
        if not self.checkouts_dir.is_dir():
            return
        with self._locked():
            for entry in self.checkouts_dir.iterdir():
                if entry.name not in keep_names:
                    _remove(entry)

    def checkouts(self) -> list[str]:
        """The commits that have a complete checkout folder."""
        if not self.checkouts_dir.is_dir():
            return []
        return sorted(e.name for e in self.checkouts_dir.iterdir() if _SHA.fullmatch(e.name))

    # -- steps ---------------------------------------------------------------

    def _ensure_cache_repo(self) -> None:
        if (self.repo_dir / "HEAD").is_file():
            return
        # Made aside and renamed, so a crash never leaves a half repository
        # that later calls would take for a real one.
        _remove(self.repo_dir)
        private_dir(self.cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + "repo-", dir=self.cache_dir))
        try:
            self._local_git(["init", "--quiet", "--bare", str(tmp)])
            (tmp / "info").mkdir(exist_ok=True)
            (tmp / "info" / "attributes").write_text(_EXACT_ATTRIBUTES)
            tmp.rename(self.repo_dir)
        except BaseException:
            _remove(tmp)
            raise

    def _ensure_commit(self, commit: str) -> None:
        """The commit in the cache repository, fetched when missing (hold the lock)."""
        self._ensure_cache_repo()
        if not self._has_commit(commit):
            self._fetch(commit)

    def _has_commit(self, commit: str) -> bool:
        result = self._run(
            ["git", "--git-dir", str(self.repo_dir), "cat-file", "-e", f"{commit}^{{commit}}"]
        )
        return result.returncode == 0

    def _fetch(self, commit: str) -> None:
        # The URL is given on the command line, never stored as a remote, so a
        # token in it is not written to the cache's config. --force follows a
        # force-push. Not shallow: a full history makes every commit of the
        # branch available (the one polled may already be an ancestor of the
        # tip), and later fetches negotiate properly and send only what is new.
        refspec = f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}"
        self._remote_git(
            [
                # A detached auto-gc would outlive the call and its timeout.
                "-c",
                "gc.autoDetach=false",
                "-c",
                "maintenance.autoDetach=false",
                "--git-dir",
                str(self.repo_dir),
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "--",
                self._url,
                refspec,
            ],
            what="fetch",
        )
        if not self._has_commit(commit):
            raise CommitNotFound(
                f"git: commit {commit} is not on branch {self.branch!r} of {self.safe_url} "
                "(force-pushed away?): the next poll uses the branch's new head"
            )

    def _materialise(self, commit: str, final: Path) -> None:
        # Extracted into a dot-folder beside the target and renamed into place:
        # a folder named after a commit is always complete. git archive keeps
        # the executable bit and symlinks; tar.umask=022 gives the modes of a
        # normal clone (0644/0755).
        # The folders above a checkout are 0700 (the state dir holds secrets);
        # the checkout itself keeps git's modes (0755 folders, 0644 files):
        # services bind-mount its files and may run as a non-root user. The
        # 0700 folders above do not stop that: dockerd (root) resolves the
        # source path, and inside the container only the mounted files' own
        # modes count (tests/e2e/test_permissions.py checks it).
        private_dir(self.checkouts_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{commit}-", dir=self.checkouts_dir))
        archive = tmp / ".archive.tar"
        try:
            try:
                self._local_git(
                    [
                        "-c",
                        "tar.umask=022",
                        "--git-dir",
                        str(self.repo_dir),
                        "archive",
                        "--format=tar",
                        f"--output={archive}",
                        commit,
                    ]
                )
            except Unavailable as exc:
                raise _ArchiveFailed(str(exc)) from exc
            root = tmp / "root"
            try:
                with tarfile.open(archive) as tar:
                    _extract(tar, root)
            except (OSError, tarfile.TarError) as exc:
                raise Unavailable(
                    f"git: could not write the checkout of {commit} under "
                    f"{self.checkouts_dir}: {exc} (is the disk full?)"
                ) from exc
            os.chmod(root, 0o755)
            root.rename(final)
        finally:
            _remove(tmp)

    def _remove_partial_checkouts(self) -> None:
        """Drop what an interrupted extraction left (only ever dot-folders)."""
        for parent in (self.cache_dir, self.checkouts_dir):
            if parent.is_dir():
                for entry in parent.iterdir():
                    if entry.name.startswith(_TMP_PREFIX):
                        _remove(entry)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.cache_dir)
        with open(self.cache_dir / ".lock", "a", opener=_private_opener) as lock:
            # Holders only run git with timeouts, so the wait is bounded.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- running git -----------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("GIT_ASKPASS", "SSH_ASKPASS", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            env.pop(name, None)
        env.update(
            GIT_TERMINAL_PROMPT="0",  # never wait for a user name or password
            LC_ALL="C",  # stderr is matched below, so it must be in English
            LANGUAGE="C",
        )
        if self.transport == "ssh":
            ssh = ["ssh"]
            if self.ssh_key is not None:
                ssh += ["-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes"]
            ssh += [
                "-o",
                "BatchMode=yes",
                "-o",
                # Never accept-new: with an empty known_hosts (a failed
                # ssh-keyscan) that trusts whichever host answers first.
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                f"ConnectTimeout={max(1, int(self.timeout_s))}",
            ]
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        return env

    def _run(self, argv: list[str], *, extra_env: dict[str, str] | None = None) -> _Result:
        """Run ``argv`` with a hard timeout that ends git and every helper it started."""
        # A new session makes git, ssh and git-remote-* one process group, killed
        # together: killing only git would leave ssh holding the pipes open.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self._env(), **(extra_env or {})},
            cwd=self.cache_dir if self.cache_dir.is_dir() else None,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise _TimeoutError() from None
        return _Result(proc.returncode, stdout, stderr)

    def _local_git(self, args: list[str]) -> _Result:
        """A git command on the cache only: any failure is ours, not the remote's."""
        try:
            result = self._run(["git", *args])
        except _TimeoutError:
            raise Unavailable(
                f"git: {args[-1]} took longer than {self.timeout_s:g}s in {self.cache_dir}"
            ) from None
        if result.returncode != 0:
            raise Unavailable(
                f"git {' '.join(args[:1])} failed in {self.cache_dir}: "
                f"{redact_text(result.stderr.strip())}"
            )
        return result

    def _remote_git(self, args: list[str], *, what: str) -> _Result:
        """A git command that talks to the remote; failures become ``Unavailable``."""
        if self.transport == "ssh" and self.ssh_key is not None and not self.ssh_key.is_file():
            raise Unavailable(
                f"git: the deploy key {self.ssh_key} does not exist: run install.sh, "
                "or point RECONCILER_SSH_KEY at the private key"
            )
        if self.transport == "ssh" and not _has_content(self.known_hosts):
            host = self.safe_url
            raise Unavailable(
                f"git: {self.known_hosts} is missing or empty, so the host key of {host} "
                "cannot be checked: run install.sh again (it reads the key with ssh-keyscan), "
                "or write the server's line into that file (ssh-keyscan -p PORT HOST, compared "
                "with the fingerprint the git host publishes) or point RECONCILER_KNOWN_HOSTS "
                "at a file that holds it"
            )
        try:
            result = self._run(["git", *args])
        except _TimeoutError:
            raise Unavailable(
                f"git: timed out after {self.timeout_s:g}s in {what} of {self.safe_url}: "
                "check that the server is up and reachable from this machine"
            ) from None
        if result.returncode != 0:
            raise Unavailable(self._explain(result.stderr, what=what))
        return result

    def _explain(self, stderr: str, *, what: str) -> str:
        """A message saying what went wrong and what to do, with no credentials."""
        said = redact_text(" ".join(stderr.split()))
        low = said.lower()
        url = self.safe_url
        if "unprotected private key file" in low:
            cause = (
                f"the deploy key {self.ssh_key} is readable by others and ssh refuses it: "
                f"chmod 600 {self.ssh_key}"
            )
        elif "host key verification failed" in low or "identification has changed" in low:
            cause = (
                f"host key verification failed for {url}: if the server's key changed "
                f"on purpose, remove its line from {self.known_hosts}"
            )
        elif "permission denied" in low and self.transport == "ssh":
            key = f"{self.ssh_key}.pub" if self.ssh_key else "a deploy key"
            cause = (
                f"authentication failed for {url}: add the deploy key printed by install.sh "
                f"({key}) to the repository, with read access"
            )
        elif any(
            s in low
            for s in (
                "authentication failed",
                "could not read username",
                "could not read password",
                "returned error: 401",
                "returned error: 403",
            )
        ):
            cause = (
                f"authentication failed for {url}: put a valid token in the URL "
                "(https://TOKEN@host/owner/repo.git) with read access to the repository"
            )
        elif any(
            s in low
            for s in (
                "could not resolve host",
                "could not resolve hostname",
                "unable to look up",
                "name or service not known",
                "temporary failure in name resolution",
            )
        ):
            cause = (
                f"cannot resolve the host of {url}: check the host name in "
                "RECONCILER_REPO and this machine's DNS"
            )
        elif any(
            s in low
            for s in (
                "connection refused",
                "unable to connect",
                "failed to connect",
                "couldn't connect",
                "connection timed out",
                "no route to host",
                "network is unreachable",
                "connection reset",
                "connection closed",
                "unexpected disconnect",
                "the remote end hung up",
            )
        ):
            cause = (
                f"cannot reach {url}: check that the server is up and that this machine "
                "can connect to it (firewall, port)"
            )
        elif any(
            s in low
            for s in (
                "does not appear to be a git repository",
                "repository not found",
                "not found",
                "not exported",
                "no such file or directory",
            )
        ):
            cause = (
                f"no repository at {url}, or no read access to it: check RECONCILER_REPO "
                "and the deploy key's or token's access"
            )
        else:
            cause = f"{what} of {url} failed"
        return f"git: {cause} (git said: {said or 'nothing'})"


def _extract(tar: tarfile.TarFile, root: Path) -> None:
    """Extract keeping symlinks and modes, refusing any path outside ``root``."""
    if hasattr(tarfile, "tar_filter"):
        tar.extractall(root, filter="tar")
        return
    # Python before 3.11.4 (Debian 12 ships 3.11.2) has no extraction filters:
    # refuse what the "tar" filter would.
    for member in tar.getmembers():
        for name in (member.name, member.linkname if member.islnk() else ""):
            if name.startswith("/") or ".." in Path(name).parts:
                raise tarfile.TarError(f"unsafe path in the archive: {name!r}")
        if member.isdev():
            raise tarfile.TarError(f"device file in the archive: {member.name!r}")
    tar.extractall(root)  # every member was checked above


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, PRIVATE_FILE_MODE)


def _has_content(path: Path) -> bool:
    try:
        return path.read_text().strip() != ""
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
