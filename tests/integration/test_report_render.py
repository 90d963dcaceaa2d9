"""Each zoo defect's HTML report, rendered by headless Chromium: no label overlaps, none cut off.

Every defective service of the zoo (``message_flow_harness.zoo.DEFECTS``) runs once on the real
broker with a schedule that makes it fail (the crash-only defects get a crash
in a steady stream; a few timing-dependent ones get a few tries), the plugin's
``flow_check`` writes its report, and Chromium lays the page out. A script
added to a copy of the page measures every SVG ``<text>`` with
``getBoundingClientRect()`` and writes what collides or leaves its picture into
the DOM, which ``--dump-dom`` prints. The unit tests (tests/unit/test_timeline.py)
check the layout's own boxes; this checks them against a real font and browser.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from message_flow_harness import Flow, Message, RunResult, checks
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import Crash, Join, Pause, Publish, Restart, Step
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo import DEFECTS, NEEDS_CRASH, SERVICES
from message_flow_harness.zoo.rabbitmq_services import FLAKY
from message_flow_harness.zoo.totals import totals_add_up

pytestmark = pytest.mark.asyncio

# What every report of the zoo is checked with (the catching check is added where it is not).
COMMON = (
    checks.no_loss(),
    checks.no_duplicates(),
    checks.no_unexpected(),
    checks.per_key_order(),
    checks.per_partition_order(),
    checks.max_deliveries(3),
)


def is_poison(message: Message) -> bool:
    return message.value.startswith(POISON)


# 30 inputs over 3 keys with one poison message in the middle, as test_zoo_checks sends.
INPUTS = [Message(key=b"abc"[i % 3 : i % 3 + 1], value=str(1 + i % 9).encode()) for i in range(30)]
INPUTS.insert(15, Message(key=b"a", value=POISON))


@dataclass(frozen=True)
class Case:
    """How one defect is run so that it fails."""

    steps: Sequence[Step | Message] = tuple(INPUTS)
    extra_checks: tuple[checks.Check, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    tries: int = 1  # timing-dependent defects: runs until one fails


def crash_in_a_stream() -> list[Step]:
    """A steady stream with a crash in it: a service that settles before it outputs is always
    between the two while messages keep coming, so the crash loses what it settled."""
    steps: list[Step] = []
    for index, message in enumerate(INPUTS):
        steps += [Publish(message), Pause(0.003)]
        if index == 20:
            steps.append(Crash(0))
    return steps


def join_during_slow_work() -> list[Step]:
    """A second instance joins while the first is busy with a steady stream (200 ms a batch),
    so the rebalance gives away records it holds uncommitted. Distinct keys spread the
    records over both partitions, so either one the newcomer takes holds some."""
    steps: list[Step] = []
    for index in range(20):
        steps += [Publish(Message(key=f"k{index}".encode(), value=b"1")), Pause(0.03)]
        if index == 9:
            steps.append(Join())
    return steps


def crashes_mid_batch() -> list[Step]:
    """One input at a time, each followed by a crash a little later than the one before
    (and a restart): one lands between the part of a batch settled outside its transaction
    and the transaction's commit."""
    steps: list[Step] = []
    for index, pause in enumerate((0.01, 0.02, 0.03, 0.04, 0.05, 0.07)):
        message = Message(key=b"k", value=str(index).encode())
        steps += [Publish(message), Pause(pause), Crash(0), Restart(0)]
    return steps


RETRIED = [
    Message(key=b"k" if i % 2 else b"j", value=FLAKY if i % 3 == 0 else b"v") for i in range(10)
]


def case_of(service: str) -> Case:
    if service.endswith("_outside_transaction"):
        return Case(steps=crashes_mid_batch(), tries=2)
    if service in NEEDS_CRASH:
        return Case(steps=crash_in_a_stream(), tries=5)
    if service.endswith("_rebalance_duplicates"):
        return Case(steps=join_during_slow_work(), options={"partitions": 2, "quiet": 5.0}, tries=4)
    if service.endswith("_lost_update"):
        return Case(extra_checks=(totals_add_up(),), tries=3)
    if service.endswith("_slow"):
        return Case(extra_checks=(checks.within(0.1),))
    if service.endswith("_retry_reorders"):
        return Case(steps=RETRIED, tries=3)
    if service.endswith(("_concurrent", "_concurrent_batch")):
        return Case(tries=3)  # 30 inputs of 3 keys with 0-50 ms jitter: almost always
    return Case()


