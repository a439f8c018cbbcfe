"""Credentials out of log lines: ``user:password@`` in URLs and secrets in query strings.

Config values are held in :class:`~cellguard.daemon.config.Secret` and never formatted,
but a URL (``http://user:pass@influx:8086``, ``...?token=abc``) is logged as a whole by
the sinks when they report an outage. :class:`RedactingFilter`, installed by the CLI on
every handler of the root logger, rewrites such lines before any handler formats them.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["REDACTED", "RedactingFilter", "install_redaction", "redact"]

REDACTED: Final = "***"

# scheme://user:password@host -> scheme://user:***@host (the user name stays: it helps
# the reader and is not the secret). A password may hold ':' but no '@', '/' or space.
_URL_PASSWORD_RE: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s/@]+@")
# ?token=... / &password=... in a query string or a form body.
_QUERY_SECRET_RE: Final = re.compile(
    r"(?P<head>[?&;](?:access_)?(?:token|password|passwd|pwd|secret|api_?key|apikey|key|auth"
    r"|signature|sig|u|p)=)[^&;#\s\"']+",
    re.IGNORECASE,
)
# Authorization: Token abc / Bearer abc / Basic abc (a header shown in an error).
_AUTH_HEADER_RE: Final = re.compile(
    r"(?P<head>\b(?:Token|Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with URL passwords, query-string secrets and auth header values as ***."""
    text = _URL_PASSWORD_RE.sub(rf"\g<head>{REDACTED}@", text)
    text = _QUERY_SECRET_RE.sub(rf"\g<head>{REDACTED}", text)
    return _AUTH_HEADER_RE.sub(rf"\g<head>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments and traceback in place; drops nothing.

    On a handler rather than a logger: a logger's filters see only records logged on
    that very logger, a handler's see every record that reaches it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatted here once, so the handler prints our redacted copy.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on every handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    existing = [f for h in target.handlers for f in h.filters if isinstance(f, RedactingFilter)]
    found = existing[0] if existing else RedactingFilter()
    for handler in target.handlers:
        if found not in handler.filters:
            handler.addFilter(found)
    return found
