"""The IAM policies of docs/security.md give the store what it needs, and the read-only one no more.

Both policies are read from the page itself. On moto's server, IAM users are
made with them while authorization is off; then authorization is enforced
(moto checks each request's action and resource against the user's policies)
and ``S3Store`` runs with each user's keys. moto does not evaluate
``Condition`` blocks, so the ``s3:prefix`` condition on listing is not checked
here (the page says so).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from reconciler.adapters import restic
from reconciler.adapters.object_store import MiB, S3Store
from reconciler.errors import StoreError
from tests.fixtures.s3_server import FAKE_KEY, FAKE_SECRET, REGION, S3Server

pytestmark = pytest.mark.integration

SECURITY_DOC = Path(__file__).parents[2] / "docs" / "security.md"
_POLICY = re.compile(r"<!-- iam-policy: ([a-z-]+) -->\s*```json\n(.*?)```", re.DOTALL)
PREFIX = "prod"


def documented_policies(bucket: str) -> dict[str, dict[str, Any]]:
    text = SECURITY_DOC.read_text()
    found = {name: body for name, body in _POLICY.findall(text)}
    assert set(found) == {"backup", "restore-read-only"}, "policies not found in docs/security.md"
    return {
        name: json.loads(body.replace("my-backups", bucket).replace('"prod', f'"{PREFIX}'))
        for name, body in found.items()
    }


def for_moto(policy: dict[str, Any], bucket: str) -> dict[str, Any]:
    """moto authorizes a DeleteObjects request as s3:DeleteObject on the *bucket's* ARN
    before it checks each key (AWS checks each key's ARN only): a policy that may
    delete objects needs the bucket ARN too, on moto alone. The keys are still
    checked against the documented resources."""
    deletes = any(
        "s3:DeleteObject" in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        for s in policy["Statement"]
    )
    if not deletes:
        return policy
    shims = [
        {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{bucket}"},
        # moto's name for what AWS authorizes as s3:ListBucket (restic's init checks the bucket).
        {"Effect": "Allow", "Action": "s3:HeadBucket", "Resource": f"arn:aws:s3:::{bucket}"},
    ]
    return {**policy, "Statement": [*policy["Statement"], *shims]}


def _client(url: str, key: str, secret: str, service: str = "s3") -> Any:
    session: Any = boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION
    )
    return session.client(service, endpoint_url=url)


@pytest.fixture
def iam_keys(s3_env: S3Server, s3_bucket: str) -> Iterator[dict[str, tuple[str, str]]]:
    """Keys of an IAM user per documented policy, holding only that policy (auth enforced)."""
    iam = _client(s3_env.url, FAKE_KEY, FAKE_SECRET, "iam")
    admin = _client(s3_env.url, FAKE_KEY, FAKE_SECRET)
    admin.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/existing", Body=b"old backup")
    admin.put_object(Bucket=s3_bucket, Key="elsewhere/secret", Body=b"not yours")
    made: dict[str, tuple[str, str]] = {}
    users: list[str] = []
    for name, policy in documented_policies(s3_bucket).items():
        user = f"{s3_bucket}-{name}"
        iam.create_user(UserName=user)
        users.append(user)
        document = json.dumps(for_moto(policy, s3_bucket))
        iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=document)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        made[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    s3_env.set_auth(True)
    try:
        yield made
    finally:
        s3_env.set_auth(False)
        for user in users:
            for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            for policy_name in iam.list_user_policies(UserName=user)["PolicyNames"]:
                iam.delete_user_policy(UserName=user, PolicyName=policy_name)
            iam.delete_user(UserName=user)


@pytest.fixture
def stores(
    iam_keys: dict[str, tuple[str, str]], s3_env: S3Server, s3_bucket: str
) -> dict[str, S3Store]:
    """An ``S3Store`` per documented policy, on its user's keys."""
    return {
        name: S3Store(s3_bucket, PREFIX, max_attempts=1, client=_client(s3_env.url, *keys))
        for name, keys in iam_keys.items()
    }


def _repository(
    keys: tuple[str, str], s3_env: S3Server, bucket: str, cache: Path
) -> restic.Repository:
    environ = {**os.environ, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}
    return restic.Repository(
        f"s3://{bucket}/{PREFIX}", key="k" * 20, env=environ, cache_dir=str(cache)
    )


def test_restic_backs_up_and_prunes_with_the_backup_policy_and_reads_with_the_other(
    iam_keys: dict[str, tuple[str, str]], s3_env: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    writer = _repository(iam_keys["backup"], s3_env, s3_bucket, tmp_path / "w")
    assert writer.ensure() is True
    first = writer.backup_stdin(io.BytesIO(b"dump one\n"), filename="db.sql", host="vm")
    writer.backup_stdin(io.BytesIO(b"dump two\n"), filename="db.sql", host="vm")
    snapshots = writer.snapshots()
    assert len(snapshots) == 2
    gone = next(s.id for s in snapshots if s.id.startswith(first.snapshot_id))
    writer._run("forget", ["forget", "--prune", gone])
    assert len(writer.snapshots()) == 1

    reader = _repository(iam_keys["restore-read-only"], s3_env, s3_bucket, tmp_path / "r")
    (kept,) = reader.snapshots()
    out = io.BytesIO()
    reader.dump(kept.id, "/db.sql", out)
    assert out.getvalue() == b"dump two\n"


def _refused(call: Any) -> StoreError:
    with pytest.raises(StoreError) as caught:
        call()
    assert caught.value.reason == "credentials", caught.value
    return caught.value


def _failing_stream() -> Iterator[bytes]:
    yield b"x" * (9 * MiB)  # more than one part: a multipart upload has begun
    raise RuntimeError("the source broke off")


def test_the_backup_policy_allows_what_backups_and_retention_do(
    stores: dict[str, S3Store], s3_env: S3Server, s3_bucket: str
) -> None:
    store = stores["backup"]
    big = [b"y" * MiB for _ in range(10)]  # multipart: create, upload parts, complete
    assert store.put_stream("b1/site.tar.zst", big) == 10 * MiB
    assert store.put_stream("b1/db.sql.zst", [b"small"]) == 5  # one PutObject
    store.put_bytes("b1/manifest.json", b"{}")
    assert {o.key for o in store.list()} >= {"b1/site.tar.zst", "b1/manifest.json", "existing"}
    assert b"".join(store.get_stream("b1/manifest.json")) == b"{}"
    store.delete(["existing", "b1/db.sql.zst"])  # retention
    assert "existing" not in {o.key for o in store.list()}

    # An interrupted upload is aborted (AbortMultipartUpload is allowed): nothing left behind.
    with pytest.raises(RuntimeError):
        store.put_stream("b2/site.tar.zst", _failing_stream())
    s3_env.set_auth(False)
    admin = _client(s3_env.url, FAKE_KEY, FAKE_SECRET)
    assert admin.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    s3_env.set_auth(True)

    # Nothing outside its prefix.
    outside = S3Store(s3_bucket, "elsewhere", max_attempts=1, client=store._client)
    _refused(lambda: b"".join(outside.get_stream("secret")))
    _refused(lambda: outside.put_bytes("planted", b"x"))


def test_the_read_only_policy_reads_and_never_writes_or_deletes(
    stores: dict[str, S3Store], s3_env: S3Server, s3_bucket: str
) -> None:
    store = stores["restore-read-only"]
    assert "existing" in {o.key for o in store.list()}
    assert b"".join(store.get_stream("existing")) == b"old backup"
    _refused(lambda: store.put_bytes("planted", b"x"))
    _refused(lambda: store.put_stream("planted.tar.zst", [b"y" * MiB for _ in range(10)]))
    _refused(lambda: store.put_stream("planted.sql", [b"small"]))
    _refused(lambda: store.delete(["existing"]))
    s3_env.set_auth(False)
    admin = _client(s3_env.url, FAKE_KEY, FAKE_SECRET)
    assert (
        admin.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/existing")["Body"].read() == b"old backup"
    )
    assert "Contents" not in admin.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/planted")
