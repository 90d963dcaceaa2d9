"""The pytest plugin as users meet it, through pytester."""

from __future__ import annotations

import pytest


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