def flow_of(service: str, case: Case) -> Flow:
    options = {"quiet": 1.5, **case.options}
    return Flow(
        sut=SERVICES[service],
        broker="kafka" if service.startswith("kafka") else "rabbitmq",
        checks=(
            *COMMON,
            checks.dead_lettered(when=is_poison),
            checks.within(5),
            *case.extra_checks,
        ),
        name=service,
        **options,
    )


def defects() -> list[object]:
    return [
        pytest.param(name, marks=getattr(pytest.mark, name.partition("_")[0]), id=name)
        for name, caught in DEFECTS.items()
        if caught is not None
    ]


# --- measuring the page in Chromium --------------------------------------------------

_MEASURE = """
<script>
(function () {
  const found = {texts: 0, overlaps: [], clipped: []};
  const inside = (r, f) => r.left >= f.left - 0.5 && r.right <= f.right + 0.5
    && r.top >= f.top - 0.5 && r.bottom <= f.bottom + 0.5;
  for (const svg of document.querySelectorAll("svg")) {
    const frame = svg.getBoundingClientRect();
    const items = [...svg.querySelectorAll("text")]
      .map(t => ({text: t.textContent, box: t.getBoundingClientRect()}))
      .sort((a, b) => a.box.left - b.box.left);
    found.texts += items.length;
    items.forEach((a, i) => {
      if (!inside(a.box, frame)) found.clipped.push(a.text);
      for (const b of items.slice(i + 1)) {
        if (b.box.left >= a.box.right - 0.5) break;
        if (a.box.top < b.box.bottom - 0.5 && b.box.top < a.box.bottom - 0.5)
          found.overlaps.push([a.text, b.text]);
      }
    });
  }
  const out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
})();
</script>
"""


def measure(report: Path, scratch: Path) -> dict[str, Any]:
    """Chromium's measurements of ``report``'s texts (a copy with the measuring script)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: run .ci/install-system (Debian package chromium)"
    checked = scratch / f"measured-{report.name}"
    checked.write_text(report.read_text().replace("</body>", _MEASURE + "</body>"))
    done = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={scratch / 'chromium'}", "--window-size=1400,900", "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no measurements (exit {done.returncode}):\n{done.stderr}"
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return result


async def failing_run(flow_check: FlowCheck, service: str, case: Case) -> RunResult:
    flow = flow_of(service, case)
    caught = DEFECTS[service]
    assert caught is not None
    result = None
    for _ in range(case.tries):
        result = await flow_check.run(flow, case.steps)
        if any(v.check.startswith(caught) for v in result.failures()):
            return result
    assert result is not None
    raise AssertionError(
        f"{caught} did not catch {service} in {case.tries} runs:\n{result.report()}"
    )


@pytest.mark.parametrize("service", defects())
async def test_the_report_of_each_zoo_defect_renders_without_overlaps(
    flow_check: FlowCheck, service: str, tmp_path: Path
) -> None:
    result = await failing_run(flow_check, service, case_of(service))
    report = flow_check.write_report(result)
    page = report.read_text()
    assert f"<title>{service}: FAIL - " in page

    found = await asyncio.to_thread(measure, report, tmp_path)

    assert found["texts"] > 10, "the timeline was drawn"
    assert found["overlaps"] == [], f"labels overlap in {report}: {found['overlaps'][:20]}"
    assert found["clipped"] == [], f"labels cut off in {report}: {found['clipped'][:20]}"
    if any(isinstance(step, Crash) for step in case_of(service).steps):
        assert 'class="fault-window"' in page, "the crash's recovery window is shaded"
    anomalous = {hid for v in result.failures() for a in v.anomalies for hid in a.harness_ids}
    if anomalous:
        assert 'stroke="#c00000" stroke-width="2"' in page, "the named inputs are ringed"
