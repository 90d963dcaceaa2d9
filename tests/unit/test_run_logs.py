"""The drivers' and the service's log records during a run: kept in its history, not printed."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from message_flow_harness._history import LOG_LIMIT, History
from message_flow_harness._logs import (
    attributed,
    capturing,
    show_logs,
)


@pytest.fixture
def service_log() -> Iterator[logging.Logger]:
    """A service's own logger, as it configures it at import: its own handler to a stream."""
    # A name of its own: another test module's service logs as orders.service.
    logger = logging.getLogger("billing.service")
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def _printed(logger: logging.Logger) -> str:
    [handler] = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def _kept(history: History) -> list[tuple[str, str, str]]:
    return [(entry.level, entry.logger, entry.message) for entry in history.logs]


def test_a_driver_record_is_kept_in_every_open_run_and_not_printed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = History(), History()
    with capturing(first), capturing(second):
        try:
            raise ConnectionRefusedError("broker gone")
        except ConnectionRefusedError:
            logging.getLogger("aiokafka.conn").exception("Unable to connect to %s", "node 1")
    expected = [
        (
            "ERROR",
            "aiokafka.conn",
            "Unable to connect to node 1 [ConnectionRefusedError: broker gone]",
        )
    ]
    assert _kept(first) == _kept(second) == expected
    assert caplog.records == []


def test_a_record_in_the_run_s_context_is_its_own_whatever_the_logger(
    caplog: pytest.LogCaptureFixture, service_log: logging.Logger
) -> None:
    ours, other = History(), History()
    with capturing(ours), capturing(other):
        with attributed(ours):
            service_log.warning("order %s rejected", 7)
        service_log.warning("logged by the test, outside any run")
    assert _kept(ours) == [("WARNING", "billing.service", "order 7 rejected")]
    assert _kept(other) == []
    # Only the test's own record reached the handlers: the service's own and pytest's.
    assert _printed(service_log) == "logged by the test, outside any run\n"
    assert [r.getMessage() for r in caplog.records] == ["logged by the test, outside any run"]


@pytest.mark.asyncio
async def test_tasks_started_in_the_run_s_context_log_into_it(
    caplog: pytest.LogCaptureFixture, service_log: logging.Logger
) -> None:
    history = History()

    async def consume() -> None:
        await asyncio.sleep(0)
        service_log.error("consume loop gave up")

    with capturing(history):
        with attributed(history):
            task = asyncio.create_task(consume())
        await task
    assert _kept(history) == [("ERROR", "billing.service", "consume loop gave up")]
    assert _printed(service_log) == ""
    assert caplog.records == []


def test_a_handler_configured_during_the_run_prints_none_of_its_records() -> None:
    history = History()
    logger = logging.getLogger("orders.late")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    try:
        with capturing(history), attributed(history):
            # As a framework does while the service starts: its handler, then a record at once.
            logger.addHandler(handler)
            logger.warning("configured late")
        assert stream.getvalue() == ""
        assert _kept(history) == [("WARNING", "orders.late", "configured late")]
        logger.warning("after the run")  # the handler is the service's own again
        assert stream.getvalue() == "after the run\n"
    finally:
        logger.removeHandler(handler)


def test_shown_logs_are_kept_as_well(service_log: logging.Logger) -> None:
    history = History()
    show_logs()
    try:
        with capturing(history), attributed(history):
            service_log.warning("order %s rejected", 7)
    finally:
        show_logs(False)
    assert _kept(history) == [("WARNING", "billing.service", "order 7 rejected")]
    assert _printed(service_log) == "order 7 rejected\n"


def test_with_nothing_configured_the_last_resort_prints_none_of_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    history = History()
    logger = logging.getLogger("orders.bare")
    logger.propagate = False  # no handler anywhere: Python's lastResort would print it
    try:
        with capturing(history), attributed(history):
            logger.warning("nothing configured")
        assert capsys.readouterr().err == ""
        assert _kept(history) == [("WARNING", "orders.bare", "nothing configured")]
        logger.warning("after the run")
        assert "after the run" in capsys.readouterr().err
    finally:
        logger.propagate = True


def test_shown_logs_are_printed_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    history = History()
    show_logs(True)
    try:
        with capturing(history):
            logging.getLogger("aio_pika.robust_connection").warning("reconnecting")
    finally:
        show_logs(False)
    assert _kept(history) == [("WARNING", "aio_pika.robust_connection", "reconnecting")]
    assert [r.getMessage() for r in caplog.records] == ["reconnecting"]


def test_drivers_log_from_info_only_while_a_run_is_open(caplog: pytest.LogCaptureFixture) -> None:
    driver = logging.getLogger("aiokafka.consumer.group_coordinator")
    history = History()
    with capturing(history):
        driver.info("Joined group")
        driver.debug("heartbeat")  # below INFO: not even made
    assert _kept(history) == [("INFO", "aiokafka.consumer.group_coordinator", "Joined group")]
    assert logging.getLogger("aiokafka").level == logging.NOTSET
    assert not driver.isEnabledFor(logging.INFO)  # the root's WARNING again
    assert caplog.records == []


def test_a_history_keeps_the_latest_records_and_counts_the_rest() -> None:
    history = History()
    driver = logging.getLogger("aiormq.connection")
    with capturing(history):
        for n in range(LOG_LIMIT + 5):
            driver.warning("attempt %d", n)
    assert len(history.logs) == LOG_LIMIT
    assert history.logs_dropped == 5
    assert history.logs[0].message == "attempt 5"
    assert history.logs[-1].message == f"attempt {LOG_LIMIT + 4}"


def test_the_logs_go_into_the_history_json_and_back() -> None:
    history = History()
    with capturing(history):
        logging.getLogger("aiokafka").error("x" * 3000)
    data = history.to_json()
    [entry] = data["logs"]
    assert set(entry) == {"at_ns", "level", "logger", "message"}
    assert entry["message"] == "x" * 2000 + "..."
    assert "logs_dropped" not in data  # none were
    again = History.from_json(data)
    assert list(again.logs) == list(history.logs)
    assert again.logs.maxlen == LOG_LIMIT
    history.logs_dropped = 3
    assert History.from_json(history.to_json()).logs_dropped == 3
    assert "logs" not in History().to_json()


def test_pytest_prints_no_driver_record_of_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging
        from message_flow_harness._history import History
        from message_flow_harness._logs import capturing

        def test_run():
            history = History()
            with capturing(history):
                logging.getLogger("aiokafka.conn").error("driver noise %d", 42)
            assert [e.logger for e in history.logs] == ["aiokafka.conn"]
            logging.getLogger("tests").error("the test's own record")
            raise AssertionError("fail, so pytest shows what it captured")
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured log call*", "ERROR *the test's own record"])
    assert "driver noise 42" not in result.stdout.str() + result.stderr.str()


def test_the_quiet_cli_prints_nothing_yet_a_run_keeps_the_services_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from message_flow_harness._cli import _CurrentStderr

    # What `harness fuzz` (below -vv) puts on the root logger; here on a logger of its own.
    logger = logging.getLogger("stock.cli_service")
    handler = _CurrentStderr(printing=False)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        history = History()
        with capturing(history), attributed(history):
            logger.error("bad stock update, skipped")
        logger.error("outside any run")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert _kept(history) == [("ERROR", "stock.cli_service", "bad stock update, skipped")]
    assert capsys.readouterr().err == ""
