"""Strip credentials and secret values before they reach a message, a log or status.

Git URLs may carry secrets (``https://TOKEN@host/repo.git``,
``https://user:password@host/...``) and git quotes the URL it was given in its
error messages. Every message built from a URL or from git's output goes
through ``redact_url`` or ``redact_text`` first (house style 15).

Values decrypted from the repository's encrypted files (docs/secrets.md) are
registered here with ``register_secret`` when they are read; from then on
``redact_text`` (hence every log line, error, status and printed line) masks
them in this process. A value shorter than ``MIN_SECRET_LENGTH`` is not
masked: masking ``on`` or ``80`` everywhere would garble every message, so the
loader warns about such values instead (its key, never the value).

``secret_fingerprint`` gives a keyed digest of a text holding secrets: the
config-hash label uses it so that a label never allows an offline guess of a
secret (a plain SHA-256 of a spec whose other fields are known from git would).

Pure string functions and one in-process registry, no I/O: safe from any layer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading

MASK = "***"

# Schemes where the user name itself is not a secret (``ssh://git@host/...``):
# only a password after it is hidden. On every other scheme (http, https, ...)
# the user part may be a token on its own (``https://ghp_xxx@github.com``), so
# the whole of it is hidden.
_USER_IS_NOT_SECRET = frozenset({"ssh", "git+ssh", "ssh+git"})

# Query parameters that carry secrets in presigned or token URLs.
_SECRET_PARAMS = re.compile(
    r"(?i)([?&](?:access_token|private_token|token|password|passwd|secret|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig)=)[^&#\s'\"]*"
)

# A URL inside free text: a scheme, then anything up to whitespace or a quote
# (git writes ``'https://...'`` and ``"..."`` in its messages).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def redact_url(url: str) -> str:
    """``url`` with any password, token or secret query parameter replaced by ``***``.

    - ``https://user:tok@host/x`` and ``https://tok@host/x`` -> ``https://***@host/x``
    - ``ssh://git:pw@host/x`` -> ``ssh://git:***@host/x`` (the user name stays)
    - ``git@host:path`` (scp-like), local paths and URLs without credentials are
      returned unchanged.
    """
    scheme_end = url.find("://")
    if scheme_end <= 0 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", url[:scheme_end]):
        # scp-like ``user@host:path`` has no place for a password; a local
        # path has no credentials. Neither is touched.
        return url
    scheme = url[:scheme_end].lower()
    rest_start = scheme_end + 3
    # The authority ends at the first '/', '?' or '#' (RFC 3986).
    match = re.search(r"[/?#]", url[rest_start:])
    authority_end = rest_start + match.start() if match else len(url)
    authority = url[rest_start:authority_end]
    tail = _SECRET_PARAMS.sub(lambda m: m.group(1) + MASK, url[authority_end:])
    at = authority.rfind("@")  # the last '@': an unescaped '@' in a password stays hidden
    if at < 0:
        return url[:rest_start] + authority + tail
    userinfo, hostport = authority[:at], authority[at + 1 :]
    if scheme in _USER_IS_NOT_SECRET:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{MASK}" if colon else user
    else:
        userinfo = MASK
    return f"{url[:rest_start]}{userinfo}@{hostport}{tail}"


def redact_text(text: str) -> str:
    """``text`` with registered secrets masked and every URL passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), redact_secrets(text))


# -- registered secret values --------------------------------------------------

MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_fingerprint_key: bytes | None = None


def _forms(value: str) -> set[str]:
    """The value as it may appear in text: plain, repr()-escaped, JSON-escaped, line by line."""
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    # A multi-line value (a PEM key) may be quoted one line at a time.
    forms.update(line for line in value.splitlines() if len(line.strip()) >= MIN_SECRET_LENGTH)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def register_secret(value: str) -> bool:
    """Mask ``value`` in every later ``redact_text``; False when it is too short to mask."""
    if len(value) < MIN_SECRET_LENGTH:
        return False
    global _pattern
    with _lock:
        new = _forms(value) - _secrets
        if new:
            _secrets.update(new)
            # Longest first: a secret that contains another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))
    return True


def set_fingerprint_key(key: bytes) -> None:
    """The VM-local key of ``secret_fingerprint`` (derived from the age identity)."""
    global _fingerprint_key
    _fingerprint_key = key


def secret_fingerprint(text: str) -> str:
    """A keyed digest of ``text``: equal texts give equal digests on this VM, nothing more."""
    key = _fingerprint_key or b"reconciler-no-age-key"
    return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def redact_secrets(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def forget_secrets() -> None:
    """Clear the registry (tests only: a process keeps its secrets until it ends)."""
    global _pattern, _fingerprint_key
    with _lock:
        _secrets.clear()
        _pattern = None
        _fingerprint_key = None
