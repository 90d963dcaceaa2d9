"""Correlation: which input an output answers, the way services really link them.

A service that copies the ``x-harness-id`` header is correlated by it. Most do
not: an output is a new record that carries a business key of the input
(``{"order": 17}`` for input ``{"id": 17}``). The harness knows every input it
publishes, so it reads their keys and maps key -> harness id itself; the user
only says where the key is (:func:`by_json_field`, or :func:`by_key` with
functions). The older form, a function of an output returning a harness id,
still works.

Beside correlation, a flow may declare *fan-out* (one input yields outputs of
several kinds: a ``chunk`` and an ``end``, or outputs on several destinations
of a ``Topology``: the destination is then the kind) and *side events* (outputs that
answer nothing, such as an audit or ``payment.failed`` event): each output is
recorded with its kind, and side events as events of their own.

Two inputs with the same business key: an answer goes to the earliest of them
without an answer of its kind yet (so a key reused by consecutive inputs,
each answered in turn, correlates as meant); every anomaly about such an
input names the shared key, since no reading of the outputs can tell them
apart.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._history import Kind
from message_flow_harness._message import Message

#: Reads a business key from a message; None when the message has none.
KeyReader = Callable[[Message], Hashable | None]
#: The legacy form: a function of an output returning the harness id of its input.
HarnessIdOf = Callable[[Message], str | None]
#: A JSON field path (``"type"``, ``"meta.kind"``) or a function naming an output's kind.
OutputKinds = str | Callable[[Message], str | None]
#: Kinds that are side events, or a predicate of the output message.
SideEvents = Collection[str] | Callable[[Message], bool]


class _Missing(Exception):
    """A key could not be read: the message says why (not JSON, no such field)."""


def _json_path(message: Message, path: str) -> Any:
    try:
        found = json.loads(message.value)
    except (ValueError, UnicodeDecodeError):
        raise _Missing(f"the payload is not JSON ({message.value[:40]!r})") from None
    for part in path.split("."):
        if not isinstance(found, dict) or part not in found:
            raise _Missing(f"the payload has no field {path!r} ({message.value[:60]!r})")
        found = found[part]
    return found


def _as_key(value: Any) -> str:
    """Numbers and strings compare as text (``17`` matches ``"17"``); others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _field_reader(path: str) -> KeyReader:
    def read(message: Message) -> Hashable | None:
        return _as_key(_json_path(message, path))

    read.__name__ = f"field {path!r}"
    return read


def _check_path(name: str, path: object) -> str:
    if not isinstance(path, str) or not all(path.split(".")):
        raise InvalidArgument(
            f"{name}={path!r} is invalid: name a JSON field, e.g. 'id', or a dotted path"
            " to a nested one, e.g. 'order.id'"
        )
    return path


@dataclass(frozen=True, slots=True)
class Correlation:
    """Where inputs, outputs and dead letters carry the business key that links them.

    Build one with :func:`by_json_field` or :func:`by_key`; pass it as
    ``Flow(correlate=...)``.
    """

    input: KeyReader
    output: KeyReader
    dead_letter: KeyReader
    #: Where each key is, as explanations name it: ``field 'order'``, ``order_of()``.
    input_where: str
    output_where: str
    dead_letter_where: str


def by_json_field(
    field: str, *, output: str | None = None, dead_letter: str | None = None
) -> Correlation:
    """Correlate by a JSON field: input ``{"id": 17}`` is answered by output ``{"order": 17}``.

    ``field`` is read from each input's payload, ``output`` (default: the
    same path) from each output's, ``dead_letter`` (default: ``field``, since
    a dead letter usually carries the input unchanged) from each dead
    letter's. Dotted paths reach nested fields (``"order.id"``). Numbers and
    strings compare as text, so ``17`` matches ``"17"``.
    """
    field = _check_path("by_json_field(field)", field)
    output = field if output is None else _check_path("output", output)
    dead_letter = field if dead_letter is None else _check_path("dead_letter", dead_letter)
    return Correlation(
        input=_field_reader(field),
        output=_field_reader(output),
        dead_letter=_field_reader(dead_letter),
        input_where=f"field {field!r}",
        output_where=f"field {output!r}",
        dead_letter_where=f"field {dead_letter!r}",
    )


