"""Where backups go: an ``ObjectStore`` protocol, an S3 store and a local-folder store.

The backup pipeline streams each artifact into ``put_stream`` and never holds a
whole artifact: S3 gets a multipart upload whose part size grows with the part
count (so a stream of unknown length never hits S3's 10,000-part limit), file
targets get a temporary file renamed into place. Keys are relative to the
target (``s3://bucket/prefix`` or ``file:///path``).

Every library exception becomes a ``StoreError`` whose message says what went
wrong and what to do; its ``reason`` tells the caller which fault it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import botocore.exceptions

from reconciler.errors import (
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from reconciler.state.files import private_dir, private_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
# S3's rules: parts of 5 MiB to 5 GiB, at most 10,000 parts per upload.
MAX_PARTS = 10_000
BASE_PART_SIZE = 8 * MiB
# The part size doubles every this many parts: 8 MiB parts up to ~16 GiB,
# then 16, 32, 64 and finally 128 MiB, so 10,000 parts carry ~484 GiB, more
# than one volume of a single VM holds. Memory follows the part size (at most
# UPLOAD_CONCURRENCY + 1 parts): ~24 MiB for the usual backup, ~100 MiB at
# 100 GiB, ~400 MiB at the very end of the range. A larger stream fails with
# "too-large" rather than growing parts (and memory) without bound.
PARTS_PER_STEP = 2_000
# Parts uploaded at once while the next one fills: overlaps compression and
# network without letting memory grow (at most this + 1 parts in memory).
UPLOAD_CONCURRENCY = 2
READ_CHUNK = 1 * MiB


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the target
    size: int
    modified: datetime


class ObjectStore(Protocol):
    """A flat key space under one target URL."""

    @property
    def url(self) -> str: ...

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store everything ``chunks`` yields under ``key``; return the byte count.

        Either the whole object is stored or none of it: a failure part way
        leaves no object under ``key``.
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_stream(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; raises ``ObjectNotFound`` when absent."""
        ...

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def delete(self, keys: Sequence[str]) -> None: ...


