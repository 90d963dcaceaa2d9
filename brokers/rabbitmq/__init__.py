"""RabbitMQ: the driver, and the adapter, firehose tap, local node and container behind it.

Importing this package imports no aio-pika: the driver loads what it needs
when asked, and the public names below are loaded on first use.
"""

from brokers._lazy import lazy_exports
from brokers.rabbitmq._driver import RabbitDriver

driver = RabbitDriver()

#: Public name -> the module that defines it.
_EXPORTS = {
    "DEAD_LETTER_EXCHANGE": "brokers.rabbitmq._codec",
    "KEY_HEADER": "brokers.rabbitmq._codec",
    "RabbitAdapter": "brokers.rabbitmq._adapter",
    "RabbitRecipe": "brokers.rabbitmq._node",
    "Reconciled": "brokers.rabbitmq._firehose",
    "ctl_env": "brokers.rabbitmq._node",
    "management_url": "brokers.rabbitmq._urls",
    "open_adapters": "brokers.rabbitmq._connection",
    "rabbitmqctl": "brokers.rabbitmq._node",
    "secure_url": "brokers.rabbitmq._urls",
    "start_container": "brokers.rabbitmq._docker",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ("RabbitDriver", "driver", *_EXPORTS)
