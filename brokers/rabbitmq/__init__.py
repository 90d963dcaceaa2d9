"""RabbitMQ: the driver, and the adapter, firehose tap, local node and container behind it.

Importing this package imports no aio-pika: the driver (``_driver``) loads
what it needs when asked, and the public names below are loaded on first use.
Behind it, one job a module: ``_adapter`` (:class:`RabbitAdapter`: queues,
publishing, taps, broker restarts) over ``_connection`` (connecting, closing,
explaining failures, the open adapters), ``_management`` (the management HTTP
API), ``_firehose`` (the tap and its reconciling after a restart), ``_codec``
(headers, queue names, exchange names) and ``_urls`` (URLs and TLS); the
providers ``_node`` (a private local node, rabbitmqctl) and ``_docker``
(testcontainers); ``_probes`` (client-side probes in aio-pika).

Mapping of the harness model onto AMQP 0-9-1:

* a destination is a durable classic queue; messages are published through
  the default exchange with the queue name as routing key, persistent, with
  publisher confirms and ``mandatory`` (an unroutable message is an error);
* header values are sent as AMQP byte arrays; ``Message.key`` has no AMQP
  equivalent and travels in the :data:`KEY_HEADER` header, so it round-trips
  through the broker (and through services that copy headers);
* dead-lettering goes through the fanout exchange :data:`DEAD_LETTER_EXCHANGE`
  rather than the default exchange: RabbitMQ's firehose does not trace
  dead-lettered messages, so the firehose binds its own queue to that
  exchange, once, and sees every dead letter with its target queue's name as
  routing key. The fanout passes them on to a direct exchange that routes
  them by that name (every queue :meth:`RabbitAdapter.create` makes is bound
  to it with its own name): no binding per tapped queue;
* the tap is RabbitMQ's firehose tracer (``amq.rabbitmq.trace``): it observes
  publishes and deliveries without consuming anything. It must be on for the
  vhost (``rabbitmqctl trace_on -p VHOST``); nodes the harness starts have it
  on from boot;
* a broker restart (a ``BrokerRestart`` fault) drops the adapter's connection
  and the firehose's exclusive queue with the traces it still held:
  :meth:`RabbitAdapter.prepare_for_restart` and :meth:`RabbitAdapter.reconnect`
  carry the adapter and its live taps across it, and report what the taps
  missed from what sits in the queues nobody consumes.
"""

from message_flow_harness.brokers._lazy import lazy_exports
from message_flow_harness.brokers.rabbitmq._driver import RabbitDriver

driver = RabbitDriver()

#: Public name -> the module that defines it.
_EXPORTS = {
    "DEAD_LETTER_EXCHANGE": "message_flow_harness.brokers.rabbitmq._codec",
    "Installation": "message_flow_harness.brokers.rabbitmq._root",
    "KEY_HEADER": "message_flow_harness.brokers.rabbitmq._codec",
    "ROOT_ENV": "message_flow_harness.brokers.rabbitmq._root",
    "RabbitAdapter": "message_flow_harness.brokers.rabbitmq._adapter",
    "RabbitRecipe": "message_flow_harness.brokers.rabbitmq._node",
    "Reconciled": "message_flow_harness.brokers.rabbitmq._firehose",
    "ctl_env": "message_flow_harness.brokers.rabbitmq._node",
    "management_url": "message_flow_harness.brokers.rabbitmq._urls",
    "open_adapters": "message_flow_harness.brokers.rabbitmq._connection",
    "rabbitmqctl": "message_flow_harness.brokers.rabbitmq._node",
    "secure_url": "message_flow_harness.brokers.rabbitmq._urls",
    "start_container": "message_flow_harness.brokers.rabbitmq._docker",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ("RabbitDriver", "driver", *_EXPORTS)