def part_size(part_number: int) -> int:
    """The size of part ``part_number`` (1-based) of a multipart upload of unknown length."""
    if part_number < 1:
        raise ValueError("parts are numbered from 1")
    return int(BASE_PART_SIZE * 2 ** ((part_number - 1) // PARTS_PER_STEP))


def max_stream_size() -> int:
    """The largest stream ``part_size`` can carry within ``MAX_PARTS`` parts."""
    return sum(part_size(n) for n in range(1, MAX_PARTS + 1))


def open_store(url: str, *, max_attempts: int = 5) -> ObjectStore:
    """The store for a target URL: ``s3://bucket[/prefix]`` or ``file:///path``."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{url}: no bucket: write s3://BUCKET/PREFIX", reason="invalid-target")
        return S3Store(parsed.netloc, parsed.path.strip("/"), max_attempts=max_attempts)
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise StoreError(
                f"{url}: a file target needs an absolute path: file:///var/backups/site",
                reason="invalid-target",
            )
        return FileStore(Path(parsed.path))
    raise StoreError(
        f"{url}: unsupported target: use s3://BUCKET/PREFIX or file:///PATH",
        reason="invalid-target",
    )


class S3Store:
    """AWS S3 or any S3-compatible store.

    boto3 reads the endpoint (``AWS_ENDPOINT_URL_S3``), region and credentials
    from the standard AWS variables itself; nothing here comes from git.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        max_attempts: int = 5,
        client: S3Client | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_attempts = max_attempts
        if client is None:
            # Imported here: boto3 costs ~0.1 s at start, and most commands
            # (sync, plan, status) never talk to S3.
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3",
                config=Config(
                    # "standard" retries connection errors, throttling and 5xx with
                    # backoff; parts are in memory as bytes, so a retry can resend.
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    # Checksums only where S3 requires them: the aws-chunked
                    # trailers of newer botocore break several S3-compatible stores,
                    # and each artifact carries its own SHA-256 anyway.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        self._client = client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        full = self._key(key)
        buffer = bytearray()
        number = 1
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        pending: list[tuple[int, Future[str]]] = []
        pool = ThreadPoolExecutor(max_workers=UPLOAD_CONCURRENCY, thread_name_prefix="s3-part")

        def collect(oldest_only: bool) -> None:
            while pending and (not oldest_only or len(pending) >= UPLOAD_CONCURRENCY):
                part_no, future = pending.pop(0)
                parts.append({"PartNumber": part_no, "ETag": future.result()})

        try:
            for chunk in chunks:
                buffer += chunk
                total += len(chunk)
                while len(buffer) >= part_size(number):
                    size = part_size(number)
                    if number > MAX_PARTS:
                        raise StoreError(
                            f"{self.url}/{key}: larger than {max_stream_size()} bytes, "
                            "the most one S3 object can hold here",
                            reason="too-large",
                        )
                    if upload_id is None:
                        upload_id = self._call(
                            "start an upload of",
                            key,
                            lambda: self._client.create_multipart_upload(
                                Bucket=self.bucket, Key=full
                            )["UploadId"],
                        )
                    body = bytes(memoryview(buffer)[:size])  # one copy, not two
                    del buffer[:size]
                    collect(oldest_only=True)
                    pending.append(
                        (number, pool.submit(self._upload_part, key, upload_id, number, body))
                    )
                    number += 1
            if upload_id is None:
                # Small enough for one request: no multipart bookkeeping.
                data = bytes(buffer)
                self._call(
                    "upload",
                    key,
                    lambda: self._client.put_object(Bucket=self.bucket, Key=full, Body=data),
                )
                return total
            if buffer:
                body = bytes(buffer)
                buffer.clear()
                pending.append(
                    (number, pool.submit(self._upload_part, key, upload_id, number, body))
                )
            collect(oldest_only=False)
            final_id = upload_id
            self._call(
                "finish the upload of",
                key,
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=final_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
            return total
        except BaseException:
            # Parts still in flight finish (or fail) first: an abort racing a
            # part upload can leave that part stored.
            pool.shutdown(wait=True, cancel_futures=True)
            if upload_id is not None:
                self._abort(full, upload_id)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        answer = self._call(
            f"upload part {number} of",
            key,
            lambda: self._client.upload_part(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            ),
        )
        return str(answer["ETag"])

    def _abort(self, full_key: str, upload_id: str) -> None:
        # Best effort: when the store is down the abort fails too, and the
        # bucket's lifecycle rule for incomplete uploads (or the next run) is
        # what cleans up. The original error is what the user must see.
        with suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "upload",
            key,
            lambda: self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data),
        )

    def get_stream(self, key: str) -> Iterator[bytes]:
        answer = self._call(
            "download",
            key,
            lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key)),
        )
        body = answer["Body"]
        try:
            while True:
                try:
                    chunk = body.read(READ_CHUNK)
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    raise self._error(exc, "download", key) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = f"{self.prefix}/" if self.prefix else ""

        def fetch() -> list[StoredObject]:
            found: list[StoredObject] = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    found.append(
                        StoredObject(
                            key=item["Key"][len(base) :],
                            size=int(item["Size"]),
                            modified=item["LastModified"],
                        )
                    )
            return found

        found: list[StoredObject] = self._call("list", prefix or "/", fetch)
        return found

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            answer = self._call(
                "delete",
                keys[start],
                lambda batch=batch: self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
            )
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(
                    f"{self.url}: could not delete {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}",
                    reason="credentials" if first.get("Code") == "AccessDenied" else "io",
                )

    def _call(self, action: str, key: str, func: Any) -> Any:
        try:
            return func()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, action, key) from exc

    def _error(self, exc: BaseException, action: str, key: str) -> StoreError:
        return s3_error(
            exc,
            action=action,
            where=f"{self.url}/{key}",
            bucket=self.bucket,
            endpoint=str(self._client.meta.endpoint_url),
            attempts=self.max_attempts,
        )


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}


