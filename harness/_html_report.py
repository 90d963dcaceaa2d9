"""The HTML report of a failing run: one self-contained file a person opens in a browser.

Inline CSS and the inline SVG timeline (harness._timeline), no scripts and no
external assets: the verdict in the title and heading, each check's anomalies,
the timeline, the reproduction test, the log lines of the service and its
clients, and the event table. ``fuzz`` writes one
beside its JSON (harness._report.write_failure), a failing ``flow_check``
beside the run's history (harness.pytest_plugin).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from message_flow_harness._flow import RunResult
from message_flow_harness._history import Event, History
from message_flow_harness._timeline import layout, render_svg

#: Anomalies listed per check before "... and N more".
MAX_ANOMALIES = 25
#: Rows of the event table before "... and N more".
MAX_EVENTS = 3000

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h1 .fail { color: #c00000; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr.named td { background: #fde8e8; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
.timeline-box { overflow-x: auto; border: 1px solid #ddd; }
.check.ok { color: #2a7a2a; } .check.failed { color: #c00000; }
.more { color: #666; font-style: italic; }
tr.WARNING td { background: #fff6dd; } tr.ERROR td, tr.CRITICAL td { background: #fde8e8; }
td.log { white-space: pre-wrap; font-family: monospace; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def anomaly_counts(result: RunResult) -> Counter[str]:
    """How many anomalies of each kind the failing checks found."""
    return Counter(a.kind for v in result.failures() for a in v.anomalies)


def verdict_line(result: RunResult) -> str:
    """``orders: FAIL - 2 nonmonotonic, 1 lost`` (or ``PASS``)."""
    if result.ok:
        return f"{result.flow.label}: PASS"
    counts = ", ".join(f"{n} {kind}" for kind, n in anomaly_counts(result).most_common())
    return f"{result.flow.label}: FAIL - {counts}"


def _verdicts(result: RunResult) -> str:
    parts = []
    for verdict in result.verdicts:
        state = "ok" if verdict.ok else "failed"
        summary = f" <span class=more>({_e(verdict.summary)})</span>" if verdict.summary else ""
        parts.append(f'<h3 class="check {state}">{_e(verdict.check)}: {state}{summary}</h3>')
        if verdict.anomalies:
            shown = verdict.anomalies[:MAX_ANOMALIES]
            items = "".join(f"<li><b>{_e(a.kind)}</b>: {_e(a.text)}</li>" for a in shown)
            rest = len(verdict.anomalies) - len(shown)
            if rest:
                items += f'<li class="more">... and {rest} more</li>'
            parts.append(f"<ul>{items}</ul>")
        parts.extend(f"<p class=more>note: {_e(note)}</p>" for note in verdict.notes)
    return "\n".join(parts)


_COLUMNS = (
    "time",
    "kind",
    "source",
    "lane",
    "input",
    "destination",
    "partition",
    "offset",
    "detail",
)


def _row(event: Event, history: History, numbers: dict[str, int]) -> list[str]:
    number = numbers.get(event.harness_id or "")
    which = f"#{number} ({event.harness_id})" if number else event.harness_id or ""
    flags = []
    if event.redelivered:
        flags.append("redelivered")
    if event.requeue is not None:
        flags.append("requeue" if event.requeue else "no requeue")
    detail = "; ".join([*([event.detail] if event.detail else []), *flags])
    return [
        history.since_start(event.at_ns),
        str(event.kind),
        event.source,
        event.lane or "",
        which,
        event.destination or "",
        "" if event.partition is None else str(event.partition),
        "" if event.offset is None else str(event.offset),
        detail,
    ]


def _events(result: RunResult) -> str:
    history = result.history
    numbers = {hid: n for n, hid in enumerate(history.inputs(), 1)}
    named = {hid for v in result.failures() for a in v.anomalies for hid in a.harness_ids}
    events = list(history)
    rows = []
    for event in events[:MAX_EVENTS]:
        cells = "".join(f"<td>{_e(c)}</td>" for c in _row(event, history, numbers))
        marked = ' class="named"' if event.harness_id in named else ""
        rows.append(f"<tr{marked}>{cells}</tr>")
    rest = len(events) - MAX_EVENTS
    more = f'<p class="more">... and {rest} more events</p>' if rest > 0 else ""
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    return f"<table><tr>{head}</tr>\n" + "\n".join(rows) + f"\n</table>{more}"


def _logs(history: History) -> str:
    """What the service and its clients logged during the run (the history keeps the latest)."""
    if not history.logs:
        return "<p>The service and its clients logged nothing at INFO or above.</p>"
    rows = [
        f'<tr class="{_e(entry.level)}"><td>{_e(history.since_start(entry.at_ns))}</td>'
        f"<td>{_e(entry.level)}</td><td>{_e(entry.logger)}</td>"
        f'<td class="log">{_e(entry.message)}</td></tr>'
        for entry in history.logs
    ]
    dropped = history.logs_dropped
    older = f'<p class="more">{dropped} older lines were not kept</p>' if dropped else ""
    head = "<tr><th>time</th><th>level</th><th>logger</th><th>message</th></tr>"
    return f"{older}<table>{head}\n" + "\n".join(rows) + "\n</table>"


def render(
    result: RunResult,
    *,
    reproduction: str,
    facts: Sequence[tuple[str, str]] = (),
) -> str:
    """The report of ``result`` as one HTML document.

    ``reproduction`` is the test that replays the run (shown as code);
    ``facts`` are extra lines for the summary table (the campaign's seed...).
    """
    title = verdict_line(result)
    anomalies = [a for v in result.failures() for a in v.anomalies]
    svg = render_svg(layout(result.history, anomalies))
    table = [
        ("broker", result.endpoints.kind),
        ("messages", str(len(result.messages))),
        ("events", str(len(result.history))),
        ("run ended", result.ended_by),
        ("input", result.endpoints.input),
        *facts,
    ]
    if result.history_path is not None:
        table.append(("history (JSON)", str(result.history_path)))
    facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in table)
    verdict = _e(title).replace("FAIL", '<span class="fail">FAIL</span>', 1)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{verdict}</h1>
<table class="facts">{facts_html}</table>
<h2>Verdicts</h2>
{_verdicts(result)}
<h2>Timeline</h2>
<div class="timeline-box">
{svg}
</div>
<h2>Reproduction</h2>
<pre class="reproduction">{_e(reproduction)}</pre>
<h2>Logs</h2>
{_logs(result.history)}
<h2>History</h2>
{_events(result)}
</body>
</html>
"""


def write(
    result: RunResult,
    path: Path,
    *,
    reproduction: str,
    facts: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write :func:`render`'s document to ``path`` (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result, reproduction=reproduction, facts=facts), encoding="utf-8")
    return path
