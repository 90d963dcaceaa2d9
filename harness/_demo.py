"""``harness demo``: for now, brokers up and one observed round trip on each."""

from __future__ import annotations

import asyncio
import time
import uuid

import brokers
from harness._broker import DestinationSpec, TapRecord
from harness._message import BrokerKind, Message


async def _round_trip(kind: BrokerKind, url: str | None) -> None:
    started = time.perf_counter()
    with brokers.provision(kind, url=url) as info:
        elapsed = time.perf_counter() - started
        print(f"{kind}: broker ready at {info.url} ({info.provider}) in {elapsed:.1f} s")
        name = f"harness-demo-{uuid.uuid4().hex[:8]}"
        seen: list[TapRecord] = []
        async with brokers.adapter(info) as adapter:
            await adapter.create(DestinationSpec(name=name))
            try:
                async with adapter.tap(name, seen.append):
                    for i in range(3):
                        receipt = await adapter.publish(
                            name, Message(key=b"k", value=f"hello {i}".encode())
                        )
                        print(f"  published hello {i} -> {receipt}")
                    deadline = time.monotonic() + 10
                    while len([r for r in seen if r.event == "landed"]) < 3:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the tap did not see all 3 messages in 10 s")
                        await asyncio.sleep(0.01)
                for record in seen:
                    print(f"  tap saw {record.event} {record.message.value!r} on {name}")
            finally:
                await adapter.delete(name)
        print(f"{kind}: round trip ok, destination {name} deleted")


def run_demo(kinds: list[BrokerKind]) -> int:
    for kind in kinds:
        asyncio.run(_round_trip(kind, brokers.url_from_env(kind)))
    return 0
