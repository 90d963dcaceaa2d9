"""The pytest plugin as users meet it, through pytester.

Brokers that cannot be had (unreachable, Java missing) are tried for real:
nothing listens on a port just found free, and PATH is emptied.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import message_flow_harness


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kafka:*", "@pytest.mark.rabbitmq:*"])


def test_a_bad_provider_is_a_usage_error_listing_the_valid_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--broker-provider=cloud")
    result.stderr.fnmatch_lines(["*--broker-provider='cloud' is invalid: use one of auto, url*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_malformed_broker_url_errors_the_test_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_needs_kafka(kafka_broker):
            pass
        """
    )
    result = pytester.runpytest("--kafka-bootstrap=kafka://nowhere")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--kafka-bootstrap='kafka://nowhere' is invalid*"])


def test_options_are_documented_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--kafka-bootstrap=HOST:PORT*", "*--amqp-url=URL*"])


def _free_port() -> int:
    from message_flow_harness.brokers._local import free_port

    return free_port()


def _assert_one_clean_setup_error_per_test(result: pytest.RunResult, *messages: str) -> None:
    """Each test errors at setup with the message alone: no traceback through the harness."""
    result.assert_outcomes(errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ERROR at setup of test_one*", *messages])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_two*", *messages])
    output = result.stdout.str()
    harness_root = Path(message_flow_harness.__file__).parent
    assert str(harness_root) not in output
    assert str(harness_root.parent / "brokers") not in output  # an editable install's brokers/
    assert "Traceback" not in output
    assert "During handling of the above exception" not in output
    assert "direct cause" not in output
    assert "def _provide" not in output


_TWO_TESTS = """
def test_one({fixture}):
    pass

def test_two({fixture}):
    pass
"""


def test_an_unreachable_kafka_is_a_setup_error_naming_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_TWO_TESTS.format(fixture="kafka_broker"))
    where = f"127.0.0.1:{_free_port()}"
    result = pytester.runpytest(f"--kafka-bootstrap={where}")
    _assert_one_clean_setup_error_per_test(
        result,
        f"kafka_broker: no Kafka broker answers at {where}*check --kafka-bootstrap*",
        "(or give neither --kafka-bootstrap nor HARNESS_KAFKA_BOOTSTRAP, and the harness*",
    )


def test_an_unreachable_rabbitmq_is_a_setup_error_naming_the_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(_TWO_TESTS.format(fixture="rabbitmq_broker"))
    port = _free_port()
    monkeypatch.setenv("HARNESS_AMQP_URL", f"amqp://guest:s3cret@127.0.0.1:{port}/")
    result = pytester.runpytest()
    _assert_one_clean_setup_error_per_test(
        result,
        f"rabbitmq_broker: no RabbitMQ broker answers at amqp://guest:***@127.0.0.1:{port}/*",
        "*HARNESS_AMQP_URL*",
    )
    assert "s3cret" not in result.stdout.str()


def test_a_missing_java_is_a_setup_error_naming_the_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makepyfile(_TWO_TESTS.format(fixture="kafka_broker"))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("HARNESS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    result = pytester.runpytest()
    _assert_one_clean_setup_error_per_test(
        result, "kafka_broker: Java is not on PATH*apt-get install openjdk-17-jre-headless*"
    )
