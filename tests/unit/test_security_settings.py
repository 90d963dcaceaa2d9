"""Kafka SASL/TLS settings and amqps:// URLs: validation, pass-through and redaction
(no broker; the certificates come from the same throw-away CA the local brokers use)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, Endpoints, InvalidArgument, brokers
from message_flow_harness._redact import redact_options
from message_flow_harness.brokers._tls import Pki, make_pki
from message_flow_harness.brokers.kafka._settings import kafka_client_options, parse_kafka_settings
from message_flow_harness.brokers.rabbitmq import management_url


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "tls")


def test_no_settings_means_plaintext() -> None:
    assert kafka_client_options({}) == {}


def test_sasl_ssl_settings_become_aiokafka_arguments(pki: Pki) -> None:
    options = kafka_client_options(
        {
            "security_protocol": "sasl_ssl",
            "sasl_mechanism": "scram-sha-512",
            "sasl_username": "alice",
            "sasl_password": "pw",
            "ssl_cafile": str(pki.ca),
            "ssl_certfile": str(pki.client_cert),
            "ssl_keyfile": str(pki.client_key),
            "ssl_check_hostname": "false",
        }
    )
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
    }


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"sasl_username": "u"}, "HARNESS_KAFKA_SECURITY_PROTOCOL"),
        ({"security_protocol": "TLS"}, "SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "HARNESS_KAFKA_SASL_PASSWORD"),
        ({"security_protocol": "PLAINTEXT", "ssl_cafile": "/x"}, "SSL"),
        ({"security_protocol": "SSL", "sasl_username": "u"}, "SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "HARNESS_KAFKA_SSL_CAFILE"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI"},
            "SCRAM-SHA-256",
        ),
        ({"security_protocol": "SSL", "ssl_check_hostname": "maybe"}, "true or false"),
        ({"sasl_passwd": "x"}, "sasl_password"),
    ],
)
def test_settings_that_do_not_fit_name_the_fix(settings: dict[str, str], names: str) -> None:
    with pytest.raises(InvalidArgument, match=names):
        kafka_client_options(settings)


def test_a_ca_file_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InvalidArgument, match="ssl_cafile"):
        kafka_client_options({"security_protocol": "SSL", "ssl_cafile": str(junk)})


def test_option_values_parse_and_bad_ones_hide_secrets() -> None:
    assert parse_kafka_settings(["security_protocol=SSL", "ssl-cafile = /ca.pem"]) == {
        "security_protocol": "SSL",
        "ssl_cafile": "/ca.pem",
    }
    with pytest.raises(InvalidArgument, match="NAME=VALUE"):
        parse_kafka_settings(["security_protocol"])
    with pytest.raises(InvalidArgument) as caught:
        parse_kafka_settings(["sasl_passwrd_typo=hunter2"])
    assert "hunter2" not in str(caught.value)


def test_environment_settings_reach_broker_info_and_are_masked(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    monkeypatch.setenv("HARNESS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HARNESS_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("HARNESS_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("HARNESS_KAFKA_SSL_CAFILE", str(pki.ca))
    info = brokers.info_from_url("kafka", "10.0.0.5:9093", settings={"sasl_mechanism": "PLAIN"})
    assert info.client_options["sasl_plain_password"] == "hunter2"
    assert info.client_options["sasl_mechanism"] == "PLAIN"
    assert "hunter2" not in repr(info)
    assert "alice" in repr(info)
    endpoints = Endpoints(
        kind="kafka",
        input="i",
        output="o",
        dead_letter="d",
        bootstrap_servers=info.url,
        kafka_options=info.client_options,
    )
    assert "hunter2" not in repr(endpoints)
    assert endpoints.kafka_options["sasl_plain_username"] == "alice"


def test_kafka_options_are_for_a_broker_given_by_url() -> None:
    with (
        pytest.raises(InvalidArgument, match="--kafka-bootstrap"),
        brokers.provision("kafka", provider="local", settings={"security_protocol": "SSL"}),
    ):
        pass
    with pytest.raises(InvalidArgument, match="Kafka only"):
        brokers.info_from_url("rabbitmq", "amqp://h/", settings={"security_protocol": "SSL"})


def test_amqps_urls_pass_through_and_are_checked(pki: Pki) -> None:
    url = f"amqps://user:s3cret@rabbit.example:5671/vh?cafile={pki.ca}&certfile={pki.client_cert}"
    info = brokers.info_from_url("rabbitmq", url)
    assert info.url == url  # the service gets exactly this URL
    assert "s3cret" not in repr(info)
    assert management_url(info) == "https://rabbit.example:15671/"
    with pytest.raises(InvalidArgument, match="amqps://") as caught:
        brokers.info_from_url("rabbitmq", f"amqp://user:s3cret@h/?cafile={pki.ca}")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(InvalidArgument, match="does not exist"):
        brokers.info_from_url("rabbitmq", "amqps://h/?cafile=/no/such/ca.pem")


def test_redact_options_masks_every_secret_name() -> None:
    shown = redact_options(
        {
            "sasl_plain_password": "a",
            "ssl_password": "b",
            "token": "c",
            "user": "u",
            "url": "amqp://u:p@h/",
        }
    )
    assert shown == {
        "sasl_plain_password": "***",
        "ssl_password": "***",
        "token": "***",
        "user": "u",
        "url": "amqp://u:***@h/",
    }


def test_broker_info_repr_redacts_its_url() -> None:
    info = BrokerInfo(kind="rabbitmq", url="amqps://u:hunter2@h/", provider="url")
    assert "hunter2" not in repr(info)
