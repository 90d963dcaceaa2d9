"""Keep secrets out of logs, errors, reports and JSON."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):[^@/]*@")


def redact_url(url: str) -> str:
    """``amqp://guest:secret@host/`` → ``amqp://guest:***@host/``; other text unchanged."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
