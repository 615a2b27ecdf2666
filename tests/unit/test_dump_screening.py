"""The dump screener: hostile statements refused, harmless look-alikes and real dumps pass."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reconciler.decide.dump_screening import screen_dump
from reconciler.errors import DumpRefused

REAL = (Path(__file__).parent / "dumps" / "objects.sql").read_bytes()
HEADER = b"/*M!999999\\- enable the sandbox mode */ \n/*!40101 SET NAMES utf8mb4 */;\nUSE `shop`;\n"


def chunked(data: bytes, rng: random.Random) -> list[bytes]:
    out, position = [], 0
    while position < len(data):
        size = rng.randint(1, 60)
        out.append(data[position : position + size])
        position += size
    return out


@pytest.mark.parametrize("seed", range(20))
def test_a_real_dump_with_triggers_routines_views_events_passes(seed: int) -> None:
    # mariadb-dump 10.11 of a database with all of them, and rows holding
    # 'GRANT ALL', '\\! touch', '/*!50001 GRANT */', 'DELIMITER ;;' as data.
    assert screen_dump(chunked(REAL, random.Random(seed)), artifact="db") > 100


HARMLESS = [
    b"INSERT INTO `t` VALUES (1,'GRANT ALL ON *.* TO x WITH GRANT OPTION');\n",
    b"INSERT INTO `t` VALUES (1,'x\\'; GRANT ALL ON *.* TO evil; -- ');\n",
    b"INSERT INTO `t` VALUES (1,'it''s; CREATE USER evil');\n",
    b"-- GRANT ALL ON *.* TO x\n# system rm -rf /\n/* \\! touch /tmp/x */\n",
    b"CREATE TABLE `t` (`grant` int, `user` text, `system` int);\n",
    b"CREATE VIEW `v` AS SELECT `table_name` FROM information_schema.tables;\n",
    b"INSERT INTO `t` VALUES (1,-2,3.5e-3,NULL,'\\\\! no');\n",
    b"DELIMITER ;;\nCREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW BEGIN SET @a = 1; END;;\n"
    b"DELIMITER ;\n",
]


@pytest.mark.parametrize("sql", HARMLESS)
def test_harmless_look_alikes_pass(sql: bytes) -> None:
    screen_dump([HEADER + sql], artifact="db")
    screen_dump(chunked(HEADER + sql, random.Random(1)), artifact="db")


HOSTILE = [
    (b"\\! touch /tmp/pwned\n", "client command '\\!'"),
    (b"system touch /tmp/pwned\n", "client command 'system'"),
    (b"SYSTEM id;\n", "client command 'system'"),
    (b"source /etc/passwd\n", "client command 'source'"),
    (b"\\. /etc/passwd\n", "client command '\\.'"),
    (b"\\r evil 10.0.0.1\n", "client command '\\r'"),
    (b"connect evil\n", "client command 'connect'"),
    (b"INSERT INTO t VALUES (1); \\! id\n", "client command '\\!'"),
    (b"/*!50001 \\! id */;\n", "client command '\\!'"),
    (b"CREATE USER 'evil'@'%' IDENTIFIED BY 'x';\n", "account statement CREATE USER"),
    (b"/*!50001 CREATE OR REPLACE USER evil */;\n", "account statement CREATE"),
    (b"GRANT ALL ON *.* TO 'evil'@'%' WITH GRANT OPTION;\n", "account statement GRANT"),
    (b"/*!40101 GRANT ALL ON *.* TO evil */;\n", "account statement GRANT"),
    (b"REVOKE ALL ON *.* FROM root;\n", "account statement REVOKE"),
    (b"ALTER USER root IDENTIFIED BY 'x';\n", "account statement ALTER USER"),
    (b"DROP USER root;\n", "account statement DROP USER"),
    (b"RENAME USER root TO x;\n", "account statement RENAME USER"),
    (b"SET PASSWORD FOR root = PASSWORD('x');\n", "account statement SET PASSWORD"),
    (b"CREATE ROLE admin;\n", "account statement CREATE ROLE"),
    (b"DROP ROLE admin;\n", "account statement DROP ROLE"),
    (b"SET DEFAULT ROLE admin FOR root;\n", "account statement SET DEFAULT ROLE"),
    (
        b"DELIMITER ;;\nCREATE PROCEDURE p() BEGIN GRANT ALL ON *.* TO x; END;;\n",
        "account statement GRANT",
    ),
    (b"INSERT INTO mysql.global_priv VALUES ('evil','%','{}');\n", "system schema mysql"),
    (b"INSERT INTO `mysql`.`user` VALUES (1);\n", "system schema mysql"),
    (b"USE `mysql`;\n", "USE mysql"),
    (b"SELECT 1 INTO OUTFILE '/tmp/x';\n", "INTO OUTFILE"),
    (b"INSERT INTO t VALUES (LOAD_FILE('/etc/shadow'));\n", "LOAD_FILE"),
    (b"LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t;\n", "statement LOAD"),
    (b"INSTALL SONAME 'evil';\n", "SONAME"),
    (b"PREPARE s FROM 'GR' 'ANT ALL ON *.* TO x'; EXECUTE s;\n", "dynamic SQL"),
    (b"SET GLOBAL general_log_file = '/var/www/x.php';\n", "SET GLOBAL"),
    (b"SET sql_mode = 'NO_BACKSLASH_ESCAPES';\n", "SET sql_mode"),
    (b"SET @OLD_SQL_MODE = 'ANSI_QUOTES'; SET SQL_MODE=@OLD_SQL_MODE;\n", "old_sql_mode"),
    (b"SET NAMES gbk;\n", "SET names"),
    (b"/*!999999 '*/ GRANT ALL ON *.* TO x; -- ' */\n", "end of a versioned comment"),
    (b"/*!999999 x; GRANT ALL ON *.* TO y */\n", "/*!999999 comment"),
    (b"/*!50001 '*/ GRANT ALL ON *.* TO x; -- ' */;\n", "end of a versioned comment"),
    (b"DELIMITER GO\n", "DELIMITER 'GO'"),
    (b"INSERT INTO t VALUES ('never closed);\n", "never closed"),
]


@pytest.mark.parametrize(("sql", "kind"), HOSTILE)
def test_hostile_dumps_are_refused_naming_artifact_line_and_kind(sql: bytes, kind: str) -> None:
    dump = HEADER + b"INSERT INTO `t` VALUES (1,'GRANT');\n" + sql
    for chunks in ([dump], chunked(dump, random.Random(7))):
        with pytest.raises(DumpRefused) as caught:
            screen_dump(chunks, artifact="prod 2026-11-28T05-04-00Z databases/db.sql.zst")
        message = str(caught.value)
        assert message.startswith("prod 2026-11-28T05-04-00Z databases/db.sql.zst: line ")
        assert kind in message
        assert "nothing was loaded" in message


def test_the_line_number_is_that_of_the_statement() -> None:
    dump = HEADER + b"INSERT INTO t VALUES ('a\\nb',\n'c');\n\nGRANT ALL ON *.* TO x;\n"
    with pytest.raises(DumpRefused, match=r": line 7: account statement GRANT"):
        screen_dump(chunked(dump, random.Random(3)), artifact="db")


def test_a_multi_megabyte_insert_line_streams() -> None:
    row = b"(12345,'text with \\'quotes\\' and \\n GRANT',NULL,-3.14,'2026-01-01'),"
    line = b"INSERT INTO `t` VALUES " + row * 40000 + b"(1,'x',NULL,1,'y');\n"
    chunks = [line[i : i + 65536] for i in range(0, len(line), 65536)]
    assert screen_dump(chunks * 1, artifact="db") == 1


def test_database_names_are_quoted_with_backticks_doubled() -> None:
    from reconciler.adapters.stack_control import drop_sql

    assert drop_sql(["my shop", "we`ird"]) == (
        b"DROP DATABASE IF EXISTS `my shop`;\nDROP DATABASE IF EXISTS `we``ird`;\n"
    )
