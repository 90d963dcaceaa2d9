"""``harness demo``: the harness finds a real race in a bundled service, then clears the fix.

On brokers the harness starts itself (or those named by HARNESS_KAFKA_BOOTSTRAP
/ HARNESS_AMQP_URL), for each broker: fuzz a service from the zoo that handles
messages concurrently (so outputs of one key can overtake each other), print
the shrunk reproduction and where its HTML report was written, then fuzz the
corrected service with the same campaign and show that every check holds.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

from message_flow_harness import brokers, checks
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow, Service
from message_flow_harness._fuzz import Example, fuzz
from message_flow_harness._message import BrokerKind, Message
from message_flow_harness._redact import redact_url
from message_flow_harness._schedule import faults_of, messages_of
from message_flow_harness.strategies import POISON

# (racy service, corrected service) per broker, from the zoo the package ships.
SERVICES: dict[BrokerKind, tuple[str, str]] = {
    "kafka": (
        "message_flow_harness.zoo.kafka_services:kafka_concurrent_batch",
        "message_flow_harness.zoo.kafka_services:kafka_correct",
    ),
    "rabbitmq": (
        "message_flow_harness.zoo.rabbitmq_services:rabbitmq_concurrent",
        "message_flow_harness.zoo.rabbitmq_services:rabbitmq_correct",
    ),
}


def _service(reference: str) -> Service:
    module, _, name = reference.partition(":")
    try:
        found: Service = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        extra = module.rpartition(".")[2].partition("_")[0]  # kafka_services -> kafka
        raise InvalidArgument(
            f"the demo's {extra} services need their client library ({exc}):"
            f" pip install 'message-flow-harness[{extra}]'"
        ) from exc
    return found


def _is_poison(message: Message) -> bool:
    return message.value.startswith(POISON)


def _flow(reference: str, broker: BrokerKind) -> Flow:
    return Flow(
        sut=_service(reference),
        broker=broker,
        checks=[
            checks.no_loss(),
            checks.no_duplicates(),
            checks.per_key_order(),
            checks.dead_lettered(when=_is_poison),
        ],
        quiet=1.0,
        name=reference.partition(":")[2],
    )


def _progress(example: Example) -> None:
    mark = "ok  " if example.ok else "FAIL"
    print(
        f"    {example.phase} #{example.number:<4} {mark}"
        f" {len(messages_of(example.schedule)):>2} messages,"
        f" {len(faults_of(example.schedule))} faults, {example.seconds * 1000:5.0f} ms",
        flush=True,
    )


async def _demo_broker(kind: BrokerKind, *, max_examples: int, report_dir: Path) -> bool:
    racy, corrected = SERVICES[kind]
    started = time.perf_counter()
    with brokers.provision(kind, url=brokers.url_from_env(kind)) as info:
        print(
            f"\n== {kind}: broker ready at {redact_url(info.url)} ({info.provider})"
            f" in {time.perf_counter() - started:.1f} s"
        )
        print(f"-- fuzzing {racy} (handles messages concurrently)", flush=True)
        found = await fuzz(
            _flow(racy, kind),
            max_examples=max_examples,
            seed=0,
            broker=info,
            report_dir=report_dir,
            progress=_progress,
            flow_reference=None,
            database=None,
        )
        print(found.summary())
        print(f"-- fuzzing the corrected {corrected} with the same campaign", flush=True)
        cleared = await fuzz(
            _flow(corrected, kind),
            max_examples=max_examples,
            seed=0,
            broker=info,
            report_dir=report_dir,
            progress=None,
            database=None,
        )
        print(cleared.summary())
    return not found.ok and cleared.ok


def run_demo(kinds: list[BrokerKind], *, max_examples: int = 40) -> int:
    report_dir = Path("reports") / "demo"
    outcomes = {
        kind: asyncio.run(_demo_broker(kind, max_examples=max_examples, report_dir=report_dir))
        for kind in kinds
    }
    print()
    for kind, ok in outcomes.items():
        verdict = "race found and shrunk; the fix passes" if ok else "UNEXPECTED outcome"
        print(f"{kind}: {verdict}")
    return 0 if all(outcomes.values()) else 1
