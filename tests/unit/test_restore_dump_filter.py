"""A dump's ``mysql`` section is left out on load, however the stream is chunked."""

from __future__ import annotations

import random

import pytest

from reconciler.restore.restore_artifacts import without_schemas

DUMP = (
    b"-- MariaDB dump 10.19\n--\n-- Host: localhost\n"
    b"--\n-- Current Database: `mysql`\n--\n\nCREATE DATABASE `mysql`;\nUSE `mysql`;\n"
    b"INSERT INTO global_priv VALUES ('root');\n"
    b"--\n-- Current Database: `mysqlish`\n--\n\nUSE `mysqlish`;\nINSERT INTO t VALUES (1);\n"
    b"--\n-- Current Database: `shop`\n--\n\nUSE `shop`;\nINSERT INTO orders VALUES (2);\n"
    b"-- Dump completed on 2026-11-28\n"
)
EXPECTED = DUMP.replace(
    b"\n-- Current Database: `mysql`\n--\n\nCREATE DATABASE `mysql`;\nUSE `mysql`;\n"
    b"INSERT INTO global_priv VALUES ('root');\n--",
    b"",
)


def chunked(data: bytes, rng: random.Random) -> list[bytes]:
    out, position = [], 0
    while position < len(data):
        size = rng.randint(1, 40)
        out.append(data[position : position + size])
        position += size
    return out


@pytest.mark.parametrize("seed", range(50))
def test_mysql_section_dropped_across_chunk_boundaries(seed: int) -> None:
    result = b"".join(without_schemas(chunked(DUMP, random.Random(seed))))
    assert result == EXPECTED
    assert b"global_priv" not in result
    assert b"INSERT INTO t VALUES (1)" in result  # `mysqlish` is not `mysql`


def test_whole_stream_and_no_marker() -> None:
    assert b"".join(without_schemas([DUMP])) == EXPECTED
    plain = b"INSERT INTO x VALUES (1);\n" * 100
    assert b"".join(without_schemas([plain])) == plain
