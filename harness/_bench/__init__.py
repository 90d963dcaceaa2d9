"""Consumer timing: how fast a flow's service turns inputs into outputs, and how steadily.

``await bench(flow)`` runs the service once per round on a real broker (fresh
destinations and consumer group, output and dead-letter taps, client probes:
the same :class:`~message_flow_harness._runner.LiveRun` as every run), publishes stamped
inputs, waits for their outputs, and measures from the run's history:

* **throughput**: inputs accounted for (output or dead letter) per second,
  from the first measured publish to the last output;
* **latency**: publish → output per input, as an HdrHistogram (µs resolution,
  three significant digits);
* **in-service time**: the consumer's delivery → its producer's send, per
  input, from the client probes (absent with ``Flow(probes=False)``);
* **lag**: inputs published minus inputs accounted for, over time;
* **CPU time** of the process (service, publisher and taps together) over
  the measured phase, in the JSON: steadier than throughput on a busy machine.

How inputs are published (the mode is part of the result):

* as fast as possible (default): up to
  :data:`~message_flow_harness._bench.publishers.PUBLISH_CONCURRENCY` publishes
  await the broker's confirm at once, through the adapter (one at a time,
  RabbitMQ's confirms cap a publisher near 2k msg/s on a small machine).
  Latency counts from the moment a publish is handed to the client;
* ``rate=R``: open loop, input *i* is due at ``i / R`` s and is published then
  whatever earlier publishes are doing; latency counts from the *due* time,
  so a publisher that falls behind cannot hide the delay (no coordinated
  omission);
* ``in_flight=K``: closed loop, at most K inputs published and not yet
  accounted for; ``in_flight=1`` is round-trip mode (publish one, wait for its
  output, repeat).

Concurrent publishes may reach the broker in a different order than they
were stamped, so a bench reports completeness (inputs without an output) but
not the flow's ordering checks: test those with ``flow_check`` or ``fuzz``.

The modules, each importing only those above it:

* ``stats``: HdrHistogram distributions and percentiles; the Mann-Whitney U test;
* ``publishers``: the inputs, and how they are published into a live run;
* ``result``: ``Round`` and ``BenchResult``, and their JSON (``FORMAT``);
  ``render`` draws a result as a text table or an SVG picture;
* ``analysis``: a round's figures from its history;
* ``compare``: which of two results is faster, beyond the noise;
* ``run``: ``bench()`` itself, round by round;
* ``fixture``: the ``flow_bench`` pytest fixture;
* ``command``: ``harness bench``.

This file imports none of them: import each name from its module.
"""
