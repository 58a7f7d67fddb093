"""``amsctl dlq``: the operator's dead-letter tooling (see :mod:`amsctl.dlq.cli`)."""

from amsctl.dlq.cli import app

__all__ = ["app"]
