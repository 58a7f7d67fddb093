"""The worker runtime: the machinery every consumer runs on, apart from the consumers.

- :mod:`~workers.runtime.consumer`: a :class:`Consumer` (queue, database, handler table)
  and its run loop; :mod:`~workers.runtime.running`: the :class:`RunningConsumer` that
  connects, consumes and stops.
- :mod:`~workers.runtime.amqp`: deliveries taken below aio-pika, consuming again after a
  reopen.
- :mod:`~workers.runtime.ordering`, :mod:`~workers.runtime.batching`: one aggregate's
  messages in arrival order; several aggregates in one transaction under load.
- :mod:`~workers.runtime.processor`: one delivery or one batch start to finish (handler
  and inbox row in one transaction, then ack; or retry / dead-letter);
  :mod:`~workers.runtime.reading`: a delivery's context, payload and handler.
- :mod:`~workers.runtime.sessions`: the handler types (``Batched``: a handler with a batch
  form) and handler sessions, whose transaction only the runtime ends;
  :mod:`~workers.runtime.inbox`: the idempotency rows.
- :mod:`~workers.runtime.acks`: bulk acks; :mod:`~workers.runtime.failures`: how a failure
  maps to retry or dead letter, and the headers it leaves.
- :mod:`~workers.runtime.context`: what a handler knows of its message;
  :mod:`~workers.runtime.metrics`; :mod:`~workers.runtime.partitions`: one process per
  partition.
"""
