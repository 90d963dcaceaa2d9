"""The RabbitMQ management HTTP API as the adapter uses it: queue lookups and policies.

AMQP cannot list queues nor ask whether one exists without the broker closing
the channel, and dead-lettering is wired by policy, so the adapter asks the
management plugin's HTTP API. :class:`ManagementClient` makes each call with
``http.client`` in a worker thread, bounded by the adapter's timeout, on
connections it keeps between calls, and turns every failure into an error
that names the API's URL and what to fix (enable the plugin, trust its
certificate, give credentials with the management tag).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Final

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._errors import (
    BrokerError,
    BrokerUnavailable,
    DestinationError,
    InvalidArgument,
)
from message_flow_harness._redact import redact_url
from message_flow_harness.brokers.rabbitmq._codec import DEAD_LETTER_EXCHANGE, _some
from message_flow_harness.brokers.rabbitmq._urls import (
    _MANAGEMENT_ENV,
    _credentials,
    _ssl_context,
    _vhost_of,
    management_url,
)

#: Policies that wire a queue's dead-lettering are named this plus the queue's name.
_POLICY_PREFIX: Final = "harness-dlx-"

#: The management API's web server refuses a request line over 8,000 bytes (HTTP 414):
#: an existence check asks for its names in chunks whose pattern stays well below.
_LOOKUP_PATTERN_BYTES = 3000


def _name_chunks(names: Sequence[str]) -> list[list[str]]:
    """``names`` in order, cut where a chunk's escaped, URL-quoted pattern would grow too long."""
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        cost = len(urllib.parse.quote(re.escape(name), safe="")) + 3  # and its "|"
        if chunks[-1] and size + cost > _LOOKUP_PATTERN_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += cost
    return chunks if chunks[0] else []


def _management_fix() -> str:
    return (
        "enable the rabbitmq_management plugin (`rabbitmq-plugins enable rabbitmq_management`) "
        f"or point ${_MANAGEMENT_ENV} at it (http://user:pass@host:15672/)"
    )


