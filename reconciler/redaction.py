"""Strip credentials from git URLs before they reach a message, a log or status.

Git URLs may carry secrets (``https://TOKEN@host/repo.git``,
``https://user:password@host/...``) and git quotes the URL it was given in its
error messages. Every message built from a URL or from git's output goes
through ``redact_url`` or ``redact_text`` first (house style 15).

Pure string functions, no I/O: safe to use from any layer.
"""

from __future__ import annotations

import re

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
    """``text`` with every URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
