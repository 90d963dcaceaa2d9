"""The run's values under the names a service reads: environment templates over its endpoints.

A template is a string with ``{field}`` placeholders for fields of
:class:`Endpoints` (``"{bootstrap_servers}"``, ``"amqp://.../{input}"``), and
``{names[orders]}`` for the run's name of a destination the flow's
``Topology`` names ``orders``; ``{{`` and ``}}`` are literal braces. ``Flow(env=...)`` sets them in
``os.environ`` around an in-process service's start (:func:`launching`);
``process(env=...)`` passes them to the process, above ``os.environ`` and
the :data:`DEFAULT_VARIABLES`. Both check and render them here.
"""

from __future__ import annotations

import asyncio
import os
import string
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Endpoints

#: The fields of Endpoints a template may name: its plain text ones.
TEMPLATE_FIELDS = (
    "kind",
    "bootstrap_servers",
    "amqp_url",
    "input",
    "output",
    "dead_letter",
    "group_id",
)

#: What every process service gets without a mapping (a variable whose field
#: the broker has not, say ``HARNESS_AMQP_URL`` on Kafka, is left unset).
DEFAULT_VARIABLES: Mapping[str, str] = {
    f"HARNESS_{name.upper()}": f"{{{name}}}" for name in TEMPLATE_FIELDS
}

#: The instance starting in this context (``sut0``): what a process names its output by.
starting_instance: ContextVar[str | None] = ContextVar("harness_starting_instance", default=None)

#: One lock per event loop: starts that change os.environ take turns.
_environ_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def check_templates(env: object, *, where: str) -> dict[str, str]:
    """``env`` as a checked dict of variable -> template; InvalidArgument naming what is wrong."""
    if not isinstance(env, Mapping):
        raise InvalidArgument(
            f"{where}={env!r} is invalid: pass a mapping of variable name to template,"
            ' e.g. {"KAFKA_BOOTSTRAP": "{bootstrap_servers}"}'
        )
    checked: dict[str, str] = {}
    for name, template in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise InvalidArgument(
                f"{where} has the variable name {name!r}: use a non-empty str without '='"
            )
        if not isinstance(template, str):
            raise InvalidArgument(
                f"{where} maps {name!r} to {template!r}: a template is a str,"
                ' e.g. "{input}" (write constant values as str too)'
            )
        for field in _fields_of(template, name=name, where=where):
            if field not in TEMPLATE_FIELDS and named_destination(field) is None:
                raise InvalidArgument(
                    f"{where} maps {name!r} to {template!r}, which names {{{field}}}: the"
                    f" fields are {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}, and"
                    " {names[NAME]} for a destination the flow's topology names"
                    " (write a literal brace as {{ or }})"
                )
        checked[name] = template
    return checked


def named_destination(field: str) -> str | None:
    """``orders`` for the placeholder ``names[orders]``, else None."""
    if field.startswith("names[") and field.endswith("]") and len(field) > len("names[]"):
        return field[len("names[") : -1]
    return None


def destinations_named(templates: Mapping[str, str]) -> dict[str, str]:
    """Each ``{names[X]}`` the templates use: X -> the variable that uses it."""
    found: dict[str, str] = {}
    for name, template in templates.items():
        for field in _fields_of(template, name=name, where="env"):
            destination = named_destination(field)
            if destination is not None:
                found.setdefault(destination, name)
    return found


def _fields_of(template: str, *, name: str, where: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidArgument(
            f"{where} maps {name!r} to {template!r}, which is not a template ({exc}):"
            " write a literal brace as {{ or }}"
        ) from exc
    fields = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            raise InvalidArgument(
                f"{where} maps {name!r} to {template!r}: a placeholder is a bare field name,"
                f" like {{input}}, without a format spec or conversion"
            )
        fields.append(field)
    return fields


def render(templates: Mapping[str, str], endpoints: Endpoints) -> dict[str, str]:
    """The variables for one run; InvalidArgument for a field this broker does not have."""
    values = _values(endpoints)
    rendered = {}
    for name, template in templates.items():
        for field in _fields_of(template, name=name, where="env"):
            destination = named_destination(field)
            if destination is not None:
                if destination not in endpoints.names:
                    raise InvalidArgument(
                        f"env maps {name!r} to {template!r}, and this run names no"
                        f" {destination!r}: name it in the flow's Topology, or use one of"
                        f" {', '.join(map(repr, endpoints.names)) or 'its fields'}"
                    )
                continue
            if values.get(field) is None:
                raise InvalidArgument(
                    f"env maps {name!r} to {template!r}, and a {endpoints.kind} run has no"
                    f" {field} (it is None): drop {name!r} from the env of this flow"
                )
        rendered[name] = template.format_map(values)
    return rendered


def default_environment(endpoints: Endpoints) -> dict[str, str]:
    """:data:`DEFAULT_VARIABLES` for one run, leaving out the fields its broker has not."""
    values = _values(endpoints)
    return {
        name: template.format_map(values)
        for name, template in DEFAULT_VARIABLES.items()
        if values[template.strip("{}")] is not None
    }


def _values(endpoints: Endpoints) -> dict[str, object]:
    values: dict[str, object] = {field: getattr(endpoints, field) for field in TEMPLATE_FIELDS}
    values["names"] = endpoints.names
    return values


@asynccontextmanager
async def launching(
    instance: str, templates: Mapping[str, str], endpoints: Endpoints
) -> AsyncIterator[None]:
    """Around one instance's start: its name, and ``templates`` set in ``os.environ``.

    The previous values come back on exit: a service reads its settings as it
    starts (in the ``sut`` call or its ``__aenter__``), not later.
    """
    variables = render(templates, endpoints)
    token = starting_instance.set(instance)
    try:
        if not variables:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = _environ_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            saved = {name: os.environ.get(name) for name in variables}
            os.environ.update(variables)
            try:
                yield
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    finally:
        starting_instance.reset(token)
