"""The product's common package: settings, logging, database helpers, errors and event schemas.

Nothing in here connects to anything at import time; entry points build
:class:`shared.config.Settings` once and pass it down.
"""
