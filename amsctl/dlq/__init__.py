"""``amsctl dlq``: the operator's dead-letter tooling (commands in :mod:`amsctl.dlq.cli`).

Nothing is imported here, so ``amsctl.dlq.audit`` and ``amsctl.dlq.model`` load without the
command module (``amsctl.audit`` uses them, and the command module uses ``amsctl.audit``).
"""