def by_key(
    *, input: KeyReader, output: KeyReader, dead_letter: KeyReader | None = None
) -> Correlation:
    """Correlate by a business key that functions read: ``input(m) == output(answer)``.

    Each function takes a :class:`Message` and returns a hashable key, or None
    for a message without one. ``dead_letter`` defaults to ``input`` (a dead
    letter usually carries the input unchanged).
    """
    for name, reader in (("input", input), ("output", output), ("dead_letter", dead_letter)):
        if reader is not None and not callable(reader):
            raise InvalidArgument(
                f"by_key({name}={reader!r}) is invalid: pass a function of a Message"
                " returning its business key"
            )
    dead_letter = input if dead_letter is None else dead_letter
    return Correlation(
        input=input,
        output=output,
        dead_letter=dead_letter,
        input_where=_function_name(input, "input"),
        output_where=_function_name(output, "output"),
        dead_letter_where=_function_name(dead_letter, "dead_letter"),
    )


def _function_name(reader: KeyReader, role: str) -> str:
    name = getattr(reader, "__name__", "<lambda>")
    return f"by_key({role}=...)" if name == "<lambda>" else f"{name}()"


def check_flow_options(correlate: object, output_kinds: object, side_events: object) -> None:
    """Reject what ``Flow`` cannot use, naming the fix."""
    if correlate is not None and not (isinstance(correlate, Correlation) or callable(correlate)):
        raise InvalidArgument(
            f"Flow(correlate={correlate!r}) is invalid: pass by_json_field('id', output=...),"
            " by_key(input=..., output=...), or a function of an output returning a harness id"
        )
    if output_kinds is not None and not callable(output_kinds):
        _check_path("Flow(output_kinds)", output_kinds)
    if callable(side_events):
        return
    if isinstance(side_events, str) or not all(isinstance(k, str) for k in side_events):  # type: ignore[attr-defined]
        raise InvalidArgument(
            f"Flow(side_events={side_events!r}) is invalid: pass a collection of output kinds,"
            " e.g. {'audit'}, or a function of the output Message returning bool"
        )
    if side_events and output_kinds is None:
        raise InvalidArgument(
            f"Flow(side_events={side_events!r}) names kinds, but the flow has no output_kinds:"
            " pass output_kinds= (a JSON field or a function) to classify outputs"
        )


class Landing(NamedTuple):
    """How to record a message a tap saw: its event kind, its input, and a detail."""

    kind: Kind
    harness_id: str | None
    detail: str | None = None