class ManagementClient:
    """Calls to the management HTTP API of ``info``'s broker, on its vhost.

    The API's base URL is looked up on every call (see :func:`management_url`),
    each call bounded by ``timeout``. ``in_use`` says whether the adapter that
    holds the client is still open: only then is a connection that served a
    call kept for the next.
    """

    def __init__(self, info: BrokerInfo, *, timeout: float, in_use: Callable[[], bool]) -> None:
        self._info = info
        self._timeout = timeout
        self._in_use = in_use
        self._vhost = _vhost_of(info.url)
        self._where = redact_url(info.url)
        self._idle: list[http.client.HTTPConnection] = []  # see _exchange
        self._lock = threading.Lock()  # they are taken and kept from worker threads
        # RabbitMQ keeps the traced vhosts in one list it rewrites on every change, so
        # vhosts created or deleted at once can lose their tracing: one at a time.
        self._vhost_lock: asyncio.Lock | None = None

    # -- what the adapter asks

    async def existing(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` are queues on the vhost: one management API call a chunk."""
        # Asked of the management API, not by passive declares: the broker answers
        # a missing queue by closing the channel, and under load aiormq can drop
        # its close-ok reply (a full write queue), leaving that channel number
        # half-closed on the broker for good.
        found = await asyncio.gather(*map(self._existing_among, _name_chunks(names)))
        return set().union(*found)

    async def _existing_among(self, names: Sequence[str]) -> set[str]:
        pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
        query = urllib.parse.urlencode(
            {
                "page": 1,
                "page_size": len(names),
                "use_regex": "true",
                "columns": "name",
                "name": pattern,
            }
        )
        found = await self.call(
            "GET", "queues/{vhost}?" + query, f"look up queue(s) {_some(names)}"
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return {item["name"] for item in items if item.get("name") in names}

    async def queue_names(self) -> list[str]:
        """The names of the vhost's queues, in the API's order."""
        payload = await self.call("GET", "queues/{vhost}?columns=name", "list the queues")
        if not isinstance(payload, list):
            where = redact_url(management_url(self._info))
            raise BrokerError(f"the RabbitMQ management API at {where} answered {payload!r:.200}")
        return [str(item["name"]) for item in payload if isinstance(item, dict) and "name" in item]

    async def set_dead_letter_policy(self, name: str, dead_letter: str) -> None:
        """Dead-letter queue ``name``'s messages to ``dead_letter``, through the fanout."""
        await self.call(
            "PUT",
            _policy_path(name),
            f"set the dead-letter policy of {name!r}",
            {
                "pattern": f"^{re.escape(name)}$",
                "apply-to": "queues",
                "priority": 100,
                "definition": {
                    "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                    "dead-letter-routing-key": dead_letter,
                },
            },
        )

    async def delete_dead_letter_policy(self, name: str) -> None:
        """Delete queue ``name``'s dead-letter policy; a missing one is not an error."""
        await self.call(
            "DELETE",
            _policy_path(name),
            f"delete the dead-letter policy of {name!r}",
            absent_ok=True,  # a queue made without one, or already deleted
        )

    # -- virtual hosts (Flow(topology=...): a vhost per run)

    async def create_vhost(self, name: str) -> None:
        """Create vhost ``name`` with firehose tracing on and grant the broker user everything."""
        user, _ = _credentials(self._info.url)
        quoted = urllib.parse.quote(name, safe="")
        try:
            async with self._one_vhost_at_a_time():
                await self.call(
                    "PUT", f"vhosts/{quoted}", f"create vhost {name!r}", {"tracing": True}
                )
            await self.call(
                "PUT",
                f"permissions/{quoted}/{urllib.parse.quote(user, safe='')}",
                f"grant user {user!r} permissions on vhost {name!r}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
        except BrokerError as exc:
            raise type(exc)(
                f"could not create the run's virtual host {name!r} ({exc}); a Flow(topology=...)"
                f" run needs a user with the administrator tag (`rabbitmqctl set_user_tags {user}"
                " administrator`) and the management API"
            ) from exc

    async def delete_vhost(self, name: str) -> None:
        """Delete vhost ``name`` with every exchange, queue and binding in it (404 is fine)."""
        quoted = urllib.parse.quote(name, safe="")
        async with self._one_vhost_at_a_time():
            await self.call("DELETE", f"vhosts/{quoted}", f"delete vhost {name!r}", absent_ok=True)

    def _one_vhost_at_a_time(self) -> asyncio.Lock:
        if self._vhost_lock is None:  # made on the loop that uses it
            self._vhost_lock = asyncio.Lock()
        return self._vhost_lock

    async def exchange_names(self) -> list[str]:
        """The names of the vhost's exchanges (the default exchange's is "")."""
        payload = await self.call("GET", "exchanges/{vhost}?columns=name", "list the exchanges")
        if not isinstance(payload, list):
            where = redact_url(management_url(self._info))
            raise BrokerError(f"the RabbitMQ management API at {where} answered {payload!r:.200}")
        return [str(item["name"]) for item in payload if isinstance(item, dict) and "name" in item]

    async def vhost_names(self) -> list[str]:
        """The names of the broker's virtual hosts."""
        payload = await self.call("GET", "vhosts?columns=name", "list the virtual hosts")
        if not isinstance(payload, list):
            where = redact_url(management_url(self._info))
            raise BrokerError(f"the RabbitMQ management API at {where} answered {payload!r:.200}")
        return [str(item["name"]) for item in payload if isinstance(item, dict) and "name" in item]

    # -- HTTP

    async def call(
        self, method: str, path: str, doing: str, body: object = None, *, absent_ok: bool = False
    ) -> object:
        """One management API call off the loop; ``absent_ok``: a 404 answers None."""
        base = management_url(self._info)
        try:
            async with asyncio.timeout(self._timeout + 1.0):
                return await asyncio.to_thread(
                    self._request, base, method, path, doing, body, absent_ok=absent_ok
                )
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {redact_url(base)} did not answer within "
                f"{self._timeout:g} s: {_management_fix()}"
            ) from exc

    def _request(
        self,
        base: str,
        method: str,
        path: str,
        doing: str,
        body: object = None,
        *,
        absent_ok: bool = False,
    ) -> object:
        """One management HTTP API call (``{vhost}`` in ``path`` is filled in), blocking."""
        parts = urllib.parse.urlsplit(base)
        if parts.password is not None:
            user, password = _credentials(base)
        else:
            user, password = _credentials(self._info.url)
        vhost = urllib.parse.quote(self._vhost, safe="")
        target = f"{parts.path.rstrip('/')}/api/{path.format(vhost=vhost)}"
        headers = {
            "Authorization": "Basic "
            + base64.b64encode(f"{user}:{password}".encode()).decode("ascii"),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        payload = None if body is None else json.dumps(body).encode()
        where = redact_url(base)
        try:
            status, reason, raw = self._exchange(parts, method, target, payload, headers)
        except ssl.SSLCertVerificationError as exc:
            raise BrokerUnavailable(
                f"the TLS certificate of the RabbitMQ management API at {where} is not"
                f" trusted ({exc.verify_message}): add cafile=/path/ca.pem (the CA that"
                " signed it) to the AMQP URL's query, or point"
                f" ${_MANAGEMENT_ENV} at the API"
            ) from exc
        except ssl.SSLError as exc:
            raise BrokerUnavailable(
                f"the TLS handshake with the RabbitMQ management API at {where} failed ({exc}):"
                " it looks like a plain HTTP API; if so, point"
                f" ${_MANAGEMENT_ENV} at it (http://host:15672/)"
            ) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {where} does not answer ({exc}): "
                + _management_fix()
            ) from exc
        if status in (401, 403):
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {where} refused user {user!r} "
                f"(HTTP {status}): put credentials with the management tag in "
                f"${_MANAGEMENT_ENV} (http://user:pass@host:port/)"
            )
        if status == 404 and absent_ok:
            return None
        if status >= 300:
            raise DestinationError(
                f"the RabbitMQ management API at {where} could not {doing} on "
                f"vhost {self._vhost!r}: HTTP {status} {reason}"
            )
        return json.loads(raw) if raw else None

    def _exchange(
        self,
        parts: urllib.parse.SplitResult,
        method: str,
        target: str,
        payload: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, str, bytes]:
        """Send one request on a kept-alive connection: status, reason and body.

        Connections are kept between calls: a campaign makes several calls an
        example, and a new connection each time (TCP, and TLS for https) costs
        more than the call. A kept connection the server has closed meanwhile
        (say, the broker restarted) is replaced by a new one, and the others
        kept as long go too. Direct: an ``http_proxy`` from the environment
        must not see broker traffic.
        """
        for attempt in range(2):
            with self._lock:
                kept = self._idle.pop() if self._idle and not attempt else None
            connection = kept or self._connect(parts)
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if isinstance(exc, ConnectionError) and kept is not None:
                    self.close()
                    continue  # closed on the server's side while kept: a new one
                raise
            with self._lock:
                if response.will_close or not self._in_use():  # or the adapter closed
                    connection.close()
                else:
                    self._idle.append(connection)
            return response.status, response.reason, raw
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        """Close the kept connections (calls may still follow, on new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host = parts.hostname or "127.0.0.1"
        if parts.scheme != "https":
            return http.client.HTTPConnection(host, parts.port, timeout=self._timeout)
        try:
            context = _ssl_context(self._info.url)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(
                f"the TLS options of {self._where} cannot be loaded ({exc}): fix cafile,"
                " certfile and keyfile in the URL's query"
            ) from exc
        return http.client.HTTPSConnection(host, parts.port, timeout=self._timeout, context=context)


def _policy_path(name: str) -> str:
    return "policies/{vhost}/" + urllib.parse.quote(f"{_POLICY_PREFIX}{name}", safe="")
