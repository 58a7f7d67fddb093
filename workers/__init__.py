"""Consumers: one module per consumer, all running on :mod:`workers.runtime`."""
