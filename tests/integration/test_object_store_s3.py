"""The S3 store against moto's server over HTTP: multipart, aborts, listing, deletes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import boto3
import pytest

from reconciler.adapters import object_store
from reconciler.adapters.object_store import S3Store
from reconciler.errors import ObjectNotFound, StoreError
from tests.fixtures.s3_server import Fault, FaultProxy

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    # S3's smallest part (5 MiB), doubling every 2 parts: a few MiB exercise
    # the multipart path and the growth of the part size.
    monkeypatch.setattr(object_store, "BASE_PART_SIZE", 5 * MiB)
    monkeypatch.setattr(object_store, "PARTS_PER_STEP", 2)


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = os.urandom(min(size, total - sent))
        sent += len(piece)
        yield piece


def test_multipart_stream_of_unknown_length(s3_bucket: str, small_parts: None) -> None:
    store = S3Store(s3_bucket, "prod")
    digest = hashlib.sha256()

    def source() -> Iterator[bytes]:
        for piece in chunks(27 * MiB):
            digest.update(piece)
            yield piece

    assert store.put_stream("b/big.bin", source()) == 27 * MiB
    # 5 + 5 + 10 + 10 = 30 > 27: four parts of growing size.
    back = hashlib.sha256()
    for piece in store.get_stream("b/big.bin"):
        back.update(piece)
    assert back.hexdigest() == digest.hexdigest()
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="prod/b/big.bin")
    assert head["ETag"].strip('"').endswith("-4")
    assert [(o.key, o.size) for o in store.list("b/")] == [("b/big.bin", 27 * MiB)]


def test_small_streams_use_one_request(s3_bucket: str) -> None:
    store = S3Store(s3_bucket)
    assert store.put_stream("x/small", iter([b"a", b"b"])) == 2
    assert b"".join(store.get_stream("x/small")) == b"ab"
    store.delete(["x/small"])
    assert store.list() == []
    with pytest.raises(ObjectNotFound):
        list(store.get_stream("x/small"))


def test_a_failing_source_aborts_the_upload(s3_bucket: str, small_parts: None) -> None:
    store = S3Store(s3_bucket, "prod")

    def broken() -> Iterator[bytes]:
        yield from chunks(12 * MiB)
        raise RuntimeError("the volume stream broke")

    with pytest.raises(RuntimeError, match="broke"):
        store.put_stream("b/broken.bin", broken())
    client = boto3.client("s3")
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert store.list() == []


def test_a_503_on_one_part_is_retried(
    s3_bucket: str, small_parts: None, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set(Fault(kind="status", status=503, methods=("PUT",), times=1))
    store = S3Store(s3_bucket, max_attempts=3)
    assert store.put_stream("r/x", chunks(11 * MiB)) == 11 * MiB
    assert fault_proxy.injected == 1


def test_slow_answers_still_complete(
    s3_bucket: str, small_parts: None, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set(Fault(kind="delay", delay_s=0.5, methods=("PUT",), times=2))
    store = S3Store(s3_bucket)
    assert store.put_stream("slow/x", chunks(6 * MiB)) == 6 * MiB
    assert fault_proxy.injected == 2


def test_listing_a_missing_bucket_says_so(s3_env: object) -> None:
    store = S3Store("rt-no-such-bucket-here")
    with pytest.raises(StoreError, match="does not exist") as caught:
        store.list()
    assert caught.value.reason == "missing-bucket"
