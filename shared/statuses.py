"""The life-cycle states of auth's rows (users, deletion sagas and their steps).

Dependency-free, so that whatever only names a status (``amsctl saga list --help`` lists
them) need not load SQLAlchemy; :mod:`apps.auth.models` re-exports them beside the tables.
"""

from __future__ import annotations

from enum import StrEnum


class UserStatus(StrEnum):
    """An account's life cycle: ``deleting`` while its deletion saga runs."""

    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"


class SagaStatus(StrEnum):
    """``running`` and ``compensating`` are in flight; the other three are final."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def in_flight(self) -> bool:
        return self in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class StepStatus(StrEnum):
    """A saga step: ``pending`` until its reply, its deadline, or a local action."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