class Correlator:
    """One run's correlation: the inputs' keys, and the harness id of what lands.

    Fed each input as it is published (:meth:`register`); asked by the taps
    and probes which input a message concerns.
    """

    def __init__(
        self,
        correlate: Correlation | HarnessIdOf | None = None,
        *,
        output_kinds: OutputKinds | None = None,
        side_events: SideEvents = (),
    ) -> None:
        self._correlate = correlate
        self._kind_of: Callable[[Message], str | None] | None = (
            _kind_field(output_kinds) if isinstance(output_kinds, str) else output_kinds
        )
        self._side = side_events
        self._by_key: dict[Hashable, list[str]] = defaultdict(list)  # in publish order
        self._first_key: tuple[str, Hashable] | None = None  # an example, for explanations
        self._answered: set[tuple[str, str]] = set()  # (harness id, what answered it)
        self._has_answer: set[str] = set()

    def register(self, harness_id: str, message: Message) -> str | None:
        """Note an input about to be published; returns its business key as a detail."""
        correlation = self._correlate
        if not isinstance(correlation, Correlation):
            return None
        try:
            key = _read(correlation.input, message)
        except _Missing:
            key = None
        if key is None:
            return None
        self._by_key[key].append(harness_id)
        if self._first_key is None:
            self._first_key = (harness_id, key)
        return f"business key {_show(key)}"

    def of_delivery(self, message: Message) -> str | None:
        """The input a delivered message is (the header, else its business key)."""
        found = message.harness_id
        correlation = self._correlate
        if found is not None or correlation is None:
            return found
        if not isinstance(correlation, Correlation):
            return correlation(message)
        try:
            candidates = self._by_key.get(_read(correlation.input, message), [])
        except _Missing:
            return None
        unanswered = (c for c in candidates if c not in self._has_answer)
        return next(unanswered, candidates[0] if candidates else None)

    def as_delivery(self, message: Message) -> Landing:
        return Landing(Kind.DELIVERED, self.of_delivery(message))

    def of_output(self, message: Message, *, via: str | None = None) -> Landing:
        """An output's input and kind, or a side event; an uncorrelated output says why.

        ``via`` names the output it came out of, for a flow with several: it
        is the kind (``shipments``), or leads it (``shipments/created``), so
        one input answered on two outputs is fan-out, not a duplicate.
        """
        kind = self._kind_of(message) if self._kind_of is not None else None
        side = self._side(message) if callable(self._side) else kind in self._side
        if via is not None:
            kind = via if kind is None else f"{via}/{kind}"
        if side:  # answers nothing, and need not name an input: its kind is its detail
            harness_id, _ = self._answer(message, "output", kind, answers=False)
            return Landing(Kind.SIDE_EVENT, harness_id, kind)
        harness_id, why = self._answer(message, "output", kind)
        return Landing(Kind.OUTPUT, harness_id, kind if harness_id is not None else why)

    def of_dead_letter(self, message: Message) -> Landing:
        harness_id, why = self._answer(message, "dead_letter", None)
        return Landing(Kind.DEAD_LETTERED, harness_id, why)

    def _answer(
        self, message: Message, role: str, kind: str | None, *, answers: bool = True
    ) -> tuple[str | None, str | None]:
        found = message.harness_id
        correlation = self._correlate
        if found is not None or correlation is None:
            return found, None
        if not isinstance(correlation, Correlation):
            return correlation(message), None
        if role == "output":
            reader, where = correlation.output, correlation.output_where
        else:
            reader, where = correlation.dead_letter, correlation.dead_letter_where
        try:
            key = _read(reader, message)
        except _Missing as missing:
            return None, f"no business key: {missing}; {self._fix(role)}"
        if key is None:
            return None, f"no business key ({where} gave None); {self._fix(role)}"
        candidates = self._by_key.get(key)
        if not candidates:
            return None, (
                f"read business key {_show(key)} ({where} of the {role.replace('_', ' ')}),"
                f" which no input has; {self._fix(role)}"
            )
        # Of inputs sharing the key, the earliest without an answer of this kind.
        answer = role if kind is None else f"{role}:{kind}"
        chosen = next((c for c in candidates if (c, answer) not in self._answered), candidates[0])
        if answers:
            self._answered.add((chosen, answer))
            self._has_answer.add(chosen)
        return chosen, None

    def _fix(self, role: str) -> str:
        assert isinstance(self._correlate, Correlation)
        example = ""
        if self._first_key is not None:
            harness_id, key = self._first_key
            example = (
                f"the inputs' keys look like {_show(key)} ({self._correlate.input_where}"
                f" of input id {harness_id}): "
            )
        if role == "output":
            return (
                f"{example}make the service write the input's key there, or point"
                " Flow(correlate=...) at where it does (output=...)"
            )
        return (
            f"{example}keep the input's headers on the dead letter, or point"
            " Flow(correlate=...) at where its key is (dead_letter=...)"
        )


def _read(reader: KeyReader, message: Message) -> Hashable | None:
    """``reader(message)``; a user's reader that raises reads no key (and says why)."""
    try:
        return reader(message)
    except _Missing:
        raise
    except Exception as exc:
        raise _Missing(f"{getattr(reader, '__name__', 'the reader')} raised {exc!r}") from exc


def _kind_field(path: str) -> Callable[[Message], str | None]:
    def kind(message: Message) -> str | None:
        try:
            return _as_key(_json_path(message, path))
        except _Missing:
            return None

    return kind


def _show(key: Hashable) -> str:
    """A key as explanations quote it: ``'17'``."""
    return repr(key)