def s3_error(
    exc: BaseException, *, action: str, where: str, bucket: str, endpoint: str, attempts: int
) -> StoreError:
    """Our error for a botocore exception: which fault, and what to do about it."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StoreError(
                f"cannot {action} {where}: the bucket '{bucket}' does not exist at {endpoint}; "
                "create it, or fix the target in backup.yaml",
                reason="missing-bucket",
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return StoreError(
                f"cannot {action} {where}: S3 refused the credentials ({code or status}); "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the env file, and that "
                f"this key may read and write the bucket '{bucket}'",
                reason="credentials",
            )
        if code in {"NoSuchKey", "NotFound", "404"} or status == 404:
            return ObjectNotFound(f"{where} does not exist")
        if status >= 500 or code in {"SlowDown", "InternalError", "ServiceUnavailable"}:
            return StoreUnavailable(
                f"cannot {action} {where}: S3 at {endpoint} answered {status} {code} "
                f"{attempts} times; the store is failing: try again later, or check the "
                "provider's status",
                reason="server-error",
            )
        return StoreError(f"cannot {action} {where}: S3 answered {status} {code}", reason="io")
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return StoreError(
            f"cannot {action} {where}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the env file (never in git)",
            reason="credentials",
        )
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return StoreUnavailable(
            f"cannot {action} {where}: S3 at {endpoint} cannot be reached "
            f"({attempts} attempts); check AWS_ENDPOINT_URL_S3, DNS and the network",
            reason="unreachable",
        )
    if isinstance(
        exc,
        botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ResponseStreamingError
        | botocore.exceptions.IncompleteReadError
        | botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | OSError,
    ):
        return StoreUnavailable(
            f"cannot {action} {where}: the connection to S3 at {endpoint} dropped "
            f"({attempts} attempts, last: {type(exc).__name__}); check the network or a proxy "
            "between this host and the store, then try again",
            reason="connection-dropped",
        )
    return StoreError(f"cannot {action} {where}: {exc}", reason="io")


class FileStore:
    """A folder on this host (or a mounted disk): ``file:///var/backups/site``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StoreError(f"{key}: a key must stay inside {self.root}", reason="invalid-target")
        return path

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        total = 0
        try:
            self._private_parents(path)
            # A hidden temporary name, renamed once complete and synced: a
            # reader never sees half an object under the real key.
            temp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
            try:
                with private_file(temp) as out:
                    for chunk in chunks:
                        out.write(chunk)
                        total += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {self.url}/{key}: {exc}", reason="io") from exc
        return total

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def _private_parents(self, path: Path) -> None:
        """0700 folders from the root down to ``path``'s: a dump holds password hashes.

        The root is created 0700 but an existing one is left as the user made
        it (a mount point may be shared); every folder below it is ours.
        """
        root = self.root.resolve()
        private_dir(root, tighten=False)
        folder = root
        for part in path.parent.relative_to(root).parts:
            folder = private_dir(folder / part)

    def get_stream(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.url}/{key}: {exc}", reason="io") from exc
        return _read_chunks(handle, f"{self.url}/{key}")

    def list(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.exists():
            return []
        found: list[StoredObject] = []
        try:
            for path in sorted(self.root.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    found.append(
                        StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))
                    )
        except OSError as exc:
            raise StoreError(f"cannot list {self.url}: {exc}", reason="io") from exc
        return found

    def delete(self, keys: Sequence[str]) -> None:
        folders: set[Path] = set()
        try:
            for key in keys:
                path = self._path(key)
                path.unlink(missing_ok=True)
                folders.add(path.parent)
            # Empty folders left behind (a deleted backup) go too, with any
            # temporary file an interrupted write left in them.
            for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
                while folder != self.root.resolve() and folder.is_dir():
                    leftovers = list(folder.iterdir())
                    if any(not p.name.startswith(".") or p.is_dir() for p in leftovers):
                        break
                    shutil.rmtree(folder)
                    folder = folder.parent
        except OSError as exc:
            raise StoreError(f"cannot delete from {self.url}: {exc}", reason="io") from exc


def _read_chunks(handle: Any, where: str) -> Iterator[bytes]:
    with handle:
        while True:
            try:
                chunk = handle.read(READ_CHUNK)
            except OSError as exc:
                raise StoreError(f"cannot read {where}: {exc}", reason="io") from exc
            if not chunk:
                return
            yield chunk


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
