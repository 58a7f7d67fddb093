"""The transactional outbox: the table, the writer used inside business transactions,
and the relay that moves committed rows to RabbitMQ."""

from outbox.writer import Emit, Emitter, add_event, add_events

__all__ = ["Emit", "Emitter", "add_event", "add_events"]
