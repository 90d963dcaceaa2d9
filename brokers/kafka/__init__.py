"""Kafka: the driver, and the adapter, local KRaft recipe and container behind it.

Importing this package imports no aiokafka: the driver loads what it needs
when asked, and the public names below are loaded on first use.
"""

from brokers._lazy import lazy_exports
from brokers.kafka._driver import KafkaDriver

driver = KafkaDriver()

#: Public name -> the module that defines it.
_EXPORTS = {
    "KAFKA_VERSION": "brokers.kafka._jars",
    "KafkaAdapter": "brokers.kafka._adapter",
    "KafkaRecipe": "brokers.kafka._recipe",
    "ensure_jars": "brokers.kafka._jars",
    "secure_info": "brokers.kafka._secure",
    "secure_settings": "brokers.kafka._secure",
    "start_container": "brokers.kafka._docker",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ("KafkaDriver", "driver", *_EXPORTS)
