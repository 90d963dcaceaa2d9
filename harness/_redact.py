"""Keep secrets out of logs, errors, reports and JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):[^@/]*@")
#: Option names whose values are secrets (SASL and key-file passwords, JAAS configs, tokens).
_SECRET_NAME = re.compile(r"password|passwd|secret|token|jaas|credential", re.IGNORECASE)
MASK = "***"


def redact_url(url: str) -> str:
    """``amqp://guest:secret@host/`` → ``amqp://guest:***@host/``; other text unchanged."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def is_secret_name(name: str) -> bool:
    """Whether an option called ``name`` holds a secret (``sasl_plain_password``, ...)."""
    return bool(_SECRET_NAME.search(name))


def redact_options(options: Mapping[str, object]) -> dict[str, object]:
    """A copy of client options with secret values masked and URLs redacted, for printing."""
    shown: dict[str, object] = {}
    for name, value in options.items():
        if is_secret_name(name) and value is not None:
            shown[name] = MASK
        elif isinstance(value, str):
            shown[name] = redact_url(value)
        else:
            shown[name] = value
    return shown
