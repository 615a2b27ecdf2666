"""Screening of a MariaDB dump before a single byte of it is loaded (pure, no I/O).

A restore loads a dump read from the backup store, and whoever can write
there (a leaked S3 key, the developer PC that writes ``dev/``) could plant
one. ``screen_dump`` reads the stream that would reach ``mariadb`` (the
``mysql`` schema already left out by ``without_schemas``) and refuses it,
naming the artifact, the line and the kind of statement, when it holds:

- an account statement: CREATE/ALTER/DROP/RENAME USER, CREATE/DROP ROLE,
  GRANT, REVOKE, SET PASSWORD, SET [DEFAULT] ROLE (in a statement of its
  own or in the body of a procedure or event);
- a client command (``\\!``, ``system``, ``\\.``/``source``, ``\\r``/``connect``,
  ``tee``, ``pager``, ``charset`` ...): only ``\\-`` (mariadb-dump's own
  "enable the sandbox mode") and ``DELIMITER ;;`` (dumps with triggers and
  routines) are normal;
- anything that reads or writes server files or loads code (LOAD_FILE,
  INTO OUTFILE/DUMPFILE, DATA/INDEX DIRECTORY, SONAME), dynamic SQL
  (PREPARE/EXECUTE), a reference to a system schema (``mysql.``, ``sys.``...),
  or a statement no mariadb-dump writes: the statements allowed at the top
  level are an allowlist (SET, CREATE, DROP, ALTER, RENAME, USE, INSERT,
  REPLACE, LOCK/UNLOCK TABLES, START TRANSACTION, COMMIT, DO/SELECT SETVAL);
- a session setting that would make the server split the text differently
  from this screener (sql_mode with NO_BACKSLASH_ESCAPES or ANSI_QUOTES, a
  character set such as gbk where a quote can hide in a multibyte
  character, a versioned comment whose end the server could see elsewhere).

The lexer knows quotes (with backslash escapes and doubled quotes), ``--``,
``#`` and ``/* */`` comments and treats ``/*!NNNNN ... */`` versioned comments
as the code they are, so a row value ``'GRANT ALL'`` is data and passes. It
works on chunks with a small carry, so a multi-megabyte extended INSERT line
costs no more memory than its chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reconciler.errors import DumpRefused

# Statements mariadb-dump writes at the top level.
ALLOWED_HEADS = frozenset(
    {"set", "create", "drop", "alter", "rename", "use", "insert", "replace"}
    | {"lock", "unlock", "start", "commit", "select", "do"}
)
# Objects a dump creates, drops or alters (the first such word after the verb).
OBJECTS = frozenset(
    {"database", "schema", "table", "view", "procedure", "function", "trigger", "event"}
    | {"sequence", "index"}
)
ACCOUNT_OBJECTS = frozenset({"user", "role"})
OTHER_OBJECTS = frozenset(
    {"server", "tablespace", "logfile", "plugin", "package", "instance", "synonym"}
)
CLIENT_COMMANDS = frozenset(
    {"system", "source", "connect", "tee", "notee", "pager", "nopager", "edit", "charset"}
    | {"quit", "exit", "rehash", "status", "warnings", "nowarning", "prompt", "print"}
    | {"go", "ego", "help", "clear", "sandbox"}
)
SYSTEM_SCHEMAS = frozenset({"mysql", "sys", "performance_schema", "information_schema"})
# Of those, the ones a statement must not name (information_schema is read-only,
# and a user's view may read it).
WRITABLE_SYSTEM_SCHEMAS = frozenset({"mysql", "sys", "performance_schema"})
# Character sets in which a backslash or a quote byte is always that character.
SAFE_CHARSETS = frozenset({"utf8", "utf8mb3", "utf8mb4", "latin1", "ascii", "binary", "default"})
# sql_mode words that change how the server splits strings and identifiers.
UNSAFE_MODES = frozenset(
    {"no_backslash_escapes", "ansi_quotes", "ansi", "oracle", "db2", "mssql", "postgresql"}
    | {"maxdb"}
)
# The saved copies mariadb-dump restores settings from, and what they copy.
SAVED = {
    "old_sql_mode": "sql_mode",
    "saved_sql_mode": "sql_mode",
    "old_character_set_client": "character_set_client",
    "saved_cs_client": "character_set_client",
}
DELIMITERS = frozenset({";", ";;", "//"})
# A versioned comment no server runs (99.x): mariadb-dump's "/*!999999\\- enable the
# sandbox mode */" line. Its words are no statement (the client runs the \\- in it).
DEAD_VERSION = 990000
MAX_TOKEN = 1024 * 1024
MAX_SET_TOKENS = 512
HEAD_TOKENS = 64
STRING_KEEP = 256


@dataclass(frozen=True)
class Token:
    kind: str  # word, id, str, num, punct, end, cmd
    text: str  # words and ids lowercased; strings cut to STRING_KEEP bytes
    line: int


_WORD = rb"[A-Za-z_][A-Za-z0-9_$]*"
_STRING_BODY = {
    False: {q: re.compile(rb"[^%s\\]*" % q) for q in (b"'", b'"')},
    True: {q: re.compile(rb"[^%s\\*]*" % q) for q in (b"'", b'"')},
}


# The bulk of an extended INSERT: numbers, NULL, separators and plain 'strings',
# skipped in one regular-expression call (a 60 MB dump in seconds, not minutes).
# A minus only before a digit, so "-- " is never taken for data; no dot after a
# name (mysql.user), no word but NULL.
_BORING = re.compile(
    rb"(?:[(),\s+]+|[0-9][0-9.eE]*|-(?=[0-9.(])|NULL(?=[,)\s])|'[^'\\]*(?:\\[\s\S][^'\\]*)*')+"
)


def _code_pattern(delimiter: bytes) -> re.Pattern[bytes]:
    return re.compile(
        b"(?P<end>" + re.escape(delimiter) + b")"
        rb"|(?P<word>" + _WORD + rb")"
        rb"|(?P<num>[0-9][A-Za-z0-9_$]*)"
        rb"|(?P<quote>['\"`])"
        rb"|(?P<line>--(?=[\x00-\x20])|#)"
        rb"|(?P<open>/\*)"
        rb"|(?P<close>\*/)"
        rb"|(?P<cmd>\\[\s\S])"
        rb"|(?P<punct>[@=,.:;()])"
        rb"|(?P<nl>\n)"
    )


class _Lexer:
    """Bytes in, tokens out; state carried across chunks."""

    def __init__(self, refuse: _Refuser) -> None:
        self.refuse = refuse
        self.line = 1
        self.versioned = False
        self.dead = False
        self.delimiter = b";"
        self.code = _code_pattern(self.delimiter)
        self.state = "code"  # code, ', ", `, line, block
        self.string = bytearray()
        self.string_line = 1
        self.at_line_start = True
        self.statement_empty = True  # set by the screener
        self.in_insert = False  # set by the screener: the data of an INSERT follows

    def feed(self, buf: bytes, final: bool) -> Iterator[Token | int]:
        """Tokens of ``buf``; the last item is how many bytes were consumed (rest: carry)."""
        pos = 0
        n = len(buf)
        while pos < n:
            if self.state == "code":
                if self.in_insert and not self.versioned:
                    skip = _BORING.match(buf, pos, n if final else max(pos, n - 2))
                    if skip is not None and skip.end() > pos:
                        self.line += buf.count(b"\n", pos, skip.end())
                        self.at_line_start = buf[skip.end() - 1] == 0x0A
                        pos = skip.end()
                        continue
                m = self.code.search(buf, pos)
                if m is None:
                    if final:
                        pos = n
                        break
                    keep = max(pos, n - 2)
                    self.line += buf.count(b"\n", pos, keep)
                    self.at_line_start = self.at_line_start and not buf[pos:keep].strip()
                    pos = keep
                    break
                if not final and m.end() >= n - 1 and m.lastgroup != "nl":
                    # The token may go on (or need a look-ahead) in the next chunk.
                    self.line += buf.count(b"\n", pos, m.start())
                    pos = m.start()
                    break
                gap = buf[pos : m.start()]
                self.line += gap.count(b"\n")
                line_start = self.at_line_start and not gap.strip()
                self.at_line_start = False
                kind = m.lastgroup
                text = m.group()
                pos = m.end()
                if kind == "nl":
                    self.line += 1
                    self.at_line_start = True
                elif kind == "end":
                    yield Token("end", text.decode(), self.line)
                elif kind == "word":
                    word = text.decode("ascii").lower()
                    if word == "delimiter" and line_start and self.statement_empty:
                        end = buf.find(b"\n", pos)
                        if end < 0 and not final:
                            pos = m.start()
                            self.at_line_start = True
                            break
                        end = n if end < 0 else end
                        self._delimiter(buf[pos:end])
                        pos = end
                        continue
                    if line_start and self.statement_empty and word in CLIENT_COMMANDS:
                        self.refuse(f"client command '{word}'", self.line)
                    yield Token("word", word, self.line)
                elif kind == "num":
                    yield Token("num", "", self.line)
                elif kind == "quote":
                    self.state = text.decode()
                    self.string.clear()
                    self.string_line = self.line
                elif kind == "line":
                    self.state = "line"
                elif kind == "open":
                    if n - pos < 8 and not final:
                        pos = m.start()
                        break
                    pos = self._comment_open(buf, pos)
                elif kind == "close":
                    if self.versioned:
                        self.versioned = self.dead = False
                    else:
                        yield Token("punct", "*/", self.line)
                elif kind == "cmd":
                    command = text[1:].decode("latin-1")
                    if command != "-":
                        self.refuse(f"client command '\\{command}'", self.line)
                elif kind == "punct":
                    yield Token("punct", text.decode(), self.line)
            elif self.state in ("'", '"'):
                pos, done = self._string(buf, pos, final)
                if done:
                    yield Token("str", self.string.decode(errors="replace"), self.string_line)
                elif pos < n:
                    break  # carry
            elif self.state == "`":
                pos, done = self._quoted_id(buf, pos, final)
                if done:
                    yield Token("id", self.string.decode(errors="replace").lower(), self.line)
                elif pos < n:
                    break
            elif self.state == "line":
                end = buf.find(b"\n", pos)
                stop = n if end < 0 else end
                if self.versioned and b"*/" in buf[pos:stop]:
                    self.refuse("a comment that hides the end of a versioned comment", self.line)
                if end < 0:
                    pos = n if final else max(pos, n - 1)
                    break
                pos = end  # the newline itself is code
                self.state = "code"
            else:  # block comment
                end = buf.find(b"*/", pos)
                if end < 0:
                    keep = n if final else max(pos, n - 1)
                    self.line += buf.count(b"\n", pos, keep)
                    pos = keep
                    break
                self.line += buf.count(b"\n", pos, end)
                pos = end + 2
                self.state = "code"
        yield pos

    def _delimiter(self, rest: bytes) -> None:
        new = rest.strip()
        if new.decode(errors="replace") not in DELIMITERS:
            self.refuse(f"DELIMITER {new[:20].decode(errors='replace')!r}", self.line)
        self.delimiter = new
        self.code = _code_pattern(new)

    def _comment_open(self, buf: bytes, pos: int) -> int:
        m = re.compile(rb"M?!([0-9]{5,6})?").match(buf, pos)
        if m is None:
            if self.versioned:
                self.refuse("a comment inside a versioned comment", self.line)
            self.state = "block"
            return pos
        if self.versioned:
            self.refuse("a versioned comment inside a versioned comment", self.line)
        self.versioned = True
        self.dead = m.group(1) is not None and int(m.group(1)) >= DEAD_VERSION
        return m.end()

    def _string(self, buf: bytes, pos: int, final: bool) -> tuple[int, bool]:
        quote = self.state.encode()
        body = _STRING_BODY[self.versioned][quote]
        n = len(buf)
        while True:
            m = body.match(buf, pos)
            assert m is not None
            self._keep(buf, pos, m.end())
            pos = m.end()
            if pos >= n:
                return pos, False
            char = buf[pos : pos + 1]
            if pos + 1 >= n and not final:
                return pos, False  # decide with the next byte
            if char == b"\\":
                self._keep(buf, pos, pos + 2)
                pos += 2
            elif char == b"*":
                if buf[pos + 1 : pos + 2] == b"/":
                    self.refuse("a string that spans the end of a versioned comment", self.line)
                pos += 1
            elif buf[pos + 1 : pos + 2] == quote:
                self._keep(buf, pos, pos + 1)
                pos += 2
            else:
                self.state = "code"
                return pos + 1, True
            if pos > n:
                return n, False

    def _quoted_id(self, buf: bytes, pos: int, final: bool) -> tuple[int, bool]:
        n = len(buf)
        while True:
            end = buf.find(b"`", pos)
            stop = n if end < 0 else end
            if self.versioned and b"*/" in buf[pos:stop]:
                self.refuse("a name that spans the end of a versioned comment", self.line)
            if end < 0:
                keep = n if final else max(pos, n - 1)
                self._keep(buf, pos, keep)
                return keep, False
            self._keep(buf, pos, end)
            if end + 1 >= n and not final:
                return end, False
            if buf[end + 1 : end + 2] == b"`":
                self._keep(buf, end, end + 1)
                pos = end + 2
                continue
            self.state = "code"
            return end + 1, True

    def _keep(self, buf: bytes, start: int, end: int) -> None:
        self.line += buf.count(b"\n", start, end)
        room = STRING_KEEP - len(self.string)
        if room > 0:
            self.string += buf[start : min(end, start + room)]


class _Refuser:
    def __init__(self, artifact: str) -> None:
        self.artifact = artifact

    def __call__(self, kind: str, line: int) -> None:
        raise DumpRefused(
            f"{self.artifact}: line {line}: {kind} refused: a dump made by the reconciler "
            "holds no such thing, so the backup was changed or planted; nothing was loaded "
            "or changed. Restore another backup (reconciler backup list), and find out who "
            "can write to the backup target"
        )


def screen_dump(chunks: Iterable[bytes], *, artifact: str) -> int:
    """Read the whole dump; raise ``DumpRefused`` at the first refused thing.

    Returns the number of statements seen. ``artifact`` names the backup
    artifact in the error.
    """
    refuse = _Refuser(artifact)
    lexer = _Lexer(refuse)
    checker = _Checker(refuse)
    carry = b""
    for chunk in chunks:
        buf = carry + chunk if carry else chunk
        consumed = _run(lexer, checker, buf, final=False)
        carry = buf[consumed:]
        if len(carry) > MAX_TOKEN:
            refuse("a token longer than 1 MiB", lexer.line)
    _run(lexer, checker, carry, final=True)
    if lexer.state in ("'", '"', "`"):
        refuse("a quote that is never closed", lexer.string_line)
    if lexer.versioned:
        refuse("a versioned comment that is never closed", lexer.line)
    checker.end(lexer.line)
    return checker.statements


def _run(lexer: _Lexer, checker: _Checker, buf: bytes, *, final: bool) -> int:
    for item in lexer.feed(buf, final):
        if isinstance(item, int):
            return item
        if lexer.dead:
            # Only words (ignored, as by the server): a delimiter or a quote
            # there would be split differently by the client and the server.
            if item.kind != "word":
                checker.refuse("something other than words in a /*!999999 comment", item.line)
            continue
        checker.token(item)
        lexer.statement_empty = not checker.tokens
        lexer.in_insert = bool(checker.tokens) and checker.tokens[0].text in ("insert", "replace")
    return len(buf)


class _Checker:
    """Statements out of tokens: the head against the allowlist, the body for hidden calls."""

    def __init__(self, refuse: _Refuser) -> None:
        self.refuse = refuse
        self.tokens: list[Token] = []
        self.count = 0
        self.previous: Token | None = None
        self.before: Token | None = None
        self.statements = 0

    def token(self, token: Token) -> None:
        if token.kind == "end":
            self.end(token.line)
            return
        self._body(token)
        self.count += 1
        if len(self.tokens) < HEAD_TOKENS or (self.tokens[0].text == "set"):
            if self.tokens and self.tokens[0].text == "set" and len(self.tokens) > MAX_SET_TOKENS:
                self.refuse("a SET statement this long", self.tokens[0].line)
            self.tokens.append(token)
        self.before, self.previous = self.previous, token

    def end(self, line: int) -> None:
        if self.tokens:
            self._head(self.tokens)
            self.statements += 1
        self.tokens = []
        self.count = 0
        self.previous = self.before = None

    def _body(self, token: Token) -> None:
        prev = self.previous
        word = token.text if token.kind == "word" else None
        prev_word = prev.text if prev is not None and prev.kind == "word" else None
        if word in ("grant", "revoke"):
            self.refuse(f"account statement {word.upper()}", token.line)
        if word in ACCOUNT_OBJECTS and prev_word in ("create", "alter", "drop", "rename"):
            self.refuse(f"account statement {prev_word.upper()} {word.upper()}", token.line)
        if word == "password" and prev_word == "set":
            self.refuse("account statement SET PASSWORD", token.line)
        if word == "role" and prev_word in ("set", "default"):
            self.refuse(
                f"account statement SET {'DEFAULT ' * (prev_word == 'default')}ROLE", token.line
            )
        if word in ("prepare", "execute", "deallocate"):
            self.refuse(f"dynamic SQL ({word.upper()})", token.line)
        if word in ("load_file", "soname"):
            self.refuse(f"file access ({word.upper()})", token.line)
        if word in ("outfile", "dumpfile") and prev_word == "into":
            self.refuse(f"file access (INTO {word.upper()})", token.line)
        if word == "directory" and prev_word in ("data", "index"):
            self.refuse(f"file access ({prev_word.upper()} DIRECTORY)", token.line)
        if (
            token.kind == "punct"
            and token.text == "."
            and prev is not None
            and prev.kind in ("word", "id")
            and prev.text in WRITABLE_SYSTEM_SCHEMAS
            and not (self.before is not None and self.before.text == "@")
        ):
            self.refuse(f"a reference to the system schema {prev.text}", token.line)

    def _head(self, tokens: list[Token]) -> None:
        head = tokens[0]
        line = head.line
        if head.kind != "word" or head.text not in ALLOWED_HEADS:
            if head.kind == "word" and head.text in CLIENT_COMMANDS:
                self.refuse(f"client command '{head.text}'", line)
            shown = head.text.upper() if head.kind == "word" else head.kind
            self.refuse(f"statement {shown}", line)
        words = [t.text for t in tokens if t.kind == "word"]
        second = words[1] if len(words) > 1 else ""
        match head.text:
            case "create" | "drop" | "alter" | "rename":
                kind = next((w for w in words[1:] if w in OBJECTS | ACCOUNT_OBJECTS), None)
                kind = kind or next((w for w in words[1:] if w in OTHER_OBJECTS), None)
                if kind in ACCOUNT_OBJECTS:
                    self.refuse(f"account statement {head.text.upper()} {kind.upper()}", line)
                if (
                    kind is None
                    or kind in OTHER_OBJECTS
                    or (head.text == "rename" and kind != "table")
                ):
                    self.refuse(f"statement {head.text.upper()} {(kind or '?').upper()}", line)
                if kind in ("database", "schema"):
                    name = _name_after(tokens, kind)
                    if name in SYSTEM_SCHEMAS:
                        self.refuse(f"{head.text.upper()} DATABASE {name}", line)
            case "use":
                name = next((t.text for t in tokens[1:] if t.kind in ("word", "id")), "")
                if name in SYSTEM_SCHEMAS:
                    self.refuse(f"USE {name}", line)
            case "lock" | "unlock":
                if second != "tables":
                    self.refuse(f"statement {head.text.upper()} {second.upper()}", line)
            case "start":
                if second != "transaction":
                    self.refuse(f"statement START {second.upper()}", line)
            case "select" | "do":
                if second != "setval":
                    self.refuse(f"statement {head.text.upper()} (a dump has only SETVAL)", line)
            case "set":
                _check_set(tokens, self.refuse)


def _name_after(tokens: list[Token], kind: str) -> str:
    seen = False
    for token in tokens:
        if seen and token.kind in ("word", "id") and token.text not in ("if", "not", "exists"):
            return token.text
        if token.kind == "word" and token.text == kind:
            seen = True
    return ""


def _check_set(tokens: list[Token], refuse: _Refuser) -> None:
    """A SET statement: no GLOBAL, and nothing that changes how the rest is split."""
    line = tokens[0].line
    body = tokens[1:]
    for assignment in _split(body):
        target, value = _target(assignment)
        if target == "global":
            refuse("SET GLOBAL", line)
        if target in ("statement", "transaction", "password", "role"):
            refuse(f"statement SET {target.upper()}", line)
        if target in SAVED:
            if [t.text for t in value] not in (["@", "@", SAVED[target]],) and not _safe_literal(
                SAVED[target], value
            ):
                refuse(f"SET @{target} to something else than @@{SAVED[target]}", line)
        elif target in ("sql_mode", "character_set_client", "names", "character set", "charset"):
            saved = [t.text for t in value]
            if (
                len(saved) == 2
                and saved[0] == "@"
                and SAVED.get(saved[1])
                in ("sql_mode" if target == "sql_mode" else "character_set_client",)
            ):
                continue
            what = "sql_mode" if target == "sql_mode" else "character_set_client"
            if not _safe_literal(what, value):
                refuse(f"SET {target} to a value that changes how the dump is read", line)


def _split(tokens: list[Token]) -> Iterator[list[Token]]:
    depth = 0
    current: list[Token] = []
    for token in tokens:
        if token.kind == "punct" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        if token.kind == "punct" and token.text == "," and depth == 0:
            yield current
            current = []
        else:
            current.append(token)
    yield current


def _target(assignment: list[Token]) -> tuple[str, list[Token]]:
    """``(target, value tokens)``: ``@x`` -> ``x`` (user variables keep their name)."""
    texts = [t.text for t in assignment]
    if not texts:
        return "", []
    if texts[0] == "global" or texts[:3] == ["@", "@", "global"]:
        return "global", []
    if texts[0] in ("names", "charset"):
        return texts[0], assignment[1:2]
    if texts[:2] == ["character", "set"]:
        return "character set", assignment[2:3]
    i = 0
    user = False
    if texts[:2] == ["@", "@"]:
        i = 2
        if texts[i + 1 : i + 2] == ["."] and texts[i] in ("session", "local"):
            i += 2
    elif texts[0] == "@":
        i, user = 1, True
    elif texts[0] in ("session", "local"):
        i = 1
    if i >= len(assignment):
        return "", []
    name = texts[i]
    rest = assignment[i + 1 :]
    if rest and rest[0].text == ":":
        rest = rest[1:]
    if rest and rest[0].text == "=":
        rest = rest[1:]
    if user:
        return (name if name in SAVED else f"@{name}"), rest
    return name, rest


def _safe_literal(what: str, value: list[Token]) -> bool:
    if len(value) != 1 or value[0].kind not in ("str", "word", "id"):
        return False
    text = value[0].text.lower()
    if what == "sql_mode":
        if value[0].kind != "str" and text != "default":
            return False
        return not {m.strip() for m in text.split(",")} & UNSAFE_MODES
    return text in SAFE_CHARSETS
