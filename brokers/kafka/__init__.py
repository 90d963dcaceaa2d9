"""Kafka: the driver, and the adapter, local KRaft recipe and container behind it.

Importing this package imports no aiokafka: the driver loads what it needs
when asked, and the public names below are loaded on first use.

The modules, one job each: ``_driver`` (what the core asks), ``_settings`` (a
broker given by URL and its security settings), ``_adapter`` (topics, groups,
publishing) with ``_tap`` (its taps), ``_protocol`` (DeleteGroups), ``_errors``
(aiokafka errors as harness errors), ``_diagnose`` (TLS/SASL mismatches) and
``_clients`` (stopping aiokafka clients safely); ``_jars`` (Kafka from Maven
Central), ``_recipe`` (the local KRaft broker), ``_secure`` (its SASL_SSL
listener) and ``_ready`` (its readiness round trip); ``_docker`` (a container);
``_probes`` (the service's own clients).
"""

from message_flow_harness.brokers._lazy import lazy_exports
from message_flow_harness.brokers.kafka._driver import KafkaDriver

driver = KafkaDriver()

#: Public name -> the module that defines it.
_EXPORTS = {
    "KAFKA_VERSION": "message_flow_harness.brokers.kafka._jars",
    "KafkaAdapter": "message_flow_harness.brokers.kafka._adapter",
    "KafkaRecipe": "message_flow_harness.brokers.kafka._recipe",
    "ensure_jars": "message_flow_harness.brokers.kafka._jars",
    "secure_info": "message_flow_harness.brokers.kafka._secure",
    "secure_settings": "message_flow_harness.brokers.kafka._secure",
    "start_container": "message_flow_harness.brokers.kafka._docker",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ("KafkaDriver", "driver", *_EXPORTS)
