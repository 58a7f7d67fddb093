"""The admin console (port 3003): documents, sagas, dead letters, outbox, charts, audit trail."""
